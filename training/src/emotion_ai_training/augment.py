"""Augmentation in NumPy/OpenCV (backend-agnostic, outside the exported graph).

One random affine transform (flip, rotation, zoom, shift about the frame centre) is applied to an
image and, for keypoints, to its points with the same matrix; a horizontal flip also swaps the
left/right point names (spec.FLIP_PERMUTATION). Coordinates follow the Kaggle convention: pixel
centres at integer coordinates, so a flip maps x to (W - 1) - x.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from emotion_ai.spec import FLIP_PERMUTATION


@dataclass(frozen=True)
class AugmentConfig:
    flip: bool = True
    max_rotation_deg: float = 10.0
    max_shift: float = 0.1  # fraction of the frame size
    max_zoom: float = 0.1  # scale in [1 - max_zoom, 1 + max_zoom]
    max_brightness: float = 0.2  # fraction of 255 added
    max_contrast: float = 0.2  # factor in [1 - c, 1 + c] around the image mean
    erase_probability: float = 0.0  # random erasing (emotion only)


EMOTION_AUGMENT = AugmentConfig(erase_probability=0.5)
KEYPOINTS_AUGMENT = AugmentConfig(max_rotation_deg=15.0, max_shift=0.08, max_zoom=0.1)


def affine_matrix(size: int, angle_deg: float = 0.0, scale: float = 1.0, shift: tuple[float, float] = (0, 0),
                  flip: bool = False) -> np.ndarray:
    """2×3 matrix: optional horizontal flip, then rotate/scale about the centre, then shift (pixels)."""
    c = (size - 1) / 2.0
    m = np.eye(3)
    if flip:
        m = np.array([[-1.0, 0, size - 1], [0, 1, 0], [0, 0, 1]]) @ m
    rot = np.vstack([cv2.getRotationMatrix2D((c, c), angle_deg, scale), [0, 0, 1]])
    m = rot @ m
    m[0, 2] += shift[0]
    m[1, 2] += shift[1]
    return m[:2]


def transform_points(points: np.ndarray, matrix: np.ndarray, flipped: bool) -> np.ndarray:
    """Apply a 2×3 matrix to [K, 2] points (NaN stays NaN); swap left/right names if the matrix flips."""
    out = points @ matrix[:, :2].T + matrix[:, 2]
    if flipped:
        out = out[list(FLIP_PERMUTATION)]
    return out.astype(np.float32)


def warp_image(image: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    h, w = image.shape[:2]
    return cv2.warpAffine(image, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def flip_horizontal(image: np.ndarray, points: np.ndarray | None = None):
    """Mirror an image (and its points, with left/right names swapped)."""
    m = affine_matrix(image.shape[1], flip=True)
    flipped = warp_image(image, m)
    return flipped if points is None else (flipped, transform_points(points, m, flipped=True))


class Augmenter:
    """Random augmentation of uint8 [B, H, W] batches, reproducible from a seed."""

    def __init__(self, config: AugmentConfig, seed: int | None = None):
        self.config = config
        self.rng = np.random.default_rng(seed)

    def _random_matrix(self, size: int) -> tuple[np.ndarray, bool]:
        c, r = self.config, self.rng
        flip = bool(c.flip and r.random() < 0.5)
        angle = r.uniform(-c.max_rotation_deg, c.max_rotation_deg)
        scale = r.uniform(1 - c.max_zoom, 1 + c.max_zoom)
        shift = r.uniform(-c.max_shift, c.max_shift, size=2) * size
        return affine_matrix(size, angle, scale, (shift[0], shift[1]), flip), flip

    def _photometric(self, image: np.ndarray) -> np.ndarray:
        c, r = self.config, self.rng
        x = image.astype(np.float32)
        contrast = r.uniform(1 - c.max_contrast, 1 + c.max_contrast)
        x = (x - x.mean()) * contrast + x.mean() + r.uniform(-c.max_brightness, c.max_brightness) * 255
        if c.erase_probability and r.random() < c.erase_probability:
            h, w = x.shape
            area = r.uniform(0.02, 0.2) * h * w
            aspect = np.exp(r.uniform(np.log(0.3), np.log(3.3)))
            eh, ew = min(h, int(np.sqrt(area * aspect))), min(w, int(np.sqrt(area / aspect)))
            y0, x0 = r.integers(0, h - eh + 1), r.integers(0, w - ew + 1)
            x[y0:y0 + eh, x0:x0 + ew] = r.uniform(0, 255, size=(eh, ew))
        return np.clip(x, 0, 255).astype(np.uint8)

    def __call__(self, images: np.ndarray, points: np.ndarray | None = None):
        out_img = np.empty_like(images)
        out_pts = None if points is None else np.empty_like(points)
        for i, image in enumerate(images):
            m, flip = self._random_matrix(image.shape[1])
            out_img[i] = self._photometric(warp_image(image, m))
            if points is not None and out_pts is not None:
                out_pts[i] = transform_points(points[i], m, flip)
        return out_img if points is None else (out_img, out_pts)


def draw_points(image: np.ndarray, points: np.ndarray | None = None, scale: int = 3) -> np.ndarray:
    """BGR upscaled copy of a gray image with keypoints drawn (subject's left green, right red)."""
    big = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
    big = cv2.cvtColor(big, cv2.COLOR_GRAY2BGR)
    for k, (x, y) in enumerate(() if points is None else points):
        if np.isnan(x) or np.isnan(y):
            continue
        colour = (0, 200, 0) if FLIP_PERMUTATION[k] > k else (0, 0, 255) if FLIP_PERMUTATION[k] < k else (255, 160, 0)
        cv2.circle(big, (round((x + 0.5) * scale - 0.5), round((y + 0.5) * scale - 0.5)), 2, colour, -1)
    return big


def image_grid(tiles: list[np.ndarray], columns: int) -> np.ndarray:
    """Tile equally sized BGR images into one grid (blank tiles fill the last row)."""
    rows = [tiles[i:i + columns] for i in range(0, len(tiles), columns)]
    rows[-1] = rows[-1] + [np.zeros_like(tiles[0])] * (columns - len(rows[-1]))
    return np.vstack([np.hstack(r) for r in rows])


def write_preview(path: Path, images: np.ndarray, points: np.ndarray | None, augmenter: Augmenter,
                  copies: int = 4) -> Path:
    """PNG grid: each row is one original followed by `copies` augmented versions, points drawn."""
    tiles = []
    for i in range(len(images)):
        img = images[i:i + 1]
        pts = None if points is None else points[i:i + 1]
        tiles.append(draw_points(img[0], None if pts is None else pts[0]))
        for _ in range(copies):
            if pts is None:
                tiles.append(draw_points(augmenter(img)[0]))
            else:
                a, p = augmenter(img, pts)
                tiles.append(draw_points(a[0], p[0]))
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), image_grid(tiles, copies + 1))
    return path
