"""The pure helpers of `bench/vs_fer.py` (ratios, verdicts, flag passing, timeline counting, the folder's photos
and JSON lines, the table) and the test clip of bench/photos.py. The fer side itself needs the fer venv and is not
run here."""

from __future__ import annotations

import hashlib
import json
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


def test_folder_variants_are_distinct_and_take_turns() -> None:
    variants = [vs_fer.folder_variant(k) for k in range(400)]
    assert variants[:5] == [(0, False, 1.0, 1.0, 0), (1, False, 1.0, 1.0, 0), (2, False, 1.0, 1.0, 0),
                            (3, False, 1.0, 1.0, 0), (0, True, 1.0, 1.0, 0)]
    assert variants[8] == (0, False, 0.8, 1.0, 0) and variants[40] == (0, False, 1.0, 0.9, 0)
    assert variants[199] == (3, True, 1.1, 1.15, 0) and variants[200] == (0, False, 1.0, 1.0, 2)
    assert len(set(variants)) == 400
    assert [v[0] for v in variants[:200]].count(3) == 50


def test_write_folder_gives_distinct_files_in_cli_order(tmp_path: Path) -> None:
    jpegs = [photos.one_face_jpeg(), photos.four_face_jpeg()]
    paths = vs_fer.write_folder(tmp_path / "folder", jpegs, 24)
    assert paths == sorted((tmp_path / "folder").iterdir()) and len(paths) == 24
    assert len({hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}) == 24
    first, mirrored, smaller = (cv2.imread(str(paths[k])) for k in (0, 2, 20))  # photo 0 plain, mirrored, x0.9
    assert first.shape == (480, 640, 3) and mirrored.shape == (480, 640, 3) and smaller.shape == (432, 576, 3)
    assert np.abs(first.astype(int) - mirrored[:, ::-1].astype(int)).mean() < 3  # the mirror image (JPEG noise)


def test_predict_lines_and_rate_verdict(tmp_path: Path) -> None:
    paths = [tmp_path / "a.jpg", tmp_path / "b.jpg"]
    good = "\n".join(json.dumps({"image": str(p), "faces": [{}] * n}) for p, n in zip(paths, (1, 4), strict=True))
    assert vs_fer.predict_lines(good + "\n", paths) == ([1, 4], [])
    swapped = "\n".join(reversed(good.splitlines()))
    assert vs_fer.predict_lines(swapped, paths)[1] == [f"line 1 is {str(paths[1])!r}, not a.jpg",
                                                      f"line 2 is {str(paths[0])!r}, not b.jpg"]
    assert vs_fer.predict_lines(good.splitlines()[0] + "\nnot json", paths) == ([1, 0], ["line 2 is not JSON"])
    assert vs_fer.predict_lines("", paths) == ([], ["0 JSON lines for 2 files"])
    assert vs_fer.rate_verdict(2.5, 2.0, [], [1, 4], [1, 4]) == "yes"
    assert vs_fer.rate_verdict(2.0, 2.0, [], [1, 4], [1, 4]) == "yes"
    assert vs_fer.rate_verdict(1.9, 2.0, [], [1, 4], [1, 4]) == "no (slower)"
    assert vs_fer.rate_verdict(None, 2.0, [], [1, 4], [1, 4]) == "no (slower)"
    assert vs_fer.rate_verdict(3.0, 2.0, [], [1, 3], [1, 4]) == "no (faces differ on 1 of 2 files)"
    assert vs_fer.rate_verdict(1.0, 2.0, [], [0, 3], [1, 4]) == "no (slower; faces differ on 2 of 2 files)"
    assert vs_fer.rate_verdict(3.0, 2.0, ["exit 1"], [1, 4], [1, 4]) == "no (exit 1)"
    run = {"photos_per_s": 5.0, "faces": [1, 3, 6, 11, 1, 4], "problems": [str(i) for i in range(8)]}
    assert vs_fer.folder_run_summary(run, [1, 4, 6, 12, 1, 4]) == {
        "photos_per_s": 5.0, "faces": 26, "files_faces_differ": 2,
        "files_faces_differ_by_photo": {"4 faces (astronaut crops)": 1, "12 faces (LFW grid)": 1},
        "problems": ["0", "1", "2", "3", "4"]}
    assert vs_fer.best_run([{"photos_per_s": 3.0}, {"photos_per_s": 4.5}]) == {"photos_per_s": 4.5}


def test_folder_row_and_note() -> None:
    doc = _doc()
    run = {"photos_per_s": 8.0, "faces": 1150, "files_faces_differ": 0, "files_faces_differ_by_photo": {},
           "exit_code": 0}
    doc["folder"] = {"photos": 200, "bar": 2.0, "real_faces": 1150, "variants": "v", "ratio": 2.0, "met": "yes",
                     "ours": run, "fer": run | {"photos_per_s": 4.0, "faces": 1000, "files_faces_differ": 30,
                                                          "files_faces_differ_by_photo": {"12 faces": 30}},
                     "runs": {"ours": [run, run | {"photos_per_s": 7.5}], "fer": [run | {"photos_per_s": 4.0}] * 2}}
    rows = vs_fer.table_rows(doc)
    assert rows[-1] == ["folder of 200 photos, `emotion-ai predict DIR --json` end to end", "8.0 photos/s",
                        "4.0 photos/s", "2.00x", ">= 2.0x photos/s", "yes", "1150 / 1000 (of 1150)"]
    text = vs_fer.markdown(doc)
    assert "ours 8.0 and 7.5 photos/s" in text and "fer 4.0 and 4.0 photos/s" in text
    assert "ours 0, fer 30 (30 of the 12 faces) (of 200)" in text


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
