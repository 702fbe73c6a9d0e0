"""`emotion-ai` command line: predict (images), video (timeline with face tracks), status (models), gateway (API).

`--accurate` sends the faces to each task's accurate model (`emotion_accurate`) instead of the fast
default (`ClientOptions.variant`). Exit codes: 0 everything worked, 1 some inputs could not be read (or
a request for one failed), 2 usage or server errors (a usage error is one line on stderr). An input that
fails is reported on stderr and, with `--json` / `--csv` / `--out`, as an error record there.
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
from collections.abc import Generator, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack, closing
from dataclasses import dataclass, replace
from itertools import islice
from pathlib import Path
from typing import Any

import cv2
from tqdm import tqdm

from . import spec
from .cli_parser import EXIT_ERROR, EXIT_OK, EXIT_SOME_FAILED, build_parser
from .client import ClientOptions, EmotionClient
from .detect import DEFAULT_DETECTOR, THOROUGH_DETECTOR, FaceDetector, make_detector
from .errors import (
    EmotionAIError,
    InvalidImageError,
    ModelNotFoundError,
    RequestTimeoutError,
    ServerError,
    ServerUnavailableError,
)
from .merge import StagedImage
from .outputs import ERROR_KEY, CsvSink, LazyFile, annotated_path
from .result import Face, Prediction, draw_faces
from .streaming import FaceStream, StreamOptions, TrackSummary, prefetch
from .transport import ModelRef, all_available

IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".dib", ".gif", ".tif", ".tiff", ".webp"}
    | {".pgm", ".ppm", ".pbm", ".pnm", ".jp2", ".exr", ".hdr"}
)
#: `emotion-ai predict`: images staged (decoded, faces detected and cropped) ahead of the ones whose model
#: requests are in flight, by this many worker threads (cv2 and gRPC release the GIL, so the cores overlap).
PIPELINE_DEPTH = 8
STAGE_WORKERS = 2
#: `OPENCV_FFMPEG_LOGLEVEL` of `emotion-ai video` without --verbose: AV_LOG_QUIET, so an unreadable file
#: gives the CLI's one line, not FFmpeg's own messages too.
FFMPEG_QUIET = "-8"


def _out(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _err(message: str) -> None:
    tqdm.write(f"emotion-ai: {message}", file=sys.stderr)


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


def _client_options(args: argparse.Namespace) -> ClientOptions:
    """The client options the connection flags ask for (a combination `ClientOptions` refuses is a usage error)."""
    try:
        return ClientOptions(
            host=getattr(args, "server_host", None) or args.host,
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
    except ValueError as exc:
        raise EmotionAIError(str(exc)) from exc


def _client(args: argparse.Namespace) -> EmotionClient:
    """The client the flags ask for (a combination `ClientOptions` refuses is a usage error)."""
    options = _client_options(args)
    return EmotionClient.from_options(options, detector=_detector(args) if hasattr(args, "detector") else None)


def _connect(stack: ExitStack, args: argparse.Namespace) -> EmotionClient:
    """`_client(args)`, closed with `stack`, once the server has the models AVAILABLE: a command checks
    this before it creates any output, so a server that is down leaves no empty output behind.

    Raises:
        ServerUnavailableError: the models are not AVAILABLE within `--timeout` (the server is down,
            or does not serve what was asked).
        ModelNotFoundError: at once, for a pinned version or label the server does not serve.
    """
    client = stack.enter_context(_client(args))
    client.wait_until_available(timeout=args.timeout)
    return client


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
                workers: int = STAGE_WORKERS) -> Generator[Future[StagedImage], None, None]:
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
        except GeneratorExit:  # the caller stopped early (an error, or it closed the generator): drop the rest
            pool.shutdown(wait=True, cancel_futures=True)
            raise


@dataclass
class PredictOutputs:
    """Where `emotion-ai predict` reports each image: stdout (a JSON object or a summary line), the CSV rows and
    the annotated copy; an image that failed is an error record in the JSON and the CSV, and a line on stderr.

    Attributes:
        json: JSON objects on stdout (else a summary line per image).
        csv: the CSV rows, if asked for.
        out_dir: the folder of the annotated copies, if asked for.
    """

    json: bool = False
    csv: CsvSink | None = None
    out_dir: Path | None = None

    def add(self, pred: Prediction, relative: Path) -> None:
        """Report an image's prediction.

        Args:
            pred: what the client found.
            relative: the image's path relative to the folder it was found in (kept under `out_dir`).
        """
        _out(pred.to_json() if self.json else _summary(pred))
        if self.csv is not None:
            for row in pred.to_rows():
                self.csv.add(row)
        if self.out_dir is not None:
            pred.save(annotated_path(self.out_dir, relative))

    def fail(self, path: Path, error: str, note: str) -> None:
        """Report an image without a result.

        Args:
            path: the image.
            error: why (its JSON `error` and CSV error column).
            note: the stderr line, without the program's name.
        """
        _err(note)
        record = {"image": str(path), ERROR_KEY: error}
        if self.json:
            _out(json.dumps(record))
        if self.csv is not None:
            self.csv.add(record)


def cmd_predict(args: argparse.Namespace) -> int:
    files, had_dir = expand_inputs(args.inputs, args.recursive)
    if not files:
        _err("no image files to process")
        return EXIT_SOME_FAILED
    failed = 0
    with ExitStack() as stack:
        client = stack.enter_context(_client(args))  # flags a usage error first (exit 2); no request yet
        if not any(path.exists() for path, _ in files):  # a typo, not a server question: say so at once
            outputs = PredictOutputs(json=args.json)
            for path, _ in files:
                outputs.fail(path, f"{path}: no such file", f"skipped {path}: no such file")
            return EXIT_SOME_FAILED
        client.wait_until_available(timeout=args.timeout)  # as `_connect`: before any output is created
        outputs = PredictOutputs(json=args.json)
        if args.csv:
            stream = stack.enter_context(
                open(args.csv, "w", newline="", encoding="utf-8", errors="backslashreplace")
            )
            outputs.csv = CsvSink(stream)
            stack.callback(outputs.csv.close)  # runs before the file closes, also when the run stops early
        if args.annotate:
            outputs.out_dir = Path(args.annotate)
            outputs.out_dir.mkdir(parents=True, exist_ok=True)
        bar = stack.enter_context(
            tqdm(
                files, desc="images", unit="img", file=sys.stderr, disable=None if had_dir else True
            )
        )
        staged = stack.enter_context(closing(stage_ahead(client, [path for path, _ in files])))
        entries = enumerate(zip(bar, staged, strict=True))
        while group := list(islice(entries, args.batch_images)):
            answers = _predict_group(client, [future for _, (_, future) in group])
            for (index, ((path, relative), _)), answer in zip(group, answers, strict=True):
                if isinstance(answer, Prediction):
                    outputs.add(answer, relative)
                elif isinstance(answer, InvalidImageError):
                    failed += 1
                    text = str(answer)
                    outputs.fail(path, text, f"skipped {text}" if str(path) in text else f"skipped {path}: {text}")
                elif isinstance(answer, (ModelNotFoundError, ServerUnavailableError)):
                    # Every file would fail the same way: stop, and report the ones never sent as such.
                    outputs.fail(path, str(answer), f"failed {path}")
                    return _stop_predict(outputs, [p for p, _ in files[index + 1 :]], answer)
                else:
                    failed += 1
                    hint = " (a larger --timeout gives each request more time)" if isinstance(
                        answer, RequestTimeoutError) else ""
                    outputs.fail(path, str(answer), f"failed {path}: {answer}{hint}")
    return EXIT_SOME_FAILED if failed else EXIT_OK


def _predict_group(client: EmotionClient, futures: list[Future[StagedImage]]) -> list[Prediction | EmotionAIError]:
    """Per staged image of a group, in order: its prediction, or the error that its staging (an unreadable
    file) or its own model requests raised; the readable ones share one request per model."""
    answers: list[Prediction | EmotionAIError | None] = []
    ready: list[StagedImage] = []
    for future in futures:
        try:
            ready.append(future.result())
            answers.append(None)
        except InvalidImageError as exc:
            answers.append(exc)
    predicted = iter(client.predict_staged_group(ready) if ready else [])
    return [next(predicted) if answer is None else answer for answer in answers]


def _stop_predict(outputs: PredictOutputs, rest: list[Path], exc: EmotionAIError) -> int:
    """Report the images a stopped run never processed (each on stderr, and as an error record) and why."""
    for path in rest:
        outputs.fail(path, f"not processed: {exc}", f"not processed {path}")
    _err(f"error: {exc}" + (f"; {len(rest)} more file(s) not processed" if rest else ""))
    return EXIT_ERROR


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


def _frames(cap: Any, first: Any, max_frames: int | None, duration: float | None) -> Iterator[Any]:
    """`first` (the frame already read) and the next frames of `cap`, at most `max_frames` of them and for at
    most `duration` seconds of wall time."""
    end = time.monotonic() + duration if duration else math.inf
    frame, count = first, 0
    while (max_frames is None or count < max_frames) and time.monotonic() < end:
        if count:
            ok, frame = cap.read()
            if not ok:
                return
        count += 1
        yield frame


def cmd_video(args: argparse.Namespace) -> int:
    if args.every < 1 or args.detect_every < 1:
        _err("--every and --detect-every must be at least 1")
        return EXIT_ERROR
    if not args.verbose:
        os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", FFMPEG_QUIET)
    try:
        cap, live = open_capture(args.input)
    except FileNotFoundError as exc:
        _err(str(exc))
        return EXIT_SOME_FAILED
    first = cap.read()[1] if cap.isOpened() else None
    if first is None:  # not opened, or opened with no frame to decode (e.g. a text file named .jpg)
        cap.release()
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
            client = _connect(stack, args)
            out: Any = sys.stdout
            if out_path is not None:
                out = LazyFile(out_path)
                stack.callback(out.close)
            sink = CsvSink(out) if out_path is not None and out_path.suffix.lower() == ".csv" else None
            bar = stack.enter_context(tqdm(total=total, desc="frames", unit="frame", file=sys.stderr))
            tracker = FaceStream(client, options, fps=fps)
            faces: list[Face] = []
            frames = _frames(cap, first, args.max_frames, args.duration)
            for index, frame in enumerate(prefetch(frames, options.prefetch)):
                if index % args.every == 0:
                    try:
                        pred = tracker.process(frame, index)
                    except ModelNotFoundError:
                        raise  # every frame would fail the same way
                    except (RequestTimeoutError, ServerError, ServerUnavailableError) as exc:
                        failed += 1  # one slow or failed request costs its frame, not the run
                        _err(f"frame {index}: {exc}")
                        record = {"frame": index, ERROR_KEY: str(exc)}
                        if sink is None:
                            out.write(json.dumps(record) + "\n")
                        else:
                            sink.add(record)
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
                        writer = cv2.VideoWriter(args.annotated, cv2.VideoWriter.fourcc(*"mp4v"), fps or 25.0, (w, h))
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


# -- gateway ---------------------------------------------------------------------------------------
def cmd_gateway(args: argparse.Namespace) -> int:
    """Serve the analysis gateway (`emotion_ai.gateway`) until interrupted; exit 2 with one line when the
    gateway extra is not installed or a setting is invalid."""
    try:  # imported here: the thin client does not need FastAPI
        from .gateway import serve, settings_from_env  # noqa: PLC0415 -- the optional gateway extra (FastAPI)
    except ImportError as exc:
        _err(f"error: the gateway needs its extra: pip install 'emotion-ai[gateway]' ({exc})")
        return EXIT_ERROR
    fields: dict[str, Any] = {"client": _client_options(args), "detector": args.detector}
    for name in ("max_body_bytes", "max_pixels", "deadline", "max_concurrency"):
        if getattr(args, name) is not None:
            fields[name] = getattr(args, name)
    try:
        settings = settings_from_env(**fields)
        if args.api_keys_file:
            from .gateway.settings import read_api_keys  # noqa: PLC0415 -- the optional gateway extra

            settings = replace(settings, api_keys=settings.api_keys | read_api_keys(args.api_keys_file))
        if args.cors_origins:
            settings = replace(settings, cors_origins=(*settings.cors_origins, *args.cors_origins))
    except ValueError as exc:
        raise EmotionAIError(str(exc)) from exc
    if args.wait:  # here, not in the app's start: a server that stays down is one line and exit 2
        with EmotionClient.from_options(settings.client) as client:
            client.wait_until_available(timeout=args.wait)
    serve(settings, args.listen_host, args.port, log_level="debug" if args.verbose else "info",
          proxy_headers=args.proxy_headers)
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    commands = {"predict": cmd_predict, "video": cmd_video, "status": cmd_status, "gateway": cmd_gateway}
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
