"""What the `emotion-ai` commands share: their output lines, and the detector and client their flags ask for."""

from __future__ import annotations

import argparse
import sys
from contextlib import ExitStack

from tqdm import tqdm

from . import spec
from .client import ClientOptions, EmotionClient
from .detect import DEFAULT_DETECTOR, THOROUGH_DETECTOR, FaceDetector, make_detector
from .errors import EmotionAIError
from .transport import ModelRef


def out(line: str) -> None:
    """Write one line of a command's output to stdout, at once."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def err(message: str) -> None:
    """Write one message line to stderr, prefixed with the program's name (above a progress bar, if any)."""
    tqdm.write(f"emotion-ai: {message}", file=sys.stderr)


def detector_from_args(args: argparse.Namespace) -> FaceDetector:
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


def client_options_from_args(args: argparse.Namespace) -> ClientOptions:
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


def client_from_args(args: argparse.Namespace) -> EmotionClient:
    """The client the flags ask for (a combination `ClientOptions` refuses is a usage error)."""
    options = client_options_from_args(args)
    return EmotionClient.from_options(options, detector=detector_from_args(args) if hasattr(args, "detector") else None)


def connect(stack: ExitStack, args: argparse.Namespace) -> EmotionClient:
    """`client_from_args(args)`, closed with `stack`, once the server has the models AVAILABLE: a command checks
    this before it creates any output, so a server that is down leaves no empty output behind.

    Raises:
        ServerUnavailableError: the models are not AVAILABLE within `--timeout` (the server is down,
            or does not serve what was asked).
        ModelNotFoundError: at once, for a pinned version or label the server does not serve.
    """
    client = stack.enter_context(client_from_args(args))
    client.wait_until_available(timeout=args.timeout)
    return client

