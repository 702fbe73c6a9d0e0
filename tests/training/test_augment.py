"""Augmentation geometry: the same transform moves image and points; flips swap left/right names."""

from __future__ import annotations

import numpy as np
import pytest
from emotion_ai.spec import FLIP_PAIRS, KEYPOINT_NAMES
from emotion_ai_training.augment import (
    AugmentConfig,
    Augmenter,
    affine_matrix,
    flip_horizontal,
    transform_points,
    warp_image,
    write_preview,
)

from .training_datagen import frontal_points, keypoint_frame

LEFT_EYE, RIGHT_EYE = KEYPOINT_NAMES.index("left_eye_center"), KEYPOINT_NAMES.index("right_eye_center")
GEOMETRY_ONLY = dict(max_brightness=0.0, max_contrast=0.0, erase_probability=0.0)


def dots_image(points: np.ndarray) -> np.ndarray:
    img = keypoint_frame(points)
    img[img < 255] = 0  # dots only, so "bright" means "on a dot"
    return img


def brightness_at(img: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Max pixel in the 3×3 neighbourhood of each point."""
    out = []
    for x, y in points:
        xi, yi = round(x), round(y)
        out.append(img[max(yi - 1, 0):yi + 2, max(xi - 1, 0):xi + 2].max())
    return np.array(out)


def test_flip_twice_is_identity() -> None:
    pts = frontal_points()
    img = keypoint_frame(pts)
    once_img, once_pts = flip_horizontal(img, pts)
    twice_img, twice_pts = flip_horizontal(once_img, once_pts)
    np.testing.assert_array_equal(twice_img, img)
    np.testing.assert_allclose(twice_pts, pts, atol=1e-4)
    assert not np.array_equal(once_img, img)


def test_flip_swaps_names_so_subject_left_stays_on_image_right() -> None:
    pts = frontal_points()
    assert pts[LEFT_EYE, 0] > pts[RIGHT_EYE, 0]
    _, flipped = flip_horizontal(keypoint_frame(pts), pts)
    assert flipped[LEFT_EYE, 0] > flipped[RIGHT_EYE, 0]
    # The left eye after the flip is the mirror image of the old right eye.
    assert flipped[LEFT_EYE, 0] == pytest.approx(95 - pts[RIGHT_EYE, 0])
    for left, right in FLIP_PAIRS:
        i, j = KEYPOINT_NAMES.index(left), KEYPOINT_NAMES.index(right)
        if "mouth" not in left:  # subject's-left points lie right of their twins in a frontal face
            assert flipped[i, 0] > flipped[j, 0], left


def test_flipped_points_stay_on_their_dots() -> None:
    pts = frontal_points()
    img, flipped = flip_horizontal(dots_image(pts), pts)
    assert (brightness_at(img, flipped) > 100).all()


@pytest.mark.parametrize("angle", [-20.0, 12.5, 30.0])
def test_rotated_points_stay_on_rotated_features(angle: float) -> None:
    pts = frontal_points()
    m = affine_matrix(96, angle_deg=angle, scale=1.1, shift=(3.0, -2.0))
    img = warp_image(dots_image(pts), m)
    moved = transform_points(pts, m, flipped=False)
    assert (brightness_at(img, moved) > 60).all()
    # And the dots really moved: the old positions are mostly dark now.
    assert (brightness_at(img, pts) < 60).sum() >= 10


def test_random_augmenter_keeps_points_on_features_and_is_seeded() -> None:
    pts = frontal_points()
    images = np.stack([dots_image(pts)] * 8)
    points = np.stack([pts] * 8)
    cfg = AugmentConfig(max_rotation_deg=15, max_shift=0.08, max_zoom=0.1, **GEOMETRY_ONLY)
    out_img, out_pts = Augmenter(cfg, seed=5)(images, points)
    for img, p in zip(out_img, out_pts, strict=True):
        assert (brightness_at(img, p) > 60).all()
        assert p[LEFT_EYE, 0] > p[RIGHT_EYE, 0]
    again_img, again_pts = Augmenter(cfg, seed=5)(images, points)
    np.testing.assert_array_equal(out_img, again_img)
    np.testing.assert_array_equal(out_pts, again_pts)


def test_missing_points_stay_missing() -> None:
    pts = frontal_points()
    pts[2:] = np.nan
    _, out = Augmenter(AugmentConfig(**GEOMETRY_ONLY), seed=1)(dots_image(pts)[None], pts[None])
    assert np.isnan(out[0, 2:]).all() and not np.isnan(out[0, :2]).any()


def test_random_erasing_changes_pixels_only_sometimes() -> None:
    img = np.full((4, 48, 48), 128, np.uint8)
    cfg = AugmentConfig(flip=False, max_rotation_deg=0, max_shift=0, max_zoom=0, max_brightness=0,
                        max_contrast=0, erase_probability=0.5)
    out = Augmenter(cfg, seed=0)(np.concatenate([img] * 5))
    erased = [(o != 128).any() for o in out]
    assert 0 < sum(erased) < len(erased)


def test_preview_png_is_written(tmp_path) -> None:
    import cv2

    pts = frontal_points()
    path = write_preview(tmp_path / "p.png", np.stack([keypoint_frame(pts)] * 2), np.stack([pts] * 2),
                         Augmenter(AugmentConfig(), seed=0), copies=3)
    grid = cv2.imread(str(path))
    assert grid.shape == (2 * 96 * 3, 4 * 96 * 3, 3)
