"""Real test photos for the benchmarks and the quality tests, made from scikit-image's astronaut."""

from __future__ import annotations

import cv2
import numpy as np
from skimage import data


def astronaut_bgr() -> np.ndarray:
    """The 512×512 astronaut photo (one real frontal face), BGR."""
    return np.ascontiguousarray(data.astronaut()[:, :, ::-1])


def one_face_jpeg() -> bytes:
    """640×480 JPEG: the astronaut resized to 480×480 on a grey canvas."""
    face = cv2.resize(astronaut_bgr(), (480, 480), interpolation=cv2.INTER_AREA)
    canvas = np.full((480, 640, 3), 128, np.uint8)
    canvas[:, 80:560] = face
    ok, buf = cv2.imencode(".jpg", canvas, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return buf.tobytes()


def four_face_jpeg() -> bytes:
    """640x480: four 320x240 crops of the astronaut photo (zoom, mirror, exposure differ)."""
    a = astronaut_bgr()
    cx, cy = 224, 113  # centre of the face the Haar detector finds in the 512x512 photo

    def cell(half_w: int, flip: bool, gain: float = 1.0, bias: float = 0.0) -> np.ndarray:
        half_h = half_w * 3 // 4
        x0, y0 = max(cx - half_w, 0), max(cy - half_h, 0)
        crop = a[y0 : y0 + 2 * half_h, x0 : x0 + 2 * half_w]
        crop = cv2.convertScaleAbs(
            cv2.resize(crop, (320, 240), interpolation=cv2.INTER_AREA), alpha=gain, beta=bias
        )
        return crop[:, ::-1] if flip else crop

    cells = [
        cell(150, False),
        cell(170, True),
        cell(130, False, 0.85, 25),
        cell(160, True, 1.1, -10),
    ]
    canvas = np.vstack([np.hstack(cells[:2]), np.hstack(cells[2:])])
    ok, buf = cv2.imencode(".jpg", canvas, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return buf.tobytes()
