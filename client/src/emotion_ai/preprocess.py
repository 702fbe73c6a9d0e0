"""Square face crops for the models and the exact way back to original-image pixels.

A detector box is turned into a square with `spec.CropGeometry.square` (geometry read from
`emotion_ai.spec`, shared with training), rounded to whole pixels, cut out of the grayscale image
(parts outside the image are filled by edge replication), and resized to the model's input size
with `cv2.INTER_AREA`, the interpolation training uses.

Coordinates follow OpenCV's pixel-centre convention (pixel (i, j) covers [i-0.5, i+0.5]), the
same convention `cv2.resize` uses, so a point at model pixel `p` maps back to
`left + (p + 0.5) * side / size - 0.5` in the original image.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .spec import CropGeometry


@dataclass(frozen=True)
class CropTransform:
    """Where a `size`-square model input came from: [left, left+side) x [top, top+side), turned by
    `angle` degrees (the face's roll, counter-clockwise in the image) about the square's centre, so a
    tilted face reaches the model level."""

    left: int
    top: int
    side: int
    size: int
    angle: float = 0.0

    @property
    def scale(self) -> float:
        """Original-image pixels per model pixel."""
        return self.side / self.size

    def _rotation(self) -> tuple[np.ndarray, np.ndarray]:
        """(R, c): a point q of the level square is at c + R (q - c) in the image."""
        c = np.array([self.left, self.top], dtype=np.float64) + (self.side - 1) / 2
        t = np.radians(self.angle)
        return np.array([[np.cos(t), np.sin(t)], [-np.sin(t), np.cos(t)]]), c

    def to_original(self, points: np.ndarray) -> np.ndarray:
        """Map (..., 2) model-pixel (x, y) coordinates to original-image pixels."""
        p = np.asarray(points, dtype=np.float64)
        origin = np.array([self.left, self.top], dtype=np.float64)
        level = origin + (p + 0.5) * self.scale - 0.5
        if not self.angle:
            return level
        r, c = self._rotation()
        return c + (level - c) @ r.T

    def to_crop(self, points: np.ndarray) -> np.ndarray:
        """Map (..., 2) original-image (x, y) to model pixels (inverse of to_original)."""
        p = np.asarray(points, dtype=np.float64)
        if self.angle:
            r, c = self._rotation()
            p = c + (p - c) @ r  # R is orthonormal: its inverse is its transpose
        origin = np.array([self.left, self.top], dtype=np.float64)
        return (p - origin + 0.5) / self.scale - 0.5


def square_for_box(
    box: tuple[float, float, float, float], geometry: CropGeometry, size: int, angle: float = 0.0
) -> CropTransform:
    """The whole-pixel square crop that `geometry` derives from a detector `box` (turned by `angle`)."""
    left, top, side = geometry.square(box)
    side_px = max(1, round(side))
    return CropTransform(left=round(left), top=round(top), side=side_px, size=size, angle=angle)


#: Faces rolled less than this are cropped upright (their crops then match training's exactly).
LEVEL_FROM_DEGREES = 8.0


def level_angle(landmarks: tuple[tuple[float, float], ...] | None) -> float:
    """The angle to turn a face's crop by so it reaches the models level: its roll, or 0 below
    `LEVEL_FROM_DEGREES` or without landmarks."""
    roll = roll_degrees(landmarks)
    return roll if abs(roll) >= LEVEL_FROM_DEGREES else 0.0


def roll_degrees(landmarks: tuple[tuple[float, float], ...] | None) -> float:
    """The roll of a face from a detector's landmarks (image-left eye first, as MTCNN gives them):
    the angle of the line through the eyes, counter-clockwise positive; 0 without landmarks."""
    if not landmarks or len(landmarks) < 2:
        return 0.0
    (lx, ly), (rx, ry) = landmarks[0], landmarks[1]
    if not all(np.isfinite((lx, ly, rx, ry))) or (lx, ly) == (rx, ry):
        return 0.0
    return float(-np.degrees(np.arctan2(ry - ly, rx - lx)))


def to_gray(image: np.ndarray) -> np.ndarray:
    """BGR (or already gray) uint8 image to single-channel uint8."""
    return image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)


def crop_square(gray: np.ndarray, transform: CropTransform) -> np.ndarray:
    """Cut `transform`'s square out of `gray` (edge-padded outside the image) and resize it.

    Returns a (size, size) uint8 array.
    """
    if transform.angle:
        return _crop_turned(gray, transform)
    h, w = gray.shape[:2]
    x0, y0 = transform.left, transform.top
    x1, y1 = x0 + transform.side, y0 + transform.side
    # The part inside the image; keep at least one pixel so edge replication has a source.
    cx0, cy0 = min(max(x0, 0), w - 1), min(max(y0, 0), h - 1)
    cx1, cy1 = max(min(x1, w), cx0 + 1), max(min(y1, h), cy0 + 1)
    inner = gray[cy0:cy1, cx0:cx1]
    pad_top, pad_left = cy0 - y0, cx0 - x0
    pad_bottom = transform.side - pad_top - inner.shape[0]
    pad_right = transform.side - pad_left - inner.shape[1]
    if pad_top or pad_left or pad_bottom or pad_right:
        # Clamp negatives (crop entirely beyond one edge) by shifting the surplus to the other side.
        inner = _pad_replicate(
            inner,
            top=pad_top,
            bottom=pad_bottom,
            left=pad_left,
            right=pad_right,
            side=transform.side,
        )
    if transform.side == transform.size:
        return np.ascontiguousarray(inner)
    return cv2.resize(inner, (transform.size, transform.size), interpolation=cv2.INTER_AREA)


def _crop_turned(gray: np.ndarray, transform: CropTransform) -> np.ndarray:
    """The level square of a turned transform: sampled at full resolution (bilinear, edges replicated),
    then resized with INTER_AREA like an upright crop."""
    r, c = transform._rotation()
    origin = np.array([transform.left, transform.top], dtype=np.float64)
    # image pixel = c + R (origin + (i, j) - c) for level-square pixel (i, j)
    m = np.hstack([r, (c + r @ (origin - c))[:, None]])
    level = cv2.warpAffine(gray, m, (transform.side, transform.side), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                           borderMode=cv2.BORDER_REPLICATE)
    if transform.side == transform.size:
        return level
    return cv2.resize(level, (transform.size, transform.size), interpolation=cv2.INTER_AREA)


def _pad_replicate(
    inner: np.ndarray, *, top: int, bottom: int, left: int, right: int, side: int
) -> np.ndarray:
    if top < 0 or bottom < 0 or left < 0 or right < 0:
        # Only when the square lies completely outside the image: fill with the nearest pixel.
        value = int(inner[min(max(top, 0), inner.shape[0] - 1), 0])
        return np.full((side, side), value, dtype=inner.dtype)
    return cv2.copyMakeBorder(inner, top, bottom, left, right, cv2.BORDER_REPLICATE)


def model_inputs(
    gray: np.ndarray,
    boxes: list[tuple[float, float, float, float]],
    geometry: CropGeometry,
    size: int,
    angles: list[float] | None = None,
) -> tuple[np.ndarray, list[CropTransform]]:
    """Crops for every box (each turned level by its angle, if given) as one uint8 batch of shape
    (n, size, size, 1), plus their transforms."""
    angles = angles or [0.0] * len(boxes)
    transforms = [square_for_box(b, geometry, size, a) for b, a in zip(boxes, angles, strict=True)]
    batch = np.empty((len(boxes), size, size, 1), dtype=np.uint8)
    for i, t in enumerate(transforms):
        batch[i, :, :, 0] = crop_square(gray, t)
    return batch, transforms
