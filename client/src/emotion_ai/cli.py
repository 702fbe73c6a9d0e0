"""`emotion-ai` command line: predict (images), video (timeline with face tracks), status (models).

Exit codes: 0 everything worked, 1 some inputs could not be read, 2 usage or server errors.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import os
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import IO, Any

import cv2
from tqdm import tqdm

from . import __version__, spec
from .client import ClientOptions, EmotionClient
from .errors import EmotionAIError, InvalidImageError, ModelNotFoundError, RequestTimeoutError, ServerError
from .result import Face, Prediction, draw_faces
from .tracking import IoUTracker
from .transport import ModelRef, all_available

IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".dib", ".gif", ".tif", ".tiff", ".webp"}
    | {".pgm", ".ppm", ".pbm", ".pnm", ".jp2", ".exr", ".hdr"}
)
EXIT_OK, EXIT_SOME_FAILED, EXIT_ERROR = 0, 1, 2


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
    m = conn.add_argument_group("models (default: the newest version the server serves)")
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

    p = sub.add_parser("predict", parents=[conn], help="analyse images or folders of images")
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR")
    p.add_argument("--json", action="store_true", help="one JSON object per image on stdout")
    p.add_argument("--csv", metavar="FILE", help="write one row per face to FILE")
    p.add_argument("--annotate", metavar="OUT_DIR",
                   help="write annotated images to OUT_DIR (relative paths kept, nothing overwritten)")
    p.add_argument("--recursive", "-r", action="store_true", help="also search the folders' subfolders")

    v = sub.add_parser(
        "video", parents=[conn], help="per-frame timeline of a video with face tracks"
    )
    v.add_argument("input", metavar="IN")
    v.add_argument(
        "--out", metavar="FILE", help="timeline .csv or .jsonl (default: JSON lines on stdout)"
    )
    v.add_argument("--annotated", metavar="OUT.mp4", help="write an annotated video")
    v.add_argument(
        "--every", type=int, default=1, metavar="N", help="analyse every Nth frame (default: 1)"
    )

    s = sub.add_parser("status", parents=[conn], help="models and versions on the server")
    s.add_argument("--json", action="store_true", help="print the status as JSON")
    return parser


def _client(args: argparse.Namespace) -> EmotionClient:
    return EmotionClient(
        host=args.host,
        protocol=args.protocol,
        grpc_port=args.grpc_port,
        rest_port=args.rest_port,
        timeout=args.timeout,
        endpoints=tuple(args.endpoints or ()),
        models={key: ModelRef(key, version=getattr(args, f"{key}_version"), version_label=getattr(args, f"{key}_label"))
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


_WRITABLE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def annotated_path(out_dir: Path, relative: Path) -> Path:
    """Where the annotated copy of an input goes: its relative path under `out_dir`, in its own format
    where OpenCV writes it (else `<name>.jpg`), never over an existing file (`-1`, `-2`, ... added)."""
    name = relative.name if relative.suffix.lower() in _WRITABLE_SUFFIXES else relative.name + ".jpg"
    target = out_dir / relative.parent / name
    n = 0
    while target.exists():
        n += 1
        target = out_dir / relative.parent / f"{Path(name).stem}-{n}{Path(name).suffix}"
    target.parent.mkdir(parents=True, exist_ok=True)
    return target


def face_row(face: Face, labels: list[str]) -> dict[str, Any]:
    """Flat CSV fields of one face: box, score, emotion, score_<label>, <keypoint>_x/_y."""
    row: dict[str, Any] = dict(
        zip(("x", "y", "w", "h"), (round(v, 2) for v in face.box), strict=True)
    )
    row["detection_score"] = round(face.detection_score, 4)
    row["emotion"] = face.emotion
    for label in labels:
        row[f"score_{label}"] = round(face.scores.get(label, math.nan), 6)
    for name in spec.KEYPOINT_NAMES:
        x, y = face.keypoints[name]
        row[f"{name}_x"], row[f"{name}_y"] = round(x, 2), round(y, 2)
    return row


class CsvSink:
    """Rows of `lead` columns + face columns; the header waits for the first face's labels."""

    def __init__(self, stream: IO[str], lead: list[str]):
        self.stream = stream
        self.lead = lead
        self._writer: csv.DictWriter | None = None
        self._labels: list[str] = []
        self._pending: list[dict[str, Any]] = []

    def add(self, lead: dict[str, Any], face: Face | None) -> None:
        if face is not None and self._writer is None:
            self._labels = list(face.scores)
            self._open()
        row = dict(lead)
        if face is not None:
            row.update(face_row(face, self._labels))
        if self._writer is None:
            self._pending.append(row)
        else:
            self._writer.writerow(row)

    def _open(self) -> None:
        fields = [*self.lead, "x", "y", "w", "h", "detection_score", "emotion"]
        fields += [f"score_{label}" for label in self._labels] + list(spec.KEYPOINT_COLUMNS)
        self._writer = csv.DictWriter(self.stream, fieldnames=fields, extrasaction="ignore")
        self._writer.writeheader()
        for row in self._pending:
            self._writer.writerow(row)
        self._pending.clear()

    def close(self) -> None:
        if self._writer is None:
            self._open()


def _summary(pred: Prediction) -> str:
    if not pred.faces:
        return f"{pred.source}: no face"
    parts = [
        f"{f.emotion} {f.scores.get(f.emotion, 0.0):.2f} at {[round(v) for v in f.box]}"
        for f in pred.faces
    ]
    return f"{pred.source}: {len(pred.faces)} face(s): " + "; ".join(parts)


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
            sink = CsvSink(stream, ["image", "face"])
        out_dir = Path(args.annotate) if args.annotate else None
        if out_dir is not None:
            out_dir.mkdir(parents=True, exist_ok=True)
        bar = stack.enter_context(
            tqdm(
                files, desc="images", unit="img", file=sys.stderr, disable=None if had_dir else True
            )
        )
        for path, relative in bar:
            try:
                pred = client.predict(path)
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
                if pred.faces:
                    for i, face in enumerate(pred.faces):
                        sink.add({"image": str(path), "face": i}, face)
                else:
                    sink.add({"image": str(path), "face": ""}, None)
            if out_dir is not None:
                pred.save(annotated_path(out_dir, relative))
        if sink is not None:
            sink.close()
    return EXIT_SOME_FAILED if failed else EXIT_OK


# -- video -----------------------------------------------------------------------------------------
def _frames(cap: Any) -> Iterator[Any]:
    while True:
        ok, frame = cap.read()
        if not ok:
            return
        yield frame


def cmd_video(args: argparse.Namespace) -> int:
    if args.every < 1:
        _err("--every must be at least 1")
        return EXIT_ERROR
    if not Path(args.input).is_file():
        _err(f"{args.input}: no such file")
        return EXIT_SOME_FAILED
    cap = cv2.VideoCapture(args.input)
    if not cap.isOpened():
        _err(f"{args.input}: not a video OpenCV can read")
        return EXIT_SOME_FAILED
    fps = cap.get(cv2.CAP_PROP_FPS) or 0.0
    fps = fps if math.isfinite(fps) and fps > 0 else 25.0
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0) or None
    out_path = Path(args.out) if args.out else None
    fmt = "csv" if out_path is not None and out_path.suffix.lower() == ".csv" else "jsonl"
    tracker = IoUTracker(max_age=max(3, 10 // args.every))
    writer = None
    try:
        with ExitStack() as stack:
            client = stack.enter_context(_client(args))
            stream: IO[str] = (
                stack.enter_context(open(out_path, "w", newline="", encoding="utf-8"))
                if out_path is not None
                else sys.stdout
            )
            sink = CsvSink(stream, ["frame", "time", "track_id"]) if fmt == "csv" else None
            bar = stack.enter_context(
                tqdm(total=total, desc="frames", unit="frame", file=sys.stderr)
            )
            faces: list[Face] = []
            labels: list[str] = []
            for index, frame in enumerate(_frames(cap)):
                if index % args.every == 0:
                    pred = client.predict(frame)
                    faces = pred.faces
                    ids = tracker.update([f.box for f in faces])
                    labels = [
                        f"#{i} {f.emotion} {f.scores.get(f.emotion, 0):.2f}"
                        for i, f in zip(ids, faces, strict=True)
                    ]
                    t = round(index / fps, 4)
                    for tid, face in zip(ids, faces, strict=True):
                        lead = {"frame": index, "time": t, "track_id": tid}
                        if sink is not None:
                            sink.add(lead, face)
                        else:
                            stream.write(json.dumps({**lead, **face.to_dict()}) + "\n")
                if args.annotated:
                    if writer is None:
                        h, w = frame.shape[:2]
                        writer = cv2.VideoWriter(
                            args.annotated, cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h)
                        )
                        if not writer.isOpened():
                            raise EmotionAIError(f"cannot write {args.annotated}")
                    writer.write(draw_faces(frame, faces, labels))
                bar.update(1)
            if sink is not None:
                sink.close()
    finally:
        cap.release()
        if writer is not None:
            writer.release()
    return EXIT_OK


# -- status ----------------------------------------------------------------------------------------
def cmd_status(args: argparse.Namespace) -> int:
    with _client(args) as client:
        states = client.status()
    if args.json:
        doc = {
            key: {
                "model": client.models[key].name,
                "versions": [vars(v) | {"version": v.version} for v in versions],
            }
            for key, versions in states.items()
        }
        _out(json.dumps(doc, indent=2))
    else:
        for key, versions in states.items():
            name = client.models[key].name
            if not versions:
                _out(f"{name}: no versions")
            for v in versions:
                err = f"  ({v.error_code}: {v.error_message})" if v.error_code != "OK" else ""
                _out(f"{name}\tversion {v.version}\t{v.state}{err}")
    return EXIT_OK if all_available(states) else EXIT_SOME_FAILED


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
