"""bench/blazeface_probe.py: tiles cover the image with the promised overlap, weighted NMS merges as
MediaPipe's does, and decoding maps a tile's anchor offsets back to image pixels (a stub net, no weights)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from .quality_support import bench_module

probe = bench_module("blazeface_probe")


@pytest.mark.parametrize("length", [100, 192, 193, 480, 640, 1000])
def test_tiles_cover_the_length_with_the_overlap(length):
    starts = probe.tile_origins(length, 192, 64)
    assert starts[0] == 0
    assert starts[-1] + 192 == max(length, 192)
    assert all(b - a <= 192 - 64 for a, b in itertools.pairwise(starts))


def test_weighted_nms_averages_a_group_by_score_and_keeps_others():
    boxes = np.array([[0, 0, 10, 10], [2, 0, 12, 10], [50, 50, 60, 60]], np.float64)
    scores = np.array([0.9, 0.3, 0.8])
    kept = probe.weighted_nms(boxes, scores, 0.3)
    assert [s for _, s in kept] == [0.9, 0.8]
    np.testing.assert_allclose(kept[0][0], [0.5, 0, 10.5, 10])  # (0.9 * 0 + 0.3 * 2) / 1.2 = 0.5
    np.testing.assert_allclose(kept[1][0], boxes[2])


class StubNet:
    """Scores one anchor of each tile as a face with a 20-px box at offset (+2, -1) px from the anchor."""

    def __init__(self, anchor: int):
        self.anchor = anchor

    def getUnconnectedOutLayersNames(self):  # noqa: N802 - cv2's name
        return ("scores", "boxes")

    def setInput(self, blob):  # noqa: N802
        self.n = len(blob)

    def forward(self, names):
        logits = np.full((1, self.n * probe.GRID ** 2, 1), -20.0, np.float32)
        regs = np.zeros((1, self.n * probe.GRID ** 2, 16), np.float32)
        for t in range(self.n):
            logits[0, t * probe.GRID ** 2 + self.anchor] = 5.0
            regs[0, t * probe.GRID ** 2 + self.anchor, :4] = (2, -1, 20, 20)
        return logits, regs


def test_decoding_maps_a_box_back_through_the_scale():
    anchor = 10 * probe.GRID + 5  # row 10, column 5: centre (5.5 * 4, 10.5 * 4) = (22, 42) px of the tile
    det = probe.BlazeFace(StubNet(anchor), ("fit",), 0.5)
    found = det.detect(np.zeros((96, 144, 3), np.uint8))  # fit: scale 192 / 144
    assert len(found) == 1
    x, y, w, h = found[0].box
    scale = 192 / 144
    np.testing.assert_allclose([x + w / 2, y + h / 2, w, h], [24 / scale, 41 / scale, 20 / scale, 20 / scale],
                               rtol=1e-6)
    assert found[0].score == pytest.approx(1 / (1 + np.exp(-5.0)))
