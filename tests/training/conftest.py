"""Fixtures: tiny generated dataset files."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from .training_datagen import RNG_SEED, fer_rows, write_fer_csv, write_keypoints_csv


@pytest.fixture
def fer_csv(tmp_path: Path) -> Path:
    return write_fer_csv(tmp_path / "fer2013.csv", fer_rows(30))


@pytest.fixture
def keypoints_csv(tmp_path: Path) -> Path:
    return write_keypoints_csv(tmp_path / "training.csv", 40)


@pytest.fixture
def fer_folder(tmp_path: Path) -> Path:
    """A 4-class image-folder dataset with train/, validation/ and test/ splits."""
    rng = np.random.default_rng(RNG_SEED)
    root = tmp_path / "fer_images"
    for split, n in (("train", 3), ("validation", 2), ("test", 1)):
        for cls in ("happy", "sad", "surprise", "neutral"):
            d = root / split / cls
            d.mkdir(parents=True)
            for k in range(n):
                cv2.imwrite(str(d / f"{k}.jpg"), rng.integers(0, 256, (48, 48), dtype=np.uint8))
    return root

