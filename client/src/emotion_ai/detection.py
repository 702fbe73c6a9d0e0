"""What a face detector gives: `Detection`, and the `FaceDetector` protocol every detector meets."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

#: The detectors' `enhance` searches a CLAHE-equalised copy of images with nothing found whose gray mean is
#: below DARK_MEAN or whose standard deviation is below FLAT_STD.
DARK_MEAN, FLAT_STD = 60.0, 25.0

Point = tuple[float, float]


@dataclass(frozen=True)
class Detection:
    """One detected face: box (x, y, w, h) in image pixels, a confidence score in [0, 1], and the
    detector's landmarks in image pixels when it has them (MTCNN: `mtcnn.LANDMARK_NAMES` order)."""

    box: tuple[float, float, float, float]
    score: float
    landmarks: tuple[Point, ...] | None = None


@runtime_checkable
class FaceDetector(Protocol):
    """Anything that finds faces in a BGR uint8 image."""

    def detect(self, image: np.ndarray) -> list[Detection]:
        """Return the faces found in `image` (H x W x 3, BGR, uint8), in any order."""
        ...
