"""`EmotionClient.stream`: detection schedule, landmark tracking, track ids, smoothing, rows, the CLI."""

from __future__ import annotations

import json
import math
import threading

import cv2
import numpy as np
import pytest
from emotion_ai import EmotionClient, StreamOptions, TrackSummary, cli_support, spec
from emotion_ai import cli as cli_mod
from emotion_ai.detect import Detection
from emotion_ai.errors import RequestTimeoutError
from emotion_ai.result import Face, Prediction
from emotion_ai.streaming import WHOLE_EVERY, prefetch, smooth
from emotion_ai.transport import ModelRef, VersionStatus

LABELS = ("happy", "sad")
#: A plausible face in keypoints-model pixels (96 x 96): eyes, brows, nose, mouth.
TEMPLATE = np.array([
    [62, 38], [34, 38], [56, 38], [70, 38], [40, 38], [26, 38], [54, 28], [74, 28], [42, 28], [22, 28],
    [48, 56], [62, 74], [34, 74], [48, 70], [48, 80],
], np.float32)


class ShapeTransport:
    """Keypoints: TEMPLATE (+ `jump` px on the call numbers in `jump_on`); emotion: `scores(call)`."""

    def __init__(self, scores=lambda call: (0.9, 0.1), jump_on: frozenset[int] = frozenset(), jump: float = 30.0):
        self.scores, self.jump_on, self.jump = scores, jump_on, jump
        self.kp_calls = self.em_calls = 0
        self._lock = threading.Lock()

    def predict(self, model: ModelRef, inputs, timeout):
        n = inputs[spec.INPUT_KEY].shape[0]
        with self._lock:
            if model.name == spec.KEYPOINTS_MODEL:
                self.kp_calls += 1
                shift = self.jump if self.kp_calls in self.jump_on else 0.0
                return {spec.KEYPOINTS_OUTPUT_KEY: np.tile(TEMPLATE + shift, (n, 1, 1))}
            self.em_calls += 1
            s = np.tile(np.array(self.scores(self.em_calls), np.float32), (n, 1))
        return {spec.SCORES_OUTPUT_KEY: s, spec.CLASSES_OUTPUT_KEY: np.array(LABELS)}

    def status(self, model, timeout):
        return [VersionStatus(1, "AVAILABLE")]

    def close(self) -> None:
        pass


class SquareDetector:
    """Finds the white squares of a frame; counts its calls."""

    name = "haar"

    def __init__(self):
        self.calls = 0

    def detect(self, image):
        self.calls += 1
        mask = (image[:, :, 0] > 200).astype(np.uint8)  # 255, give or take video compression
        n, _, stats, _ = cv2.connectedComponentsWithStats(mask)
        return [Detection(tuple(float(v) for v in stats[i, :4]), 0.99) for i in range(1, n)]


def frame(*squares: tuple[int, int, int]) -> np.ndarray:
    """A 320x240 grey frame with white squares (x, y, side)."""
    img = np.full((240, 320, 3), 80, np.uint8)
    for x, y, side in squares:
        img[y : y + side, x : x + side] = 255
    return img


def stream(frames, *, transport=None, detector=None, fps=10.0, **options):
    detector = detector or SquareDetector()
    client = EmotionClient(transport=transport or ShapeTransport(), detector=detector)
    return list(client.stream(frames, fps=fps, options=StreamOptions(**options))), detector


def test_smoothing_is_an_exponential_moving_average_with_a_time_constant():
    assert smooth(None, {"a": 1.0}, 0.1, 0.3) == {"a": 1.0}
    after = smooth({"a": 0.0, "b": 1.0}, {"a": 1.0, "b": 0.0}, 0.3, 0.3)
    assert after["a"] == pytest.approx(1 - math.exp(-1))  # 63 % of a step after one time constant
    assert after["b"] == pytest.approx(math.exp(-1))
    assert smooth({"a": 0.0}, {"a": 1.0}, 0.3, 0.0) == {"a": 1.0}  # 0 = off


def test_detector_runs_every_n_frames_and_faces_are_followed_between():
    preds, detector = stream([frame((100, 60, 80))] * 12, detect_every=5)
    assert [p.detected for p in preds] == [i % 5 == 0 for i in range(12)]
    assert detector.calls == 3
    assert {f.track_id for p in preds for f in p.faces} == {1}
    boxes = np.array([p.faces[0].box for p in preds])
    assert np.abs(boxes - boxes[0]).max() < 1.0  # a still face stays where it is while followed
    assert [p.frame for p in preds] == list(range(12))
    assert [p.timestamp for p in preds] == pytest.approx([i / 10 for i in range(12)])


def test_track_ids_stay_with_their_faces_and_new_faces_get_new_ids():
    frames = [frame((20, 60, 60))] * 3 + [frame((20, 60, 60), (200, 60, 60))] * 3
    preds, _ = stream(frames, detect_every=3)
    assert [[f.track_id for f in p.faces] for p in preds] == [[1]] * 3 + [[1, 2]] * 3


def test_a_face_keeps_its_id_through_a_short_occlusion_but_not_a_long_one():
    face, blank = frame((100, 60, 80)), frame()
    preds, _ = stream([face] * 3 + [blank] * 4 + [face] * 2, detect_every=1, max_missed=5)
    assert [len(p.faces) for p in preds] == [1, 1, 1, 0, 0, 0, 0, 1, 1]
    assert {f.track_id for p in preds for f in p.faces} == {1}
    preds, _ = stream([face] * 2 + [blank] * 6 + [face], detect_every=1, max_missed=3)
    assert preds[-1].faces[0].track_id == 2


def test_a_followed_face_that_jumps_is_detected_again_at_once():
    transport = ShapeTransport(jump_on=frozenset({3}))  # the 3rd keypoints call: frame 2, a followed frame
    preds, detector = stream([frame((100, 60, 80))] * 6, transport=transport, detect_every=10)
    assert [p.detected for p in preds] == [True, False, True, False, False, False]
    assert detector.calls == 2
    assert {f.track_id for p in preds for f in p.faces} == {1}


class RoundDetector(SquareDetector):
    """A SquareDetector with a cheaper upright search (as MTCNN has); `blind` searches find nothing, and
    with `only_first` no search after the first finds anything."""

    def __init__(self, blind: frozenset[str] = frozenset(), only_first: bool = False):
        super().__init__()
        self.blind, self.only_first, self.log = blind, only_first, []

    def _look(self, kind: str, image) -> list:
        self.log.append(kind)
        found = SquareDetector.detect(self, image)
        return [] if kind in self.blind or (self.only_first and self.calls > 1) else found

    def detect(self, image):
        return self._look("whole", image)

    def detect_upright(self, image):
        return self._look("upright", image)


def test_key_frames_run_the_upright_search_and_a_whole_one_per_round_and_re_anchor_followed_faces():
    assert WHOLE_EVERY == 3
    frames = [frame((100, 60, 80))] * 3 + [frame((100, 60, 80), (220, 100, 50))] * 5
    preds, detector = stream(frames, detector=RoundDetector(), detect_every=2)
    assert detector.log == ["whole", "upright", "upright", "whole"]  # frame 0 (nothing to follow), 2, 4, 6
    assert [p.detected for p in preds] == [i % 2 == 0 for i in range(8)]
    assert [[f.track_id for f in p.faces] for p in preds] == [[1]] * 4 + [[1, 2]] * 4  # the new face: frame 4
    for p in preds:
        if p.detected:  # on key frames the boxes are the detector's
            assert [f.box for f in p.faces] == [d.box for d in SquareDetector().detect(p.image)]


def test_a_followed_face_a_whole_round_of_key_frames_misses_is_dropped():
    preds, detector = stream([frame((100, 60, 80))] * 6, detector=RoundDetector(only_first=True), detect_every=1)
    assert [len(p.faces) for p in preds] == [1, 1, 1, 0, 0, 0]  # kept through 2 missing key frames, then dropped
    assert detector.log == ["whole", "upright", "upright", "whole", "whole", "whole"]
    tilted = RoundDetector(blind=frozenset({"upright"}))  # only the whole search finds it: kept throughout
    preds, _ = stream([frame((100, 60, 80))] * 8, detector=tilted, detect_every=1)
    assert [len(p.faces) for p in preds] == [1] * 8 and {f.track_id for p in preds for f in p.faces} == {1}


def test_with_a_detector_of_one_search_a_missing_key_frame_drops_the_face():
    class OnceOnly(SquareDetector):
        def detect(self, image):
            found = super().detect(image)
            return found if self.calls == 1 else []

    preds, detector = stream([frame((100, 60, 80))] * 4, detector=OnceOnly(), detect_every=1)
    assert [len(p.faces) for p in preds] == [1, 0, 0, 0] and detector.calls == 4


def test_a_key_frame_detection_runs_while_the_followed_faces_requests_are_out():
    both = threading.Barrier(2, timeout=10)  # broken (and the test failed) unless both are in flight at once

    class MeetingTransport(ShapeTransport):
        def predict(self, model, inputs, timeout):
            if model.name == spec.KEYPOINTS_MODEL and self.kp_calls >= 1:  # the followed faces' requests
                both.wait()
            return super().predict(model, inputs, timeout)

    class MeetingDetector(SquareDetector):
        def detect(self, image):
            if self.calls:  # not the first frame's search: there is nothing to follow yet
                both.wait()
            return super().detect(image)

    preds, detector = stream([frame((100, 60, 80))] * 3, transport=MeetingTransport(), detector=MeetingDetector(),
                             detect_every=1)
    assert detector.calls == 3 and [len(p.faces) for p in preds] == [1, 1, 1]


def test_a_key_frame_detection_that_fails_raises_in_the_stream():
    class BrokenLater(SquareDetector):
        def detect(self, image):
            if self.calls:
                raise RuntimeError("detector failed")
            return super().detect(image)

    with pytest.raises(RuntimeError, match="detector failed"):
        stream([frame((100, 60, 80))] * 3, detector=BrokenLater(), detect_every=1)


def test_scores_are_smoothed_per_track_over_time():
    transport = ShapeTransport(lambda call: (0.9, 0.1) if call < 4 else (0.1, 0.9))
    preds, _ = stream([frame((100, 60, 80))] * 6, transport=transport, detect_every=2, smoothing=0.2)
    faces = [p.faces[0] for p in preds]
    assert [f.emotion for f in faces] == ["happy"] * 3 + ["sad"] * 3
    expect = 0.9
    for f in faces[1:]:
        expect += (1 - math.exp(-0.1 / 0.2)) * (f.scores["happy"] - expect)
        assert f.smoothed_scores["happy"] == pytest.approx(expect)
    assert faces[3].smoothed_emotion == "happy" and faces[5].smoothed_emotion == "sad"


def test_no_face_frames_are_analysed_frames_with_no_faces():
    preds, _ = stream([frame()] * 3, detect_every=2)
    assert [(p.detected, p.faces) for p in preds] == [(True, []), (False, []), (True, [])]
    rows = preds[0].to_rows()
    assert rows == [{"frame": 0, "time": 0.0, "face": None}]


def test_rows_summary_and_json_of_tracked_faces():
    preds, _ = stream([frame((20, 60, 60), (200, 60, 60))] * 4, detect_every=2)
    rows = preds[1].to_rows()
    assert [r["track_id"] for r in rows] == [1, 2] and [r["face"] for r in rows] == [0, 1]
    assert rows[0]["frame"] == 1 and rows[0]["smoothed_happy"] == pytest.approx(0.9)
    assert {"x", "y", "w", "h", "score_sad", "nose_tip_x", "mouth_center_bottom_lip_y"} <= set(rows[0])
    doc = json.loads(preds[1].to_json())
    assert doc["frame"] == 1 and doc["detected"] is False and doc["faces"][1]["track_id"] == 2
    summary = TrackSummary()
    for p in preds:
        summary.add(p)
    assert [(r["track_id"], r["first_frame"], r["last_frame"], r["frames"], r["dominant"]) for r in summary.rows()] == [
        (1, 0, 3, 4, "happy"), (2, 0, 3, 4, "happy")]


def test_to_pandas_needs_pandas_and_says_so(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(ImportError, match="pip install pandas"):
        Prediction(faces=[], image_size=(1, 1), timings_ms={}).to_pandas()


def test_image_rows_keep_images_without_faces():
    face = Face(box=(1, 2, 3, 4), detection_score=0.9, keypoints={"nose_tip": (5.0, 6.0)}, emotion="sad",
                scores={"sad": 0.7, "happy": 0.3})
    rows = Prediction(faces=[face], image_size=(9, 9), timings_ms={}, source="a.jpg").to_rows()
    assert rows == [{"image": "a.jpg", "face": 0, "x": 1, "y": 2, "w": 3, "h": 4, "detection_score": 0.9,
                     "emotion": "sad", "score_sad": 0.7, "score_happy": 0.3, "nose_tip_x": 5.0, "nose_tip_y": 6.0}]
    assert Prediction(faces=[], image_size=(9, 9), timings_ms={}, source="b.jpg").to_rows() == [
        {"image": "b.jpg", "face": None}]


def test_prefetch_reads_a_bounded_number_ahead_and_passes_errors_on():
    pulled = []

    def source():
        for i in range(100):
            pulled.append(i)
            yield i

    it = prefetch(source(), 3)
    assert next(it) == 0
    threading.Event().wait(0.3)
    assert len(pulled) <= 1 + 3 + 1  # the one taken, the queue, the one waiting to be put
    it.close()

    def broken():
        yield 1
        raise OSError("camera unplugged")

    out = prefetch(broken(), 2)
    assert next(out) == 1
    with pytest.raises(OSError, match="camera unplugged"):
        next(out)


def test_stream_options_are_validated():
    for bad in ({"detect_every": 0}, {"smoothing": -1}, {"max_drift": 1.5}, {"prefetch": 0}):
        with pytest.raises(ValueError):
            StreamOptions(**bad)
    client = EmotionClient(transport=ShapeTransport(), detector=SquareDetector())
    with pytest.raises(ValueError, match="fps"):
        next(iter(client.stream([frame()], fps=0)))


def _moving_astronaut(astronaut_bgr: np.ndarray, n: int, step: int = 6, start: int = 100) -> list[np.ndarray]:
    face = cv2.resize(astronaut_bgr[0:400, 56:456], (240, 240), interpolation=cv2.INTER_AREA)
    frames = []
    for i in range(n):
        x = start + step * i
        img = np.full((480, 640, 3), 96, np.uint8)
        img[100:340, x : x + 240] = face
        frames.append(img)
    return frames


def test_followed_faces_match_detected_faces_on_a_moving_face(server, astronaut_bgr):
    """With the served models: landmark tracking between detections keeps the keypoints and the expression
    that detecting on every frame gives."""
    frames = _moving_astronaut(astronaut_bgr, 12)
    with EmotionClient(grpc_port=server.grpc_port, timeout=30) as client:
        every = list(client.stream(frames, fps=25, options=StreamOptions(detect_every=1)))
        tracked = list(client.stream(frames, fps=25, options=StreamOptions(detect_every=6)))
    assert sum(p.detected for p in tracked) == 2
    assert all(len(p.faces) == 1 and p.faces[0].track_id == 1 for p in every + tracked)
    for a, b in zip(every, tracked, strict=True):
        ka, kb = (np.array(list(p.faces[0].keypoints.values())) for p in (a, b))
        assert np.linalg.norm(ka - kb, axis=1).mean() < 3.0
        assert a.faces[0].emotion == b.faces[0].emotion


def test_a_fast_face_is_followed_by_its_motion_not_re_detected_every_frame(server, astronaut_bgr):
    """With the served models: a face (53 px box) crossing 20 px per frame, more than `max_drift` of its box,
    is followed by its motion from the third frame on, within 3 px of what detection gives."""
    frames = _moving_astronaut(astronaut_bgr, 8, step=20, start=20)
    with EmotionClient(grpc_port=server.grpc_port, timeout=30) as client:
        every = list(client.stream(frames, fps=25, options=StreamOptions(detect_every=1)))
        tracked = list(client.stream(frames, fps=25, options=StreamOptions(detect_every=100)))
    assert [p.detected for p in tracked] == [True, True] + [False] * 6  # the first follow has no motion yet
    for a, b in zip(every, tracked, strict=True):
        ka, kb = (np.array(list(p.faces[0].keypoints.values())) for p in (a, b))
        assert np.linalg.norm(ka - kb, axis=1).mean() < 3.0


# -- the CLI -----------------------------------------------------------------------------------------
def _clip(path, frames, fps=10):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (320, 240))
    for f in frames:
        writer.write(f)
    writer.release()
    return path


@pytest.fixture
def cli_fake(monkeypatch):
    """`emotion-ai` with a fresh fake-served client per command."""
    monkeypatch.setattr(cli_support, "client_from_args", lambda args: EmotionClient(transport=ShapeTransport(),
                                                                        detector=SquareDetector()))


def test_cli_video_rows_for_every_analysed_frame_summary_and_bounds(cli_fake, tmp_path, capsys):
    video = _clip(tmp_path / "in.avi", [frame((100, 60, 80))] * 4 + [frame()] * 2 + [frame((100, 60, 80))] * 4)
    out, summary = tmp_path / "t.jsonl", tmp_path / "s.json"
    assert cli_mod.main(["video", str(video), "--out", str(out), "--detect-every", "1", "--summary", str(summary)]) == 0
    frames = [json.loads(line) for line in out.read_text().splitlines()]
    assert [len(f["faces"]) for f in frames] == [1, 1, 1, 1, 0, 0, 1, 1, 1, 1]
    assert {face["track_id"] for f in frames for face in f["faces"]} == {1}
    assert json.loads(summary.read_text())[0] | {"mean_happy": 0, "mean_sad": 0} == {
        "track_id": 1, "first_frame": 0, "last_frame": 9, "frames": 8, "dominant": "happy", "mean_happy": 0,
        "mean_sad": 0}
    assert "track 1: frames 0-9 (8 analysed), mostly happy" in capsys.readouterr().err
    assert cli_mod.main(["video", str(video), "--out", str(out), "--max-frames", "3"]) == 0
    assert len(out.read_text().splitlines()) == 3
    csv_out = tmp_path / "t.csv"
    assert cli_mod.main(["video", str(video), "--out", str(csv_out), "--detect-every", "1"]) == 0
    lines = csv_out.read_text().splitlines()
    assert len(lines) == 1 + 10 and lines[5].startswith("4,0.4,,")  # the no-face frame has its row


def test_cli_video_leaves_no_file_when_the_server_is_down(tmp_path, capsys):
    video = _clip(tmp_path / "in.avi", [frame((100, 60, 80))] * 2)
    out = tmp_path / "t.jsonl"
    assert cli_mod.main(["video", str(video), "--out", str(out), "--grpc-port", "9", "--timeout", "1"]) == 2
    assert not out.exists()
    assert "unavailable" in capsys.readouterr().err


def test_cli_video_sources_that_cannot_be_opened(tmp_path, capsys):
    assert cli_mod.main(["video", str(tmp_path / "missing.mp4")]) == 1
    assert cli_mod.main(["video", "97"]) == 1  # a camera index with no camera
    err = capsys.readouterr().err
    assert "no such file" in err and "camera or stream" in err
    assert cli_mod.main(["video", "x.mp4", "--detect-every", "0"]) == 2


class FlakyTransport(ShapeTransport):
    """Times out on the emotion call numbers in `fail_on`."""

    def __init__(self, fail_on: frozenset[int]):
        super().__init__()
        self.fail_on = fail_on

    def predict(self, model: ModelRef, inputs, timeout):
        if model.name == spec.EMOTION_MODEL and self.em_calls + 1 in self.fail_on:
            self.em_calls += 1
            raise RequestTimeoutError("emotion: the request exceeded its deadline")
        return super().predict(model, inputs, timeout)


def test_cli_video_a_failed_frame_costs_that_frame_only(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(cli_support, "client_from_args", lambda args: EmotionClient(
        transport=FlakyTransport(frozenset({3})), detector=SquareDetector()))
    video = _clip(tmp_path / "in.avi", [frame((100, 60, 80))] * 6)
    out, ann = tmp_path / "t.jsonl", tmp_path / "ann.mp4"
    assert cli_mod.main(["video", str(video), "--out", str(out), "--detect-every", "1", "--annotated", str(ann)]) == 1
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["frame"] for line in lines] == list(range(6))
    assert "deadline" in lines[2]["error"] and all(len(line["faces"]) == 1 for i, line in enumerate(lines) if i != 2)
    assert "frame 2:" in capsys.readouterr().err
    cap = cv2.VideoCapture(str(ann))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 6  # the annotated video keeps every frame
    cap.release()


class AsyncShapeTransport:
    """ShapeTransport behind awaitable calls, for AsyncEmotionClient."""

    def __init__(self):
        self.sync = ShapeTransport()

    async def predict(self, model, inputs, timeout):
        return self.sync.predict(model, inputs, timeout)

    async def status(self, model, timeout):
        return self.sync.status(model, timeout)

    async def close(self) -> None:
        pass


def test_async_stream_matches_the_sync_stream_over_sync_and_async_frame_sources():
    import asyncio

    from emotion_ai import AsyncEmotionClient

    frames = [frame((20, 60, 60))] * 3 + [frame((20, 60, 60), (200, 60, 60))] * 4 + [frame()] * 2
    sync, _ = stream(frames, detect_every=3)

    async def run(source):
        async with AsyncEmotionClient(transport=AsyncShapeTransport(), detector=SquareDetector()) as client:
            return [p async for p in client.stream(source, fps=10.0, options=StreamOptions(detect_every=3))]

    async def agen():
        for f in frames:
            await asyncio.sleep(0)
            yield f

    for got in (asyncio.run(run(frames)), asyncio.run(run(agen()))):
        assert [(p.frame, p.detected, [f.track_id for f in p.faces]) for p in got] == [
            (p.frame, p.detected, [f.track_id for f in p.faces]) for p in sync]
        assert [f.smoothed_scores for p in got for f in p.faces] == [f.smoothed_scores for p in sync for f in p.faces]
