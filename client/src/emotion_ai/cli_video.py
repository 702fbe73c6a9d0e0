"""`emotion-ai video`: a per-frame timeline of a video file, camera or stream, with face tracks."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import cv2
from tqdm import tqdm

from . import cli_support
from .cli_parser import EXIT_ERROR, EXIT_OK, EXIT_SOME_FAILED
from .cli_support import err
from .errors import EmotionAIError, ModelNotFoundError, RequestTimeoutError, ServerError, ServerUnavailableError
from .outputs import ERROR_KEY, CsvSink, LazyFile
from .result import Face, draw_faces
from .streaming import FaceStream, StreamOptions, TrackSummary, prefetch

#: `OPENCV_FFMPEG_LOGLEVEL` of `emotion-ai video` without --verbose: AV_LOG_QUIET, so an unreadable file
#: gives the CLI's one line, not FFmpeg's own messages too.
FFMPEG_QUIET = "-8"


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
        err("--every and --detect-every must be at least 1")
        return EXIT_ERROR
    if not args.verbose:
        os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", FFMPEG_QUIET)
    try:
        cap, live = open_capture(args.input)
    except FileNotFoundError as exc:
        err(str(exc))
        return EXIT_SOME_FAILED
    first = cap.read()[1] if cap.isOpened() else None
    if first is None:  # not opened, or opened with no frame to decode (e.g. a text file named .jpg)
        cap.release()
        err(f"{args.input}: not a video, camera or stream OpenCV can read")
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
            client = cli_support.connect(stack, args)
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
                        err(f"frame {index}: {exc}")
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
        err(f"track {r['track_id']}: frames {r['first_frame']}-{r['last_frame']} ({r['frames']} analysed), "
             f"mostly {r['dominant']}")
    if args.summary:
        Path(args.summary).write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    if failed:
        err(f"{failed} frame(s) failed (a larger --timeout gives each request more time)")
    return EXIT_SOME_FAILED if failed else EXIT_OK

