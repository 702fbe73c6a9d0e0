"""Generators of tiny dataset files in every layout the loaders accept (shared by the training tests)."""

from __future__ import annotations

import gzip
from pathlib import Path

import cv2
import numpy as np
from emotion_ai.spec import EMOTION_INPUT_SIZE, EMOTION_LABELS, KEYPOINT_COLUMNS, KEYPOINT_NAMES, KEYPOINTS_INPUT_SIZE

RNG_SEED = 7


def _write_lines(path: Path, lines: list[str]) -> Path:
    """Write CSV lines, gzip-compressed when the name ends in .gz."""
    text = "\n".join(lines) + "\n"
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path


def pixels_text(img: np.ndarray) -> str:
    return " ".join(str(int(v)) for v in img.ravel())


def fer_rows(n: int, seed: int = RNG_SEED) -> list[tuple[int, np.ndarray, str]]:
    rng = np.random.default_rng(seed)
    usages = ["Training", "PublicTest", "PrivateTest"]
    size = (EMOTION_INPUT_SIZE, EMOTION_INPUT_SIZE)
    return [(int(rng.integers(0, len(EMOTION_LABELS))), rng.integers(0, 256, size, dtype=np.uint8), usages[i % 3])
            for i in range(n)]


def write_fer_csv(path: Path, rows, layout: str = "kaggle", extra_lines: tuple[str, ...] = ()) -> Path:
    if layout == "kaggle":
        lines = ["emotion,pixels,Usage"] + [f"{lab},{pixels_text(img)},{use}" for lab, img, use in rows]
    else:  # icml_face_data.csv: "emotion, Usage, pixels" with spaces after the commas
        lines = ["emotion, Usage, pixels"] + [f"{lab},{use},{pixels_text(img)}" for lab, img, use in rows]
    return _write_lines(path, [*lines, *extra_lines])


def keypoint_frame(points: np.ndarray, size: int = KEYPOINTS_INPUT_SIZE, seed: int = RNG_SEED) -> np.ndarray:
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
        pts = frontal_points() + rng.normal(0, 1.5, (len(KEYPOINT_NAMES), 2)).astype(np.float32)
        coords = [f"{v:.3f}" for v in pts.ravel()]
        if missing_every and i % missing_every == 1:
            coords[4:] = [""] * (len(coords) - 4)  # only the eye centres, as in most Kaggle rows
        row = [*coords, pixels_text(keypoint_frame(pts, seed=i))]
        if subjects:
            row += [f"person{i // 4}", "youtube_faces"]
        lines.append(",".join(row))
    return _write_lines(path, [*lines, *extra_lines])


FERPLUS_HEADER = "Usage,Image name,neutral,happiness,surprise,sadness,anger,disgust,fear,contempt,unknown,NF"


def write_ferplus_csv(path: Path, usages: list[str], votes: np.ndarray, extra_lines: tuple[str, ...] = ()) -> Path:
    """A FER+ vote file (fer2013new.csv layout): one row per usage with its 10 vote counts."""
    lines = [FERPLUS_HEADER] + [f"{use},fer{i:07d}.png," + ",".join(str(int(v)) for v in row)
                                for i, (use, row) in enumerate(zip(usages, votes, strict=True))]
    return _write_lines(path, [*lines, *extra_lines])


def ferplus_votes(n: int, seed: int = RNG_SEED) -> np.ndarray:
    """[n, 10] plausible vote counts: ten annotators per image, mostly on one of the 7 expressions."""
    rng = np.random.default_rng(seed)
    votes = np.zeros((n, 10), np.int64)
    for row in votes:
        for choice in rng.choice(10, size=10, p=[0.2, 0.2, 0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.1, 0.05]):
            row[choice] += 1
    return votes
