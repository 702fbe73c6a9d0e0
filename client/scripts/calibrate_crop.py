"""Measure where the training crops sit relative to the Haar detector's box (for spec.*_CROP).

    .venv/bin/python client/scripts/calibrate_crop.py [--n 1000]

Each training image (Kaggle keypoints 96 px, FER-2013 48 px) *is* a model crop. It is upscaled x2,
edge-padded by 64 px, and run through `HaarFaceDetector`; the known crop square in that canvas
gives, per detection, scale = crop_side / box_w and shift = (crop_centre - box_centre) / box_w|h.
The medians are the `CropGeometry(scale, shift_x, shift_y)` values that reproduce the training
framing from a Haar box. Prints them with spreads and the detection rate; reads data only.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import sys
from collections.abc import Iterator

import cv2
import numpy as np
from emotion_ai.detect import HaarFaceDetector

DATA = {
    "keypoints": ("/work/shared/data/facial_keypoints.csv.gz", "Image", 96),
    "emotion": ("/work/shared/data/fer2013.csv.gz", "pixels", 48),
}
UP, PAD = 2, 64


def images(path: str, column: str, size: int, n: int, stride: int) -> Iterator[np.ndarray]:
    csv.field_size_limit(1 << 30)
    with gzip.open(path, "rt") as f:
        reader = csv.reader(f)
        col = next(reader).index(column)
        count = 0
        for i, row in enumerate(reader):
            if i % stride or not row[col]:
                continue
            yield np.array(row[col].split(), dtype=np.uint8).reshape(size, size)
            count += 1
            if count >= n:
                return


def calibrate(kind: str, n: int, stride: int) -> dict[str, float]:
    path, column, size = DATA[kind]
    detector = HaarFaceDetector(min_score=0.0)
    side = size * UP
    crop_c = PAD + side / 2
    rows, total = [], 0
    for img in images(path, column, size, n, stride):
        total += 1
        canvas = cv2.copyMakeBorder(cv2.resize(img, (side, side), interpolation=cv2.INTER_CUBIC),
                                    PAD, PAD, PAD, PAD, cv2.BORDER_REPLICATE)  # fmt: skip
        dets = [d for d in detector.detect(canvas) if d.box[2] > side * 0.3]
        if not dets:
            continue
        x, y, w, h = max(dets, key=lambda d: d.box[2]).box
        rows.append((side / w, (crop_c - (x + w / 2)) / w, (crop_c - (y + h / 2)) / h))
    a = np.array(rows)
    med = np.median(a, axis=0)
    iqr = np.percentile(a, 75, axis=0) - np.percentile(a, 25, axis=0)
    return {
        "images": total,
        "detected": len(rows),
        "scale": round(float(med[0]), 3),
        "shift_x": round(float(med[1]), 3),
        "shift_y": round(float(med[2]), 3),
        "iqr_scale": round(float(iqr[0]), 3),
        "iqr_shift_y": round(float(iqr[2]), 3),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=600, help="images per dataset")
    p.add_argument("--stride", type=int, default=7, help="take every Nth row")
    args = p.parse_args()
    for kind in DATA:
        r = calibrate(kind, args.n, args.stride)
        sys.stdout.write(
            f"{kind}: CropGeometry(scale={r['scale']}, shift_x={r['shift_x']}, "
            f"shift_y={r['shift_y']})"
            f"  # {r['detected']}/{r['images']} detected, IQR scale {r['iqr_scale']}, "
            f"shift_y {r['iqr_shift_y']}\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
