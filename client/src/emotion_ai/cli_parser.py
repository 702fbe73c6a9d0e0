"""What `emotion-ai` accepts: its argument parser, the argparse types of its values, and the defaults its server
flags take from the EMOTION_AI_* environment. Usage errors are one line on stderr and exit status 2."""

from __future__ import annotations

import argparse
import functools
import inspect
import math
import os
import sys
from collections.abc import Callable
from typing import NoReturn, TypeVar, cast

from . import __version__, spec
from .client import ClientOptions
from .detect import DEFAULT_DETECTOR, DETECTORS, THOROUGH_DETECTOR
from .options import PROTOCOLS, Protocol_, check_endpoint, check_host, check_port
from .outputs import ERROR_KEY
from .streaming import StreamOptions

#: Exit statuses: everything worked; some inputs failed; a usage or server error.
EXIT_OK, EXIT_SOME_FAILED, EXIT_ERROR = 0, 1, 2
#: `emotion-ai gateway`'s default address.
GATEWAY_HOST, GATEWAY_PORT = "127.0.0.1", 8000

T = TypeVar("T")


class _Parser(argparse.ArgumentParser):
    """argparse whose usage errors are one line on stderr (no usage block), exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_ERROR, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _arg_type(convert: Callable[[str], T]) -> Callable[[str], T]:
    """`convert` as an argparse `type` whose ValueError message argparse shows (it hides a ValueError's)."""

    @functools.wraps(convert)
    def parse(text: str) -> T:
        try:
            return convert(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return parse


def _number(text: str, kind: Callable[[str], T]) -> T:
    """`text` as an int or a finite float."""
    try:
        value = kind(text)
    except ValueError:
        raise ValueError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
    if not math.isfinite(value):  # type: ignore[arg-type]
        raise ValueError(f"{text!r} is not a finite number")
    return value


def _bounded(kind: Callable[[str], T], allowed: Callable[[T], bool], rule: str) -> Callable[[str], T]:
    """An argparse `type`: `text` as `kind` (`_number`), refused unless `allowed` ("must be {rule}, not {text}")."""

    def convert(text: str) -> T:
        value = _number(text, kind)
        if not allowed(value):
            raise ValueError(f"must be {rule}, not {text}")
        return value

    return _arg_type(convert)


_positive_int = _bounded(int, lambda v: v >= 1, "at least 1")
_positive_float = _bounded(float, lambda v: v > 0, "more than 0")
_non_negative_float = _bounded(float, lambda v: v >= 0, "0 or more")


@_arg_type
def _port(text: str) -> int:
    return check_port(_number(text, int))


@_arg_type
def _protocol(text: str) -> Protocol_:
    if text not in PROTOCOLS:
        raise ValueError(f"{text!r} is not one of {', '.join(PROTOCOLS)}")
    return cast("Protocol_", text)


_host = _arg_type(check_host)
_endpoint = _arg_type(check_endpoint)


def _env(name: str, parse: Callable[[str], T], default: T) -> T:
    """Environment variable `name` parsed by the argparse type `parse`, or `default` when it is not set.

    Raises:
        SystemExit: status 2, after one line on stderr, for a value `parse` refuses.
    """
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        return parse(value)
    except argparse.ArgumentTypeError as exc:
        sys.stderr.write(f"emotion-ai: error: {name}={value!r}: {exc}\n")
        raise SystemExit(EXIT_ERROR) from None


def _detector_defaults(knob: str) -> str:
    """`knob`'s default in each detector class that has it, e.g. "yunet 10, mtcnn 20, haar 30"."""
    found = []
    for name, cls in DETECTORS.items():
        param = inspect.signature(cls).parameters.get("min_size" if (name, knob) == ("haar", "min_face_size")
                                                      else knob)
        if param is not None:
            found.append(f"{name} {param.default:g}")
    return ", ".join(found)


def _connection_parser(with_host: bool = True) -> _Parser:
    """The server and model flags every command shares; their defaults come from the EMOTION_AI_* environment.

    Args:
        with_host: add `--host` (the `gateway` command takes `--host` for its own address and reaches the
            model server at EMOTION_AI_HOST or `--endpoint`).

    Returns:
        A parent parser (no help of its own).

    Raises:
        SystemExit: status 2, after one line on stderr, for an invalid EMOTION_AI_* value.
    """
    conn = _Parser(add_help=False)
    g = conn.add_argument_group("server")
    d = ClientOptions  # the one place the connection defaults are defined
    host, protocol = _env("EMOTION_AI_HOST", _host, d.host), _env("EMOTION_AI_PROTOCOL", _protocol, d.protocol)
    grpc_port, rest_port = _env("EMOTION_AI_GRPC_PORT", _port, d.grpc_port), _env("EMOTION_AI_REST_PORT", _port,
                                                                                 d.rest_port)
    if with_host:
        g.add_argument("--host", type=_host, default=host, help=f"server host (env EMOTION_AI_HOST; default: {host})")
    else:
        conn.set_defaults(server_host=host)
    g.add_argument("--protocol", choices=PROTOCOLS, default=protocol,
                   help=f"env EMOTION_AI_PROTOCOL; default: {protocol}")
    g.add_argument("--grpc-port", type=_port, default=grpc_port, metavar="PORT",
                   help=f"1..65535 (env EMOTION_AI_GRPC_PORT; default: {grpc_port})")
    g.add_argument("--rest-port", type=_port, default=rest_port, metavar="PORT",
                   help=f"1..65535 (env EMOTION_AI_REST_PORT; default: {rest_port})")
    g.add_argument(
        "--endpoint", action="append", dest="endpoints", metavar="HOST:PORT", type=_endpoint,
        help="a replica of the chosen protocol (repeat for several: round robin with failover; "
        f"gRPC also takes dns:///name:port); replaces {'--host' if with_host else 'EMOTION_AI_HOST'} and the port",
    )
    g.add_argument("--timeout", type=_positive_float, default=d.timeout, metavar="SECONDS",
                   help=f"seconds per server call, > 0 (default: {d.timeout:g})")
    m = conn.add_argument_group("models (default: the fast models, newest version the server serves)")
    m.add_argument("--accurate", dest="variant", action="store_const", const=spec.ACCURATE, default=d.variant,
                   help="use each task's accurate model where the server has one (emotion -> emotion_accurate: "
                   "slower, more accurate); the version flags then pin that model's versions")
    for key in (spec.KEYPOINTS_MODEL, spec.EMOTION_MODEL):
        one = m.add_mutually_exclusive_group()
        one.add_argument(f"--{key}-version", type=_positive_int, metavar="N", help=f"pin {key} version N (>= 1)")
        one.add_argument(f"--{key}-label", metavar="LABEL", help=f"use {key}'s version label (e.g. stable)")

    return conn


def build_parser() -> argparse.ArgumentParser:
    """The `emotion-ai` argument parser; its server defaults come from the EMOTION_AI_* environment.

    Returns:
        The parser (its usage errors are one line on stderr, exit status 2).

    Raises:
        SystemExit: status 2, after one line on stderr, for an invalid EMOTION_AI_* value.
    """
    conn = _connection_parser()
    parser = _Parser(prog="emotion-ai", description="Face keypoints and facial expressions via TF Serving.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    det = _Parser(add_help=False)
    g = det.add_argument_group("face detector")
    g.add_argument("--detector", metavar="NAME",
                   help=f"{' | '.join(DETECTORS)} | yunet:MODEL.onnx (default: {DEFAULT_DETECTOR}, its model ships "
                   "with the package)")
    g.add_argument("--min-face-size", type=float, metavar="PX",
                   help="smallest face reported: the longer side of the detector's box, in pixels of the original "
                   "image (haar: the side of its smallest square search window, rounded to whole pixels); "
                   f"> 0 (default: {_detector_defaults('min_face_size')})")
    g.add_argument("--max-side", type=int, metavar="PX",
                   help="detect on a copy whose longer side is at most this many pixels (boxes are mapped back to "
                   "the original image; faces under about 10-12 px in that copy are lost); >= 32 (default: "
                   f"{_detector_defaults('max_side')})")
    g.add_argument("--min-score", type=float, metavar="SCORE",
                   help=f"detection score a face needs, in [0, 1] (default: {_detector_defaults('min_score')}); "
                   "yunet also keeps a face it scores lower, from its candidate_score, when MTCNN's O-Net vouches "
                   "for it (YuNetFaceDetector(verify_score=None) in Python turns that off)")
    g.add_argument("--no-tilt-search", dest="tilts", action="store_const", const=(),
                   help="mtcnn: skip the ±25° turned looks (detection in about a third of the time, "
                   "fewer tilted faces found)")
    g.add_argument("--thorough", action="store_true",
                   help=f"search thoroughly: the {THOROUGH_DETECTOR} detector with its turned looks, which finds the "
                   "small, tilted and dark faces the default misses, at about 6x its detection time")

    p = sub.add_parser("predict", parents=[conn, det], help="analyse images or folders of images")
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR")
    p.add_argument("--json", action="store_true",
                   help=f'one JSON object per image on stdout ({{"image": ..., "{ERROR_KEY}": ...}} for one that '
                   "failed)")
    p.add_argument("--csv", metavar="FILE",
                   help=f"write one row per face to FILE (a failed image: a row with its {ERROR_KEY} column set)")
    p.add_argument("--annotate", metavar="OUT_DIR",
                   help="write annotated images to OUT_DIR (relative paths kept, nothing overwritten)")
    p.add_argument("--recursive", "-r", action="store_true", help="also search the folders' subfolders")
    p.add_argument("--batch-images", type=_positive_int, default=ClientOptions.batch_images, metavar="N",
                   help="the faces of N consecutive images share one request per model (bigger batches cost less "
                   f"per face; default: {ClientOptions.batch_images})")

    v = sub.add_parser("video", parents=[conn, det], help="per-frame timeline of a video with face tracks")
    v.add_argument("input", metavar="IN", help="video file, camera index (0) or stream URL (rtsp://...)")
    v.add_argument("--out", metavar="FILE", help="timeline .csv (a row per face) or .jsonl (an object per frame); "
                   f"a failed frame has an {ERROR_KEY} (default: JSON lines on stdout)")
    v.add_argument("--annotated", metavar="OUT.mp4", help="write an annotated video")
    v.add_argument("--every", type=int, default=1, metavar="N", help="analyse every Nth frame (default: 1)")
    s_opts = StreamOptions()
    v.add_argument("--detect-every", type=int, default=s_opts.detect_every, metavar="N",
                   help=f"run the detector every N frames, "
                   f"follow faces by their keypoints on every frame (default: {s_opts.detect_every})")
    v.add_argument("--smoothing", type=_non_negative_float, default=s_opts.smoothing, metavar="SECONDS",
                   help=f"time constant of the per-track score smoothing, 0 for none (default: {s_opts.smoothing:g})")
    v.add_argument("--max-frames", type=_positive_int, metavar="N", help="stop after N frames")
    v.add_argument("--duration", type=_positive_float, metavar="SECONDS", help="stop after this much wall time")
    v.add_argument("--summary", metavar="FILE.json", help="also write the per-track summary as JSON")

    s = sub.add_parser("status", parents=[conn], help="models and versions on the server")
    s.add_argument("--json", action="store_true", help="print the status as JSON")

    gw = sub.add_parser(
        "gateway", parents=[_connection_parser(with_host=False)],
        help="serve the HTTP/WebSocket analysis API (needs the gateway extra: pip install 'emotion-ai[gateway]')",
        description="Serve the analysis gateway. The model server is EMOTION_AI_HOST (default localhost) at "
        "--grpc-port, or the --endpoint replicas; --host and --port are the gateway's own address.")
    a = gw.add_argument_group("gateway")
    a.add_argument("--host", dest="listen_host", type=_host, default=GATEWAY_HOST, metavar="HOST",
                   help=f"address to listen on (0.0.0.0: every interface; default: {GATEWAY_HOST})")
    a.add_argument("--port", type=_port, default=GATEWAY_PORT, help=f"port to listen on (default: {GATEWAY_PORT})")
    a.add_argument("--detector", choices=tuple(DETECTORS), default=DEFAULT_DETECTOR,
                   help=f"default face detector (requests may pick another; default: {DEFAULT_DETECTOR})")
    a.add_argument("--api-keys-file", metavar="FILE",
                   help="accepted bearer tokens, one per line (also env EMOTION_AI_GATEWAY_API_KEYS_FILE, and "
                   "EMOTION_AI_GATEWAY_API_KEYS: tokens separated by commas); none: no authentication")
    a.add_argument("--cors-origin", action="append", dest="cors_origins", metavar="ORIGIN",
                   help="an origin browsers may call the gateway from (repeat; env EMOTION_AI_GATEWAY_CORS_ORIGINS)")
    a.add_argument("--max-body-bytes", type=_positive_int, metavar="N", help="largest request body (default: 20 MiB)")
    a.add_argument("--max-pixels", type=_positive_int, metavar="N",
                   help="largest image, width x height (default: 40 million)")
    a.add_argument("--deadline", type=_positive_float, metavar="SECONDS",
                   help="time allowed for a request's analysis (default: 30)")
    a.add_argument("--max-concurrency", type=_positive_int, metavar="N",
                   help="requests analysed at once; more get 503 with Retry-After (default: 8)")
    a.add_argument("--wait", type=_non_negative_float, default=0.0, metavar="SECONDS",
                   help="before serving, wait up to this long for both models to be AVAILABLE and exit 2 if they "
                   "are not (default: 0: serve at once; /readyz tells when they are)")
    a.add_argument("--proxy-headers", action="store_true", help="trust X-Forwarded-* (behind a reverse proxy)")
    return parser
