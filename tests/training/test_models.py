"""The two architectures: output contracts, the soft-argmax geometry, and the keypoints head options."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from emotion_ai.spec import KEYPOINTS_INPUT_SIZE
from emotion_ai_training.models import (
    HEATMAP_STRIDE,
    KEYPOINTS_RESNET,
    TINY_RESNET,
    SoftArgmax2D,
    build_emotion_model,
    build_keypoints_model,
)


def _peaks(cells: list[tuple[int, int]], size: int = 24) -> np.ndarray:
    logits = np.full((1, size, size, len(cells)), -1e4, np.float32)
    for k, (i, j) in enumerate(cells):
        logits[0, i, j, k] = 0.0
    return logits


def test_soft_argmax_maps_a_peak_to_the_centre_of_its_cell_in_input_pixels() -> None:
    out = np.asarray(SoftArgmax2D(4)(_peaks([(0, 0), (3, 5), (23, 23)])))
    # Cell (i, j) of a stride-4 map covers input pixels 4j..4j+3, centred at 4j + 1.5.
    np.testing.assert_allclose(out[0], [[1.5, 1.5], [21.5, 13.5], [93.5, 93.5]], atol=1e-4)


def test_soft_argmax_of_two_equal_peaks_is_their_midpoint_and_of_a_flat_map_the_frame_centre() -> None:
    logits = _peaks([(10, 2)])
    logits[0, 10, 12, 0] = 0.0
    np.testing.assert_allclose(np.asarray(SoftArgmax2D(4)(logits))[0, 0], [(9.5 + 49.5) / 2, 41.5], atol=1e-4)
    flat = np.zeros((2, 24, 24, 3), np.float32)
    np.testing.assert_allclose(np.asarray(SoftArgmax2D(4)(flat)), (KEYPOINTS_INPUT_SIZE - 1) / 2, atol=1e-4)


@pytest.mark.parametrize("head", ["heatmap", "dense"])
def test_keypoints_heads_output_points_in_the_frame(head: str) -> None:
    model = build_keypoints_model(dataclasses.replace(TINY_RESNET, head=head))
    images = np.random.default_rng(0).integers(0, 256, (3, 96, 96, 1)).astype(np.float32)
    points = np.asarray(model(images))
    assert points.shape == (3, 15, 2) and points.dtype == np.float32
    if head == "heatmap":  # a convex combination of cell centres never leaves the frame
        assert points.min() >= HEATMAP_STRIDE / 2 - 0.5 and points.max() <= 96 - HEATMAP_STRIDE / 2 - 0.5


def test_shipped_keypoints_model_uses_the_heatmap_head_at_stride_4() -> None:
    model = build_keypoints_model(KEYPOINTS_RESNET)
    assert KEYPOINTS_RESNET.head == "heatmap"
    assert model.get_layer("heatmaps").output.shape[1:] == (24, 24, 15)


def test_unknown_head_and_missing_resolution_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="unknown keypoints head"):
        build_keypoints_model(dataclasses.replace(TINY_RESNET, head="mlp"))
    # One stride-2 stage after a stride-2 stem stops at 48×48: no 24×24 features to fuse.
    with pytest.raises(ValueError, match="needs a stage at 24"):
        build_keypoints_model(dataclasses.replace(TINY_RESNET, stage_widths=(8,), stage_blocks=(1,)))


def test_emotion_model_outputs_probabilities() -> None:
    model = build_emotion_model(5, TINY_RESNET)
    scores = np.asarray(model(np.zeros((2, 48, 48, 1), np.float32)))
    assert scores.shape == (2, 5)
    np.testing.assert_allclose(scores.sum(axis=1), 1.0, atol=1e-5)


def test_the_hires_emotion_student_keeps_emotion_smalls_parameters_at_twice_the_resolution() -> None:
    from emotion_ai_training.models import EMOTION_HIRES_RESNET, EMOTION_SMALL_RESNET, count_flops

    small, hires = (build_emotion_model(7, cfg) for cfg in (EMOTION_SMALL_RESNET, EMOTION_HIRES_RESNET))
    assert hires.count_params() == small.count_params()
    assert hires.get_layer("stage4_block1_out").output.shape[1:3] == (6, 6)
    assert small.get_layer("stage4_block1_out").output.shape[1:3] == (3, 3)
    # Every conv works on 4x the positions; only the head's dense layer does not grow.
    dense = 2 * EMOTION_SMALL_RESNET.stage_widths[-1] * 7
    assert count_flops(hires) - dense == 4 * (count_flops(small) - dense)
