"""`emotion-ai-serve`: tensorflow_model_server's flags, plus --host and --models_root."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from emotion_ai.spec import use_onednn

from .config import ServerOptions
from .errors import ServingError
from .logs import setup_logging

log = logging.getLogger("emotion_ai_serving")


def _bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def build_parser() -> argparse.ArgumentParser:
    d = ServerOptions()
    p = argparse.ArgumentParser(
        prog="emotion-ai-serve",
        description="Serve SavedModels with TensorFlow Serving's REST and gRPC APIs "
        "(flags as tensorflow_model_server; --flag=value or --flag value).",
    )
    add = p.add_argument
    add("--port", type=int, default=d.port, help="gRPC port (0 disables gRPC)")
    add("--rest_api_port", type=int, default=d.rest_api_port, help="REST port (0 disables REST)")
    add("--host", default=d.host, help="interface to bind (default loopback only)")
    add("--model_config_file", default=None, help="ModelServerConfig text proto")
    add("--model_name", default=d.model_name, help="single-model mode: served name")
    add("--model_base_path", default=None, help="single-model mode: dir holding version dirs")
    add(
        "--models_root",
        default=None,
        help="local dir that stands for --models_mount in config base paths "
        "(e.g. ./models_export for /models)",
    )
    add("--models_mount", default=d.models_mount, help="container path remapped by --models_root")
    add("--file_system_poll_wait_seconds", type=float, default=d.file_system_poll_wait_seconds)
    add(
        "--model_config_file_poll_wait_seconds",
        type=float,
        default=d.model_config_file_poll_wait_seconds,
    )
    add("--rest_api_timeout_in_ms", type=int, default=d.rest_api_timeout_in_ms)
    add("--rest_api_num_threads", type=int, default=d.rest_api_num_threads)
    add("--enable_batching", type=_bool, nargs="?", const=True, default=d.enable_batching)
    add("--batching_parameters_file", default=None)
    add("--monitoring_config_file", default=None)
    add("--enable_model_warmup", type=_bool, nargs="?", const=True, default=d.enable_model_warmup)
    add(
        "--allow_version_labels_for_unavailable_models",
        type=_bool,
        nargs="?",
        const=True,
        default=d.allow_version_labels_for_unavailable_models,
    )
    add("--max_num_load_retries", type=int, default=d.max_num_load_retries)
    add("--load_retry_interval_micros", type=int, default=d.load_retry_interval_micros)
    add(
        "--max_request_bytes",
        type=int,
        default=d.max_request_bytes,
        help="REST body / gRPC message cap (413 / RESOURCE_EXHAUSTED above it)",
    )
    add("--shutdown_grace_seconds", type=float, default=d.shutdown_grace_seconds)
    add("--log_format", choices=("json", "text"), default=d.log_format)
    add("--log_level", default="INFO")
    return p


def parse_options(argv: Sequence[str] | None = None) -> tuple[ServerOptions, str]:
    args = vars(build_parser().parse_args(argv))
    level = args.pop("log_level")
    return ServerOptions(**args), level


def main(argv: Sequence[str] | None = None) -> int:
    options, level = parse_options(argv)
    setup_logging(options.log_format, getattr(logging, level.upper(), logging.INFO))
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TF's C++ INFO lines out of the logs
    use_onednn()  # the int8 models' kernels, on every CPU (before TensorFlow starts)
    from .server import ModelServer  # noqa: PLC0415 -- --help and config errors answer without loading TensorFlow

    try:
        server = ModelServer(options)
        server.serve_until_signal()
    except (ServingError, OSError) as exc:
        log.error(f"Failed to start server. Error: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
