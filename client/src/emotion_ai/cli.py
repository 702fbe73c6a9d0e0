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
import sys
from dataclasses import replace
from typing import Any

from . import cli_support
from .cli_parser import EXIT_ERROR, EXIT_OK, EXIT_SOME_FAILED, build_parser
from .cli_predict import cmd_predict
from .cli_support import err, out
from .cli_video import cmd_video
from .client import EmotionClient
from .errors import EmotionAIError
from .transport import all_available


# -- status ----------------------------------------------------------------------------------------
def cmd_status(args: argparse.Namespace) -> int:
    """Every model of the ladder (`spec.SERVED_MODELS`) and its versions; exit 0 when the models in use
    (the fast ones, or the accurate ones with `--accurate`) each have a version AVAILABLE."""
    with cli_support.client_from_args(args) as client:
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
        out(json.dumps(doc, indent=2))
    else:
        for name, versions in states.items():
            use = f"\t(in use for {tasks[name]})" if name in tasks else ""
            if versions is None:
                out(f"{name}: not served")
            elif not versions:
                out(f"{name}: no versions{use}")
            for v in versions or ():
                problem = f"  ({v.error_code}: {v.error_message})" if v.error_code != "OK" else ""
                out(f"{name}\tversion {v.version}\t{v.state}{problem}{use}")
    in_use = {name: versions or [] for name, versions in states.items() if name in tasks}
    return EXIT_OK if all_available(in_use) else EXIT_SOME_FAILED


# -- gateway ---------------------------------------------------------------------------------------
def cmd_gateway(args: argparse.Namespace) -> int:
    """Serve the analysis gateway (`emotion_ai.gateway`) until interrupted; exit 2 with one line when the
    gateway extra is not installed or a setting is invalid."""
    try:  # imported here: the thin client does not need FastAPI
        from .gateway import serve, settings_from_env  # noqa: PLC0415 -- the optional gateway extra (FastAPI)
    except ImportError as exc:
        err(f"error: the gateway needs its extra: pip install 'emotion-ai[gateway]' ({exc})")
        return EXIT_ERROR
    fields: dict[str, Any] = {"client": cli_support.client_options_from_args(args), "detector": args.detector}
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
        err(f"error: {exc}")
        return EXIT_ERROR
    except KeyboardInterrupt:
        err("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
