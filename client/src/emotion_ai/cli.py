"""`emotion-ai` command line: predict (images), video (timeline with face tracks), status (models).

`--accurate` sends the faces to each task's accurate model (`emotion_accurate`) instead of the fast
default (`ClientOptions.variant`). Exit codes: 0 everything worked, 1 some inputs could not be read,
2 usage or server errors.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import time
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack, closing
from pathlib import Path
from typing import Any

import cv2
from tqdm import tqdm

from . import __version__, spec
from .client import ClientOptions, EmotionClient
from .detect import DEFAULT_DETECTOR, DETECTORS, THOROUGH_DETECTOR, FaceDetector, make_detector
from .errors import (
    EmotionAIError,
    InvalidImageError,
    ModelNotFoundError,
    RequestTimeoutError,
    ServerError,
    ServerUnavailableError,
)
from .merge import StagedImage
from .outputs import CsvSink, LazyFile, annotated_path
from .result import Face, Prediction, draw_faces
from .streaming import FaceStream, StreamOptions, TrackSummary, prefetch
from .transport import ModelRef, all_available

IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".dib", ".gif", ".tif", ".tiff", ".webp"}
    | {".pgm", ".ppm", ".pbm", ".pnm", ".jp2", ".exr", ".hdr"}
)
EXIT_OK, EXIT_SOME_FAILED, EXIT_ERROR = 0, 1, 2
#: `emotion-ai predict`: images staged (decoded, faces detected and cropped) ahead of the one whose model
#: requests are in flight, by this many worker threads (cv2 and gRPC release the GIL, so the cores overlap).
PIPELINE_DEPTH = 4
STAGE_WORKERS = 2


def _out(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _err(message: str) -> None:
    tqdm.write(f"emotion-ai: {message}", file=sys.stderr)


def build_parser() -> argparse.ArgumentParser:
    conn = argparse.ArgumentParser(add_help=False)
    g = conn.add_argument_group("server")
    d = ClientOptions  # the one place the connection defaults are defined
    env = os.environ.get
    host, protocol = env("EMOTION_AI_HOST", d.host), env("EMOTION_AI_PROTOCOL", d.protocol)
    grpc_port, rest_port = _env_int("EMOTION_AI_GRPC_PORT", d.grpc_port), _env_int("EMOTION_AI_REST_PORT", d.rest_port)
    g.add_argument("--host", default=host, help=f"server host (env EMOTION_AI_HOST; default: {host})")
    g.add_argument("--protocol", choices=("grpc", "rest"), default=protocol,
                   help=f"env EMOTION_AI_PROTOCOL; default: {protocol}")
    g.add_argument("--grpc-port", type=int, default=grpc_port, help=f"env EMOTION_AI_GRPC_PORT; default: {grpc_port}")
    g.add_argument("--rest-port", type=int, default=rest_port, help=f"env EMOTION_AI_REST_PORT; default: {rest_port}")
    g.add_argument(
        "--endpoint", action="append", dest="endpoints", metavar="HOST:PORT",
        help="a replica of the chosen protocol (repeat for several: round robin with failover; "
        "gRPC also takes dns:///name:port); replaces --host and the port",
    )
    g.add_argument(
        "--timeout", type=float, default=d.timeout, help=f"seconds per server call (default: {d.timeout:g})"
    )
    m = conn.add_argument_group("models (default: the fast models, newest version the server serves)")
    m.add_argument("--accurate", dest="variant", action="store_const", const=spec.ACCURATE, default=d.variant,
                   help="use each task's accurate model where the server has one (emotion -> emotion_accurate: "
                   "slower, more accurate); the version flags then pin that model's versions")
    for key in (spec.KEYPOINTS_MODEL, spec.EMOTION_MODEL):
        one = m.add_mutually_exclusive_group()
        one.add_argument(f"--{key}-version", type=int, metavar="N", help=f"pin {key} version N")
        one.add_argument(f"--{key}-label", metavar="LABEL", help=f"use {key}'s version label (e.g. stable)")

    parser = argparse.ArgumentParser(
        prog="emotion-ai", description="Face keypoints and facial expressions via TF Serving."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    det = argparse.ArgumentParser(add_help=False)
    g = det.add_argument_group("face detector")
    g.add_argument("--detector", metavar="NAME",
                   help=f"{' | '.join(DETECTORS)} | yunet:MODEL.onnx (default: {DEFAULT_DETECTOR}, its model ships "
                   "with the package)")
    g.add_argument("--min-face-size", type=float, metavar="PX", help="smallest face searched, in pixels")
    g.add_argument("--max-side", type=int, metavar="PX", help="detect on a copy at most this large (boxes mapped back)")
    g.add_argument("--min-score", type=float, help="detection score a face needs, in [0, 1]")
    g.add_argument("--no-tilt-search", dest="tilts", action="store_const", const=(),
                   help="mtcnn: skip the ±25° turned looks (detection in about a third of the time, "
                   "fewer tilted faces found)")
    g.add_argument("--thorough", action="store_true",
                   help=f"search thoroughly: the {THOROUGH_DETECTOR} detector with its turned looks, which finds the "
                   "small, tilted and dark faces the default misses, at about 6x its detection time")

    p = sub.add_parser("predict", parents=[conn, det], help="analyse images or folders of images")
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR")
    p.add_argument("--json", action="store_true", help="one JSON object per image on stdout")
    p.add_argument("--csv", metavar="FILE", help="write one row per face to FILE")
    p.add_argument("--annotate", metavar="OUT_DIR",
                   help="write annotated images to OUT_DIR (relative paths kept, nothing overwritten)")
    p.add_argument("--recursive", "-r", action="store_true", help="also search the folders' subfolders")

    v = sub.add_parser("video", parents=[conn, det], help="per-frame timeline of a video with face tracks")
    v.add_argument("input", metavar="IN", help="video file, camera index (0) or stream URL (rtsp://...)")
    v.add_argument("--out", metavar="FILE", help="timeline .csv (a row per face) or .jsonl (an object per frame); "
                   "default: JSON lines on stdout")
    v.add_argument("--annotated", metavar="OUT.mp4", help="write an annotated video")
    v.add_argument("--every", type=int, default=1, metavar="N", help="analyse every Nth frame (default: 1)")
    s_opts = StreamOptions()
    v.add_argument("--detect-every", type=int, default=s_opts.detect_every, metavar="N",
                   help=f"run the detector every N frames, "
                   f"follow faces by their keypoints on every frame (default: {s_opts.detect_every})")
    v.add_argument("--smoothing", type=float, default=s_opts.smoothing, metavar="SECONDS",
                   help=f"time constant of the per-track score smoothing (default: {s_opts.smoothing:g})")
    v.add_argument("--max-frames", type=int, metavar="N", help="stop after N frames")
    v.add_argument("--duration", type=float, metavar="SECONDS", help="stop after this much wall time")
    v.add_argument("--summary", metavar="FILE.json", help="also write the per-track summary as JSON")

    s = sub.add_parser("status", parents=[conn], help="models and versions on the server")
    s.add_argument("--json", action="store_true", help="print the status as JSON")
    return parser


def _detector(args: argparse.Namespace) -> FaceDetector:
    """The detector the flags ask for (a knob the detector does not have is a usage error)."""
    names = {"min_face_size": "min_face_size", "max_side": "max_side", "min_score": "min_score", "tilts": "tilts"}
    knobs = {k: getattr(args, a) for k, a in names.items() if getattr(args, a, None) is not None}
    if args.thorough and args.detector not in (None, THOROUGH_DETECTOR):
        raise EmotionAIError(f"--thorough searches with {THOROUGH_DETECTOR}; it does not combine with --detector "
                             f"{args.detector}")
    name = args.detector or (THOROUGH_DETECTOR if args.thorough else DEFAULT_DETECTOR)
    if name == "haar" and "min_face_size" in knobs:
        knobs["min_size"] = round(knobs.pop("min_face_size"))
    try:
        return make_detector(name, **knobs)
    except (TypeError, ValueError, FileNotFoundError) as exc:
        raise EmotionAIError(f"--detector {name}: {exc}") from exc


def _client(args: argparse.Namespace) -> EmotionClient:
    return EmotionClient(
        detector=_detector(args) if hasattr(args, "detector") else None,
        host=args.host,
        protocol=args.protocol,
        grpc_port=args.grpc_port,
        rest_port=args.rest_port,
        timeout=args.timeout,
        endpoints=tuple(args.endpoints or ()),
        variant=args.variant,
        models={key: ModelRef(spec.served_model(key, args.variant), version=getattr(args, f"{key}_version"),
                              version_label=getattr(args, f"{key}_label"))
                for key in (spec.KEYPOINTS_MODEL, spec.EMOTION_MODEL)},
    )


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise SystemExit(f"emotion-ai: {name}={value!r} is not a port number") from None


# -- predict ---------------------------------------------------------------------------------------
def expand_inputs(inputs: list[str], recursive: bool = False) -> tuple[list[tuple[Path, Path]], bool]:
    """(file, name relative to the folder it was found in) to process, folders expanded to their sorted
    image files (and those of their subfolders with `recursive`); was a folder given?"""
    files: list[tuple[Path, Path]] = []
    had_dir = False
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            had_dir = True
            found = p.rglob("*") if recursive else p.iterdir()
            files.extend(
                (f, f.relative_to(p))
                for f in sorted(found)
                if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES
            )
        else:
            files.append((p, Path(p.name)))
    return files, had_dir


def _summary(pred: Prediction) -> str:
    if not pred.faces:
        return f"{pred.source}: no face"
    parts = [
        f"{f.emotion} {f.scores.get(f.emotion, 0.0):.2f} at {[round(v) for v in f.box]}"
        for f in pred.faces
    ]
    return f"{pred.source}: {len(pred.faces)} face(s): " + "; ".join(parts)


def stage_ahead(client: EmotionClient, paths: Iterable[Path], depth: int = PIPELINE_DEPTH,
                workers: int = STAGE_WORKERS) -> Iterator[Future[StagedImage]]:
    """`client.stage(path)` for each path, in order, run ahead in worker threads: at most `depth` images
    are staged or waiting while the caller sends the current one's model requests (`predict_staged`).

    Args:
        client: stages the images (decode, detect, crop; thread-safe).
        paths: the images, in output order.
        depth: most images in flight (submitted and not yet taken by the caller).
        workers: threads that stage them.

    Yields:
        One future per path, in order; its `result()` raises what `stage` raised (e.g. InvalidImageError
        for an unreadable file), so one bad file costs only its own result.
    """
    pending: deque[Future[StagedImage]] = deque()
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="emotion-ai-stage") as pool:
        try:
            for path in paths:
                pending.append(pool.submit(client.stage, path))
                if len(pending) >= depth:
                    yield pending.popleft()
            while pending:
                yield pending.popleft()
        finally:  # the caller stopped early (an error, or the generator closed): drop the rest
            pool.shutdown(wait=True, cancel_futures=True)


def cmd_predict(args: argparse.Namespace) -> int:
    files, had_dir = expand_inputs(args.inputs, args.recursive)
    if not files:
        _err("no image files to process")
        return EXIT_SOME_FAILED
    failed = 0
    with ExitStack() as stack:
        client = stack.enter_context(_client(args))
        sink = None
        if args.csv:
            stream = stack.enter_context(
                open(args.csv, "w", newline="", encoding="utf-8", errors="backslashreplace")
            )
            sink = CsvSink(stream)
        out_dir = Path(args.annotate) if args.annotate else None
        if out_dir is not None:
            out_dir.mkdir(parents=True, exist_ok=True)
        bar = stack.enter_context(
            tqdm(
                files, desc="images", unit="img", file=sys.stderr, disable=None if had_dir else True
            )
        )
        staged = stack.enter_context(closing(stage_ahead(client, [path for path, _ in files])))
        for (path, relative), future in zip(bar, staged, strict=True):
            try:
                pred = client.predict_staged(future.result())
            except InvalidImageError as exc:
                failed += 1
                _err(f"skipped {exc}" if str(path) in str(exc) else f"skipped {path}: {exc}")
                continue
            except ModelNotFoundError:
                raise  # the server does not serve what was asked: every file would fail the same way
            except (RequestTimeoutError, ServerError) as exc:
                failed += 1
                hint = " (a larger --timeout gives each request more time)" if isinstance(
                    exc, RequestTimeoutError) else ""
                _err(f"failed {path}: {exc}{hint}")
                continue
            _out(pred.to_json() if args.json else _summary(pred))
            if sink is not None:
                for row in pred.to_rows():
                    sink.add(row)
            if out_dir is not None:
                pred.save(annotated_path(out_dir, relative))
        if sink is not None:
            sink.close()
    return EXIT_SOME_FAILED if failed else EXIT_OK


# -- video -----------------------------------------------------------------------------------------
def open_capture(source: str) -> tuple[Any, bool]:
    """`cv2.VideoCapture` of a file, a camera index ("0") or a stream URL ("rtsp://..."); is it live?"""
    if source.isdigit():
        return cv2.VideoCapture(int(source)), True
    if "://" in source:
        return cv2.VideoCapture(source), True
    if not Path(source).is_file():
        raise FileNotFoundError(f"{source}: no such file")
    return cv2.VideoCapture(source), False


def _frames(cap: Any, max_frames: int | None, duration: float | None) -> Iterator[Any]:
    """Frames of `cap`, at most `max_frames` of them and for at most `duration` seconds of wall time."""
    end = time.monotonic() + duration if duration else math.inf
    count = 0
    while (max_frames is None or count < max_frames) and time.monotonic() < end:
        ok, frame = cap.read()
        if not ok:
            return
        count += 1
        yield frame


def cmd_video(args: argparse.Namespace) -> int:
    if args.every < 1 or args.detect_every < 1:
        _err("--every and --detect-every must be at least 1")
        return EXIT_ERROR
    try:
        cap, live = open_capture(args.input)
    except FileNotFoundError as exc:
        _err(str(exc))
        return EXIT_SOME_FAILED
    if not cap.isOpened():
        _err(f"{args.input}: not a video, camera or stream OpenCV can read")
        return EXIT_SOME_FAILED
    fps = cap.get(cv2.CAP_PROP_FPS) or 0.0
    fps = fps if math.isfinite(fps) and 0 < fps < 1000 else (None if live else 25.0)
    total = None if live else int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0) or None
    out_path = Path(args.out) if args.out else None
    writer = None
    failed = 0
    summary = TrackSummary()
    options = StreamOptions(detect_every=args.detect_every, smoothing=args.smoothing)
    try:
        with ExitStack() as stack:
            client = stack.enter_context(_client(args))
            client.wait_until_available(timeout=args.timeout)  # fail before any output is written
            out: Any = sys.stdout
            if out_path is not None:
                out = LazyFile(out_path)
                stack.callback(out.close)
            sink = CsvSink(out) if out_path is not None and out_path.suffix.lower() == ".csv" else None
            bar = stack.enter_context(tqdm(total=total, desc="frames", unit="frame", file=sys.stderr))
            tracker = FaceStream(client, options, fps=fps)
            faces: list[Face] = []
            for index, frame in enumerate(prefetch(_frames(cap, args.max_frames, args.duration), options.prefetch)):
                if index % args.every == 0:
                    try:
                        pred = tracker.process(frame, index)
                    except ModelNotFoundError:
                        raise  # every frame would fail the same way
                    except (RequestTimeoutError, ServerError, ServerUnavailableError) as exc:
                        failed += 1  # one slow or failed request costs its frame, not the run
                        _err(f"frame {index}: {exc}")
                        if sink is None:
                            out.write(json.dumps({"frame": index, "error": str(exc)}) + "\n")
                    else:
                        faces = pred.faces
                        summary.add(pred)
                        if sink is not None:
                            for row in pred.to_rows():
                                sink.add(row)
                        else:
                            out.write(pred.to_json() + "\n")
                if args.annotated:
                    if writer is None:
                        h, w = frame.shape[:2]
                        writer = cv2.VideoWriter(args.annotated, cv2.VideoWriter_fourcc(*"mp4v"), fps or 25.0, (w, h))
                        if not writer.isOpened():
                            raise EmotionAIError(f"cannot write {args.annotated}")
                    writer.write(draw_faces(frame, faces))
                bar.update(1)
            if sink is not None:
                sink.close()
    finally:
        cap.release()
        if writer is not None:
            writer.release()
    rows = summary.rows()
    for r in rows:
        _err(f"track {r['track_id']}: frames {r['first_frame']}-{r['last_frame']} ({r['frames']} analysed), "
             f"mostly {r['dominant']}")
    if args.summary:
        Path(args.summary).write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    if failed:
        _err(f"{failed} frame(s) failed (a larger --timeout gives each request more time)")
    return EXIT_SOME_FAILED if failed else EXIT_OK


# -- status ----------------------------------------------------------------------------------------
def cmd_status(args: argparse.Namespace) -> int:
    """Every model of the ladder (`spec.SERVED_MODELS`) and its versions; exit 0 when the models in use
    (the fast ones, or the accurate ones with `--accurate`) each have a version AVAILABLE."""
    with _client(args) as client:
        states = client.model_status()
        tasks = {ref.name: task for task, ref in client.models.items()}
    if args.json:
        doc = {
            name: {
                "model": name,
                "in_use": name in tasks,
                "versions": None if versions is None else [vars(v) | {"version": v.version} for v in versions],
            }
            for name, versions in states.items()
        }
        _out(json.dumps(doc, indent=2))
    else:
        for name, versions in states.items():
            use = f"\t(in use for {tasks[name]})" if name in tasks else ""
            if versions is None:
                _out(f"{name}: not served")
            elif not versions:
                _out(f"{name}: no versions{use}")
            for v in versions or ():
                err = f"  ({v.error_code}: {v.error_message})" if v.error_code != "OK" else ""
                _out(f"{name}\tversion {v.version}\t{v.state}{err}{use}")
    in_use = {name: versions or [] for name, versions in states.items() if name in tasks}
    return EXIT_OK if all_available(in_use) else EXIT_SOME_FAILED


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    commands = {"predict": cmd_predict, "video": cmd_video, "status": cmd_status}
    try:
        return commands[args.command](args)
    except EmotionAIError as exc:
        _err(f"error: {exc}")
        return EXIT_ERROR
    except KeyboardInterrupt:
        _err("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
