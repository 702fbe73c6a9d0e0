"""The pure helpers of `bench/vs_fer.py` (ratios, verdicts, flag passing, timeline counting, the table) and the
test clip of bench/photos.py. The fer side itself needs the fer venv and is not run here."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from .quality_support import bench_module

photos = bench_module("photos")
vs_fer = bench_module("vs_fer")


def test_summarize_and_ratio() -> None:
    s = vs_fer.summarize([5.0, 1.0, 3.0, 2.0, 4.0])
    assert s == {"n": 5, "p50_ms": 3.0, "p95_ms": 5.0, "mean_ms": 3.0}
    assert vs_fer.ratio(50.0, 100.0) == 0.5
    assert vs_fer.ratio(1.0, 0.0) is None


@pytest.mark.parametrize(("r", "ours", "expected", "bar", "verdict"), [
    (0.8, 4, 4, 1.0, "yes"),
    (1.0, 4, 4, 1.0, "yes"),
    (1.2, 4, 4, 1.0, "no (slower)"),
    (0.1, 0, 4, 1.0, "no (found 0 of 4 faces)"),  # a speed win that finds no faces is no win
    (0.1, 5, 4, 1.0, "no (found 5 of 4 faces)"),
    (None, 4, 4, 1.0, "no (slower)"),
    (0.5, 1, 1, None, "n/a"),
])
def test_photo_verdict(r: float | None, ours: int, expected: int, bar: float | None, verdict: str) -> None:
    assert vs_fer.photo_verdict(r, ours, expected, bar) == verdict


def test_flags_to_kwargs() -> None:
    argv = ["--detect-every", "5", "--smoothing=0.5", "--fast", "--every", "2", "stray", "--name", "x"]
    kwargs, ignored = vs_fer.flags_to_kwargs(argv, {"detect_every", "smoothing", "fast", "name"})
    assert kwargs == {"detect_every": 5, "smoothing": 0.5, "fast": True, "name": "x"}
    assert ignored == ["--every 2", "stray"]


def test_detector_options_are_python_literals() -> None:
    assert vs_fer.detector_options("min_face_size=50 tilts=() enhance=False") == {
        "min_face_size": 50, "tilts": (), "enhance": False}
    assert vs_fer.detector_options("") == {}
    for bad in ("min_face_size", "x=notaliteral", "1a=2"):
        with pytest.raises(SystemExit, match="--detector-options"):
            vs_fer.detector_options(bad)


def test_stream_kwargs_split_options_from_parameters() -> None:
    argv = ["--detect-every", "3", "--fps", "30", "--every", "2"]
    kwargs, options, ignored = vs_fer.stream_kwargs(["fps", "options", "color"], ["detect_every", "smoothing"], argv)
    assert kwargs == {"fps": 30}
    assert options == {"detect_every": 3}
    assert ignored == ["--every 2"]


def test_timeline_counts_both_layouts() -> None:
    per_frame = [{"frame": 0, "faces": [{}, {}]}, {"frame": 1, "faces": []}, {"frame": 2, "faces": [{}]}]
    assert vs_fer.timeline_counts(per_frame) == (3, 2)
    per_face = [{"frame": 0}, {"frame": 0}, {"frame": 4}]
    assert vs_fer.timeline_counts(per_face) == (3, 2)


def _doc() -> dict:
    ms = {"n": 10, "p50_ms": 0.0, "p95_ms": 0.0, "mean_ms": 0.0}
    photo = {"name": "4 faces", "faces": 4, "ours": ms | {"p50_ms": 40.0}, "fer": ms | {"p50_ms": 80.0}, "ratio": 0.5,
             "bar": True, "met": "yes", "ours_faces": 4, "fer_faces": 3, "ours_stages_ms": {"detect": 10.0},
             "fer_decode_ms": 2.0}
    return {
        "command": "python bench/vs_fer.py", "quick": False, "load_avg": {"start": 1.0, "end": 1.5},
         "photo_bar": 1.0, "photo_bar_met": True, "warmup": 2,
        "machine": {"summary": "test machine"},
        "ours": {"models": "m (keypoints v1, emotion v1)", "detector": "D", "cli": "emotion-ai video CLIP"},
        "fer": {"fer": "25.10.3", "config": "FER()", "tensorflow": "2", "opencv": "4"},
        "photos": [photo],
        "photos_total": {"ours_ms": 40.0, "fer_ms": 80.0, "ours_faces": 4, "fer_faces": 3, "faces": 4, "ratio": 0.5,
                         "met": "yes"},
        "video": {"frames": 240,
                  "fer": {"frames_per_s": 20.0, "detect_frames_per_s": 21.0, "faces_per_frame": 1.0, "frames": 240,
                          "frames_with_face": 240},
                  "cli": {"frames_per_s": 10.0, "faces_per_frame": 1.0, "exit_code": 0, "rows": 240,
                          "frames_with_face": 240, "wall_s": 24.0},
                  "stream": {"note": "not measured"}},
    }


def test_table_rows_and_markdown() -> None:
    doc = _doc()
    rows = vs_fer.table_rows(doc)
    assert rows[0] == ["photo, 4 faces", "40.0 ms", "80.0 ms", "0.50x", "<= 1.0x time", "yes", "4 / 3 (of 4)"]
    assert rows[1][0].startswith("photos with several faces")
    assert rows[2][:4] == ["video, `emotion-ai video` CLI end to end", "10.0 fps", "20.0 fps", "0.50x"]
    assert len(rows) == 3  # no stream figures, no predict loop: no rows for them
    text = vs_fer.markdown(doc)
    assert "| workload | ours | fer | ratio | bar | met? | faces ours / fer |" in text
    assert "Command: `python bench/vs_fer.py`" in text and "**met**" in text


def _face_box(frame: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(np.any(frame != 96, axis=2))
    return int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)


def test_clip_moves_and_zooms(tmp_path: Path) -> None:
    frames = 40
    first, mid = photos.astronaut_clip_frame(0, frames, (0.7, 1.4)), photos.astronaut_clip_frame(20, frames, (0.7, 1.4))
    quarter = photos.astronaut_clip_frame(10, frames, (0.7, 1.4))
    assert first.shape == (480, 640, 3) and first.dtype == np.uint8
    assert abs(_face_box(first)[2] - 210) <= 2 and abs(_face_box(mid)[2] - 420) <= 2  # 300 px x 0.7 .. 1.4
    assert _face_box(quarter)[0] > _face_box(first)[0]  # swung right
    assert _face_box(photos.astronaut_clip_frame(5, frames))[2] in (299, 300)  # zoom (1, 1): fixed 300 px
    path = photos.write_astronaut_clip(tmp_path / "clip.mp4", 6, (0.7, 1.4))
    cap = cv2.VideoCapture(str(path))
    read = 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        assert frame.shape == (480, 640, 3)
        read += 1
    cap.release()
    assert read == 6
