"""Video: stable track ids, per-track smoothed scores, and landmark tracking between detections.

Every visible face is cropped where its previous keypoints say it now is, moved on by their last
frame's motion (the box is placed relative to the keypoints as it was at the last detection), as
MediaPipe's face tracking does; a face whose new keypoints land farther than `max_drift` from where
they were expected, or changed scale by more than that, is looked for again by the whole detector at
once. Every `detect_every` frames (a key frame) the detector runs as well, while the followed faces'
requests are out: its faces re-anchor the followed faces they overlap and start tracks for new ones.
A detector with a cheaper upright-only search (`detect_upright`: MTCNN without its turned looks; YuNet's one
search is already upright and cheap) runs that on key frames, and its whole search on every `WHOLE_EVERY`-th;
a followed face that a whole round of key frames (one for other detectors) has not found is dropped. Memory
is constant: only the current tracks are kept, and frames are read ahead in a bounded queue (`prefetch`).
"""

from __future__ import annotations

import math
import queue
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import numpy as np

from .detection import Detection
from .images import ColorOrder, ImageInput
from .pipeline import FacePipeline
from .result import Box, Face, Prediction
from .tracking import IoUTracker, iou

#: Key frames per round with a detector that has `detect_upright`: that upright search on the first ones,
#: the whole search (tilted faces too) on the last.
WHOLE_EVERY = 3


@dataclass(frozen=True)
class StreamOptions:
    """How `EmotionClient.stream` follows faces.

    Attributes:
        detect_every: every Nth frame is a key frame (1 = every frame), on which one pass of the
            detector's search runs (a detector with `detect_upright` runs that on two key frames of three and
            its whole search on the third); faces are followed from
            their keypoints on every frame, and new faces appear at the key frame whose pass finds them.
        smoothing: time constant in seconds of the per-track exponential moving average of the
            scores (0 = none): after `smoothing` seconds a change of expression is 63 % through.
        max_missed: frames a face may go unseen (occlusion, missed detection) and keep its track id.
        max_drift: re-detect when a followed face's keypoint centre landed farther than this fraction
            of its box from where its last frame's motion put it, or their spread changed by more than
            this fraction since the previous frame.
        prefetch: frames read ahead in a background thread (decoding overlaps the requests).
    """

    detect_every: int = 10
    smoothing: float = 0.3
    max_missed: int = 10
    max_drift: float = 0.25
    prefetch: int = 4

    def __post_init__(self) -> None:
        if self.detect_every < 1 or self.max_missed < 0 or self.prefetch < 1:
            raise ValueError("detect_every and prefetch must be >= 1 and max_missed >= 0")
        if self.smoothing < 0 or not 0 < self.max_drift < 1:
            raise ValueError("smoothing must be >= 0 and max_drift in (0, 1)")


@dataclass
class _Track:
    """What is known of one visible face between frames."""

    box: Box
    score: float
    centre: np.ndarray
    spread: float
    offset: tuple[float, float, float]  # (box centre - keypoint centre) / spread, box side / spread
    smoothed: dict[str, float]
    time: float
    eyes: tuple[tuple[float, float], ...] | None = None  # image-left eye first, as detector landmarks
    unfound: int = 0  # key frames in a row whose detection did not find this face
    velocity: tuple[float, float] = (0.0, 0.0)  # keypoint centre's move over the last frame, in pixels


def keypoint_frame(face: Face) -> tuple[np.ndarray, float] | None:
    """Centre and RMS spread of a face's finite keypoints (None when there are too few)."""
    pts = np.array([p for p in face.keypoints.values() if math.isfinite(p[0]) and math.isfinite(p[1])])
    if len(pts) < 3:
        return None
    centre = pts.mean(axis=0)
    spread = float(np.sqrt(((pts - centre) ** 2).sum(axis=1).mean()))
    return (centre, spread) if spread > 0 else None


def _track_id(face: Face) -> int:
    """The track id of a face the stream follows (every such face has one)."""
    assert face.track_id is not None
    return face.track_id


def eye_landmarks(face: Face) -> tuple[tuple[float, float], ...] | None:
    """The face's eye centres in detector-landmark order (image-left eye first: the subject's right)."""
    right, left = face.keypoints.get("right_eye_center"), face.keypoints.get("left_eye_center")
    if right is None or left is None or not all(math.isfinite(v) for v in (*right, *left)):
        return None
    return right, left


def smooth(previous: dict[str, float] | None, scores: dict[str, float], dt: float, tau: float) -> dict[str, float]:
    """Exponential moving average of `scores` with time constant `tau` after `dt` seconds."""
    if not previous or tau <= 0 or previous.keys() != scores.keys():
        return dict(scores)
    a = 1.0 - math.exp(-max(dt, 0.0) / tau)
    return {k: previous[k] + a * (v - previous[k]) for k, v in scores.items()}


class RunsPipeline(Protocol):
    """What runs a `FacePipeline` over a sync transport (an `EmotionClient`)."""

    @property
    def pipeline(self) -> FacePipeline: ...


class FaceStream:
    """Per-frame predictions of one video, in order (see `EmotionClient.stream`).

    Args:
        pipeline: the staging and model requests to run on each frame, or a client that has them
            (`EmotionClient`).
        options: how faces are followed (`StreamOptions()` when None).
        fps: the frames' rate, for their timestamps (None: arrival time).

    Raises:
        ValueError: `fps` is not a positive number.
    """

    def __init__(self, pipeline: FacePipeline | RunsPipeline, options: StreamOptions | None = None,
                 fps: float | None = None):
        if fps is not None and not (math.isfinite(fps) and fps > 0):
            raise ValueError(f"fps must be a positive number, not {fps!r}")
        self.pipeline = pipeline if isinstance(pipeline, FacePipeline) else pipeline.pipeline
        self.options = options or StreamOptions()
        self.fps = fps
        o = self.options
        self._tracker = IoUTracker(max_age=max(1, math.ceil(o.max_missed / o.detect_every)))
        self._tracks: dict[int, _Track] = {}
        self._next_detection = 0
        detector = self.pipeline.stager.detector
        upright = getattr(detector, "detect_upright", None)
        self._round = [upright] * (WHOLE_EVERY - 1) + [detector.detect] if upright else [detector.detect]
        self._key_frames = 0  # key frames with faces to follow so far (the position in the round)
        self._searcher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="emotion-ai-detect")
        self._t0: float | None = None

    def run(self, frames: Iterable[ImageInput], color: ColorOrder = "bgr") -> Iterator[Prediction]:
        """A `Prediction` for each frame of `frames`, with track ids and smoothed scores."""
        try:
            for index, frame in enumerate(prefetch(frames, self.options.prefetch)):
                yield self.process(frame, index, color=color)
        finally:
            self.close()

    def close(self) -> None:
        """Stop the detector-pass thread (`run` does this when it ends)."""
        self._searcher.shutdown(wait=True)

    def process(self, frame: ImageInput, index: int, color: ColorOrder = "bgr") -> Prediction:
        """The prediction for frame number `index` (frames must come in order)."""
        t_start = time.perf_counter()
        bgr = self.pipeline.stager.load(frame, color)
        now = self._timestamp(index)
        timings = {"decode": (time.perf_counter() - t_start) * 1e3, "detect": 0.0}
        detected = index >= self._next_detection
        search = self._search(bgr, timings) if detected and self._tracks else None  # overlaps _follow
        followed = self._follow(bgr, t_start, timings) if self._tracks else []
        anchored: set[int] = set()  # track ids whose box the detector gave on this frame
        if followed is None or (detected and not followed):  # lost, or nothing to follow: full search
            if search is not None:
                search.result()  # superseded by the full search
            detected, faces = True, self._detect(bgr, t_start, timings)
            anchored = {_track_id(f) for f in faces}
        elif search is not None:
            faces, anchored = self._refresh(bgr, followed, search.result(), t_start, timings)
        else:
            faces = followed
        if detected:
            self._next_detection = index + self.options.detect_every
        faces = [self._update(face, now, face.track_id in anchored) for face in faces]
        timings["total"] = (time.perf_counter() - t_start) * 1e3
        h, w = bgr.shape[:2]
        models = {task: ref.name for task, ref in self.pipeline.runner.models.items()} if faces else {}
        return Prediction(faces=faces, image_size=(w, h), timings_ms=timings, image=bgr,
                          frame=index, timestamp=now, detected=detected, models=models)

    def _timestamp(self, index: int) -> float:
        if self.fps is not None:
            return index / self.fps
        if self._t0 is None:
            self._t0 = time.monotonic()
        return time.monotonic() - self._t0

    def _infer(self, bgr: np.ndarray, detections: list[Detection], t_start: float,
               timings: dict[str, float]) -> list[Face]:
        staged = self.pipeline.stager.stage_faces(bgr, detections, source=None, t_start=t_start, timings=timings)
        self.pipeline.runner.infer([staged])
        return staged.faces

    def _detect(self, bgr: np.ndarray, t_start: float, timings: dict[str, float]) -> list[Face]:
        t = time.perf_counter()
        detections = self.pipeline.stager.detect(bgr)
        timings["detect"] += (time.perf_counter() - t) * 1e3
        faces = self._infer(bgr, detections, t_start, timings)
        ids = self._tracker.update([f.box for f in faces])
        for tid in set(self._tracks) - set(ids):
            del self._tracks[tid]  # not seen now: kept by the tracker only, to re-identify it
        return [replace(f, track_id=tid) for f, tid in zip(faces, ids, strict=True)]

    def _follow(self, bgr: np.ndarray, t_start: float, timings: dict[str, float]) -> list[Face] | None:
        """Faces re-cropped where their tracks say they are now (moved on by their last frame's motion),
        or None when one of them looks lost."""
        ids = list(self._tracks)
        detections = []
        for i in ids:
            (x, y, w, h), (vx, vy) = self._tracks[i].box, self._tracks[i].velocity
            detections.append(Detection((x + vx, y + vy, w, h), self._tracks[i].score, self._tracks[i].eyes))
        faces = self._infer(bgr, detections, t_start, timings)
        limit = self.options.max_drift
        for tid, face in zip(ids, faces, strict=True):
            track, now = self._tracks[tid], keypoint_frame(face)
            if now is None:
                return None
            shift = float(np.linalg.norm(now[0] - track.centre - track.velocity)) / max(track.box[2], 1e-6)
            if shift > limit or abs(now[1] / track.spread - 1.0) > limit:
                return None
        return [replace(f, track_id=tid) for f, tid in zip(faces, ids, strict=True)]

    def _search(self, bgr: np.ndarray, timings: dict[str, float]) -> Future[list[Detection]]:
        """Start this key frame's search of the round on `bgr` in a thread (it runs while the followed faces'
        requests are out); its duration goes to timings["detect"]."""
        search = self._round[self._key_frames % len(self._round)]
        self._key_frames += 1

        def timed() -> list[Detection]:
            t = time.perf_counter()
            try:
                return search(bgr)
            finally:
                timings["detect"] += (time.perf_counter() - t) * 1e3

        return self._searcher.submit(timed)

    def _refresh(self, bgr: np.ndarray, followed: list[Face], detections: list[Detection], t_start: float,
                 timings: dict[str, float]) -> tuple[list[Face], set[int]]:
        """A key frame with faces to follow: the detector's `detections` re-anchor the followed faces they
        overlap (their box becomes the detector's) and start tracks for the faces nobody follows; a
        followed face that a whole round of key frames has not found is dropped."""
        found: dict[int, Detection] = {}  # index in `followed` -> its detection
        new: list[Detection] = []
        for d in sorted(detections, key=lambda d: -d.score):
            overlaps = [iou(d.box, f.box) for f in followed]
            free = [i for i in range(len(followed)) if i not in found]
            best = max(free, key=overlaps.__getitem__, default=None)
            if best is not None and overlaps[best] >= self._tracker.min_iou:
                found[best] = d
            elif max(overlaps) < self._tracker.min_iou:  # a face nobody follows (not a duplicate of one)
                new.append(d)
        kept: list[Face] = []
        for i, face in enumerate(followed):
            track = self._tracks[_track_id(face)]
            if i in found:
                track.unfound = 0
                d = found[i]
                kept.append(replace(face, box=d.box, detection_score=d.score))
            else:
                track.unfound += 1
                if track.unfound < len(self._round):
                    kept.append(face)
                else:
                    del self._tracks[_track_id(face)]
        added = self._infer(bgr, new, t_start, timings) if new else []
        # followed faces are matched by their tracked boxes, so they keep their ids; new faces get new ones
        ids = self._tracker.update([self._tracks[_track_id(f)].box for f in kept] + [f.box for f in added])
        added = [replace(f, track_id=tid) for f, tid in zip(added, ids[len(kept):], strict=True)]
        faces = sorted(kept + added, key=lambda f: (f.box[0], f.box[1]))
        return faces, {_track_id(followed[i]) for i in found} | {_track_id(f) for f in added}

    def _update(self, face: Face, now: float, anchored: bool) -> Face:
        """Record a face's track state and return it with its smoothed scores. A detector box
        (`anchored`) fixes where the box sits relative to the keypoints until the next detection."""
        tid = _track_id(face)
        old = self._tracks.get(tid)
        smoothed = smooth(old.smoothed if old else None, face.scores, now - old.time if old else 0.0,
                          self.options.smoothing)
        geometry = keypoint_frame(face)
        if geometry is None:
            self._tracks.pop(tid, None)
            return replace(face, smoothed_scores=smoothed)
        centre, spread = geometry
        x, y, w, h = face.box
        if anchored or old is None:
            offset = ((x + w / 2 - centre[0]) / spread, (y + h / 2 - centre[1]) / spread, w / spread)
        else:
            offset = old.offset
        side = offset[2] * spread
        cx, cy = centre[0] + offset[0] * spread, centre[1] + offset[1] * spread
        box = (float(cx - side / 2), float(cy - side / 2), float(side), float(side * h / max(w, 1e-6)))
        velocity = (float(centre[0] - old.centre[0]), float(centre[1] - old.centre[1])) if old else (0.0, 0.0)
        self._tracks[tid] = _Track(box, face.detection_score, centre, spread, offset, smoothed, now,
                                             eye_landmarks(face), 0 if anchored or old is None else old.unfound,
                                             velocity)
        self._tracker.move(tid, box)
        return replace(face, smoothed_scores=smoothed)


def prefetch(frames: Iterable[Any], depth: int) -> Iterator[Any]:
    """Iterate `frames` from a background thread that stays at most `depth` items ahead."""
    items: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: tuple[str, Any]) -> bool:
        while not stop.is_set():
            try:
                items.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def read() -> None:
        try:
            for frame in frames:
                if not put(("frame", frame)):
                    return
            put(("end", None))
        except BaseException as exc:  # handed to the consumer, raised there
            put(("error", exc))

    reader = threading.Thread(target=read, name="emotion-ai-frames", daemon=True)
    reader.start()
    try:
        while True:
            kind, value = items.get()
            if kind == "end":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        stop.set()
        reader.join(timeout=1.0)


@dataclass
class TrackSummary:
    """Per-track totals over a stream (constant memory per track): feed it every `Prediction`."""

    tracks: dict[int, dict[str, Any]] = field(default_factory=dict)

    def add(self, prediction: Prediction) -> None:
        """Count `prediction`'s tracked faces into their tracks' totals (faces without a track id are skipped).

        Args:
            prediction: one frame's prediction from `EmotionClient.stream`.
        """
        for face in prediction.faces:
            if face.track_id is None:
                continue
            t = self.tracks.setdefault(face.track_id, {"first_frame": prediction.frame, "frames": 0, "sums": {}})
            t["last_frame"] = prediction.frame
            t["frames"] += 1
            for k, v in (face.smoothed_scores or face.scores).items():
                t["sums"][k] = t["sums"].get(k, 0.0) + v

    def rows(self) -> list[dict[str, Any]]:
        """track_id, first_frame, last_frame, frames, dominant (highest mean smoothed score), mean_<label>."""
        out = []
        for tid, t in sorted(self.tracks.items()):
            means = {k: v / t["frames"] for k, v in t["sums"].items()}
            out.append({"track_id": tid, "first_frame": t["first_frame"], "last_frame": t["last_frame"],
                        "frames": t["frames"], "dominant": max(means, key=means.__getitem__) if means else None,
                        **{f"mean_{k}": round(v, 4) for k, v in means.items()}})
        return out
