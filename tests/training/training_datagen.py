"""Generators of tiny dataset files in every layout the loaders accept (shared by the training tests)."""

from __future__ import annotations

import gzip
from pathlib import Path

import cv2
import numpy as np
from emotion_ai.spec import KEYPOINT_COLUMNS

RNG_SEED = 7


def pixels_text(img: np.ndarray) -> str:
    return " ".join(str(int(v)) for v in img.ravel())


def fer_rows(n: int, seed: int = RNG_SEED) -> list[tuple[int, np.ndarray, str]]:
    rng = np.random.default_rng(seed)
    usages = ["Training", "PublicTest", "PrivateTest"]
    return [(int(rng.integers(0, 7)), rng.integers(0, 256, (48, 48), dtype=np.uint8), usages[i % 3])
            for i in range(n)]


def write_fer_csv(path: Path, rows, layout: str = "kaggle", extra_lines: tuple[str, ...] = ()) -> Path:
    if layout == "kaggle":
        lines = ["emotion,pixels,Usage"] + [f"{lab},{pixels_text(img)},{use}" for lab, img, use in rows]
    else:  # icml_face_data.csv: "emotion, Usage, pixels" with spaces after the commas
        lines = ["emotion, Usage, pixels"] + [f"{lab},{use},{pixels_text(img)}" for lab, img, use in rows]
    text = "\n".join([*lines, *extra_lines]) + "\n"
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path


def keypoint_frame(points: np.ndarray, size: int = 96, seed: int = RNG_SEED) -> np.ndarray:
    """A noisy gray frame with a bright dot at every keypoint."""
    rng = np.random.default_rng(seed)
    img = rng.integers(40, 80, (size, size)).astype(np.uint8)
    for x, y in points:
        if not np.isnan(x):
            cv2.circle(img, (round(x), round(y)), 1, 255, -1)
    return img


def frontal_points() -> np.ndarray:
    """Plausible Kaggle-framed 15 points of a frontal face (subject's left = image right)."""
    return np.array([
        [66, 38], [30, 38], [59, 38], [73, 38], [37, 38], [23, 38], [57, 27], [80, 29], [39, 27], [16, 29],
        [48, 58], [63, 76], [34, 76], [48, 72], [48, 84]], np.float32)


def write_keypoints_csv(path: Path, n: int, subjects: bool = True, missing_every: int = 3,
                        extra_lines: tuple[str, ...] = ()) -> Path:
    rng = np.random.default_rng(RNG_SEED)
    header = [*KEYPOINT_COLUMNS, "Image"] + (["subject", "source"] if subjects else [])
    lines = [",".join(header)]
    for i in range(n):
        pts = frontal_points() + rng.normal(0, 1.5, (15, 2)).astype(np.float32)
        coords = [f"{v:.3f}" for v in pts.ravel()]
        if missing_every and i % missing_every == 1:
            coords[4:] = [""] * (len(coords) - 4)  # only the eye centres, as in most Kaggle rows
        row = [*coords, pixels_text(keypoint_frame(pts, seed=i))]
        if subjects:
            row += [f"person{i // 4}", "youtube_faces"]
        lines.append(",".join(row))
    text = "\n".join([*lines, *extra_lines]) + "\n"
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path
