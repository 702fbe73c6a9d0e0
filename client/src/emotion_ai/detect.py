"""Face detectors behind one small protocol.

`HaarFaceDetector` (default) uses OpenCV's frontal-face Haar cascade that ships inside the
`opencv-python(-headless)` 4.x wheels, so it works right after `pip install`. `YuNetFaceDetector`
wraps OpenCV's `FaceDetectorYN` when you supply the YuNet ONNX file (`face_detection_yunet_*.onnx`
from the OpenCV model zoo): it finds profile, small and tilted faces the cascade misses and gives
calibrated scores, at the cost of a model download. Any object with a matching `detect()` method
can be plugged into `EmotionClient(detector=...)`.
"""

from __future__ import annotations

import math
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import cv2
import numpy as np

from .preprocess import to_gray


@dataclass(frozen=True)
class Detection:
    """One detected face: box (x, y, w, h) in image pixels and a confidence score in [0, 1]."""

    box: tuple[float, float, float, float]
    score: float


@runtime_checkable
class FaceDetector(Protocol):
    """Anything that finds faces in a BGR uint8 image."""

    def detect(self, image: np.ndarray) -> list[Detection]:
        """Return the faces found in `image` (H x W x 3, BGR, uint8), in any order."""
        ...


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


class HaarFaceDetector:
    """OpenCV's `haarcascade_frontalface_default.xml` cascade.

    The detection score is the logistic function of the cascade's final-stage weight
    (`levelWeights` from `CascadeClassifier.detectMultiScale3(..., outputRejectLevels=True)`):
    a monotone confidence in (0, 1), comparable between Haar detections only. Large images
    are scanned at `max_side` pixels on their longer side (boxes are scaled back), which keeps
    detection time bounded without losing faces larger than ~`min_size`.

    `min_score` (default 0.85, i.e. final-stage weight >= 1.73) drops weak detections: on the Kaggle
    keypoint faces (padded, 192 px) 99.6 % of true faces score above it, while the cascade's false
    positives on skimage sample photos scored 0.55-0.81.
    """

    def __init__(
        self,
        cascade_path: str | os.PathLike | None = None,
        *,
        scale_factor: float = 1.1,
        min_neighbors: int = 5,
        min_size: int = 30,
        max_side: int = 960,
        min_score: float = 0.85,
    ):
        if cascade_path is None:
            cascade_path = Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml"
        self._cascade = cv2.CascadeClassifier(str(cascade_path))
        if self._cascade.empty():
            raise FileNotFoundError(f"could not load the Haar cascade from {cascade_path}")
        self.scale_factor = scale_factor
        self.min_neighbors = min_neighbors
        self.min_size = min_size
        self.max_side = max_side
        self.min_score = min_score
        self._lock = threading.Lock()  # CascadeClassifier instances are not thread-safe.

    def detect(self, image: np.ndarray) -> list[Detection]:
        gray = to_gray(image)
        h, w = gray.shape
        scale = min(1.0, self.max_side / max(h, w))
        if scale < 1.0:
            gray = cv2.resize(
                gray, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA
            )
        min_px = max(1, round(self.min_size * scale))
        with self._lock:
            rects, _levels, weights = self._cascade.detectMultiScale3(
                gray,
                scaleFactor=self.scale_factor,
                minNeighbors=self.min_neighbors,
                minSize=(min_px, min_px),
                outputRejectLevels=True,
            )
        out = []
        for (x, y, bw, bh), weight in zip(rects, np.ravel(weights), strict=False):
            score = _sigmoid(float(weight))
            if score >= self.min_score:
                box = (x / scale, y / scale, bw / scale, bh / scale)
                out.append(Detection(tuple(float(v) for v in box), score))
        return out


class YuNetFaceDetector:
    """OpenCV's YuNet CNN detector (`cv2.FaceDetectorYN`); needs the ONNX model file you supply.

    YuNet's boxes are tighter than the Haar cascade's; the crop geometry in `emotion_ai.spec`
    is calibrated for Haar boxes, so `box_scale` (default 1.15, about the ratio of the two box
    sizes on frontal faces) enlarges YuNet boxes around their centre before they are used.
    """

    def __init__(
        self,
        model_path: str | os.PathLike,
        *,
        score_threshold: float = 0.7,
        nms_threshold: float = 0.3,
        box_scale: float = 1.15,
    ):
        if not Path(model_path).is_file():
            raise FileNotFoundError(f"YuNet model file not found: {model_path}")
        self._model = cv2.FaceDetectorYN.create(
            str(model_path), "", (320, 320), score_threshold, nms_threshold
        )
        self.box_scale = box_scale
        self._lock = threading.Lock()

    def detect(self, image: np.ndarray) -> list[Detection]:
        h, w = image.shape[:2]
        with self._lock:
            self._model.setInputSize((w, h))
            _, faces = self._model.detect(image)
        out = []
        for row in faces if faces is not None else []:
            x, y, bw, bh = (float(v) for v in row[:4])
            cx, cy = x + bw / 2, y + bh / 2
            side_w, side_h = bw * self.box_scale, bh * self.box_scale
            box = (cx - side_w / 2, cy - side_h / 2, side_w, side_h)
            out.append(Detection(box, float(row[-1])))
        return out
