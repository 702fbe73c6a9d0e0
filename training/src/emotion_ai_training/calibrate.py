"""Calibrate the client's crop geometry (`spec.CROPS[detector]`) against a face detector.

Each training frame *is* the crop the model expects. Running the client's default detector on the
frames (padded so the detector sees context, upscaled so it sees detail) gives the detector box in
frame coordinates; the median of frame-size / box-width and of the frame-centre offset from the box
centre is the geometry that makes a detected face look like the training data.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np
from emotion_ai.detect import FaceDetector, make_detector
from emotion_ai.spec import CropGeometry

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Calibration:
    geometry: CropGeometry
    detected: int
    tried: int
    scale_iqr: tuple[float, float]


def calibrate(frames: np.ndarray, upscale: float = 3.0, pad: float = 0.5,
              detector: FaceDetector | None = None) -> Calibration:
    """Median crop geometry over the frames in which the detector (default: the client's) finds one face."""
    detector = detector or make_detector()
    size = frames.shape[1]
    border = round(size * pad)
    scales, shifts_x, shifts_y = [], [], []
    for frame in frames:
        padded = cv2.copyMakeBorder(frame, border, border, border, border, cv2.BORDER_REPLICATE)
        big = cv2.resize(padded, None, fx=upscale, fy=upscale, interpolation=cv2.INTER_LINEAR)
        found = detector.detect(cv2.cvtColor(big, cv2.COLOR_GRAY2BGR))
        if len(found) != 1:
            continue
        x, y, w, h = (v / upscale for v in found[0].box)
        x, y = x - border, y - border
        scales.append(size / w)
        shifts_x.append((size / 2 - (x + w / 2)) / w)
        shifts_y.append((size / 2 - (y + h / 2)) / h)
    if not scales:
        raise ValueError("the detector found no face in any frame; cannot calibrate")
    geometry = CropGeometry(scale=round(float(np.median(scales)), 3), shift_x=round(float(np.median(shifts_x)), 3),
                            shift_y=round(float(np.median(shifts_y)), 3))
    q1, q3 = np.percentile(scales, [25, 75])
    return Calibration(geometry, len(scales), len(frames), (round(float(q1), 3), round(float(q3), 3)))
