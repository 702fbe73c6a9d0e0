"""Keep face identities across video frames: greedy IoU matching with a centroid fallback.

Memory is bounded by the number of faces currently visible: a track that has not been matched
for `max_age` updates is dropped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

Box = tuple[float, float, float, float]


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two (x, y, w, h) boxes."""
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    iw = max(0.0, min(ax + aw, bx + bw) - max(ax, bx))
    ih = max(0.0, min(ay + ah, by + bh) - max(ay, by))
    inter = iw * ih
    union = aw * ah + bw * bh - inter
    return inter / union if union > 0 else 0.0


def _centre_distance(a: Box, b: Box) -> float:
    return math.hypot(a[0] + a[2] / 2 - b[0] - b[2] / 2, a[1] + a[3] / 2 - b[1] - b[3] / 2)


@dataclass
class _Track:
    track_id: int
    box: Box
    missed: int = 0


@dataclass
class IoUTracker:
    """Assigns a stable integer id to each face box across successive `update` calls.

    Attributes:
        min_iou: boxes overlapping a track at least this much continue it.
        max_centre_shift: otherwise, a box whose centre moved less than this fraction of the
            track's box width continues it (fast motion, sparse sampling with --every N).
        max_age: drop a track after this many updates without a match.
    """

    min_iou: float = 0.3
    max_centre_shift: float = 0.75
    max_age: int = 10
    _tracks: list[_Track] = field(default_factory=list)
    _next_id: int = 1

    def update(self, boxes: list[Box]) -> list[int]:
        """Return a track id for each box (in the same order), updating the tracks."""
        pairs = []
        for ti, track in enumerate(self._tracks):
            for bi, box in enumerate(boxes):
                overlap = iou(track.box, box)
                shift = _centre_distance(track.box, box) / max(track.box[2], 1e-6)
                if overlap >= self.min_iou or shift <= self.max_centre_shift:
                    pairs.append((overlap, -shift, ti, bi))
        pairs.sort(reverse=True)
        ids: list[int | None] = [None] * len(boxes)
        used_tracks: set[int] = set()
        for _, _, ti, bi in pairs:
            if ti in used_tracks or ids[bi] is not None:
                continue
            used_tracks.add(ti)
            track = self._tracks[ti]
            track.box, track.missed = boxes[bi], 0
            ids[bi] = track.track_id
        for ti, track in enumerate(self._tracks):
            if ti not in used_tracks:
                track.missed += 1
        self._tracks = [t for t in self._tracks if t.missed <= self.max_age]
        out = []
        for bi, box in enumerate(boxes):
            tid = ids[bi]
            if tid is None:
                tid = self._next_id
                self._next_id += 1
                self._tracks.append(_Track(tid, box))
            out.append(tid)
        return out

    def move(self, track_id: int, box: Box) -> None:
        """Set a track's box (e.g. followed between detections), so the next `update` matches from it."""
        for track in self._tracks:
            if track.track_id == track_id:
                track.box = box

    @property
    def ids(self) -> set[int]:
        """Ids of the tracks currently kept (seen recently, or waiting out a short occlusion)."""
        return {t.track_id for t in self._tracks}

    @property
    def active(self) -> int:
        """Number of tracks currently kept."""
        return len(self._tracks)
