"""Helpers shared by the benchmark commands: which server to use, which model version, where results go."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from emotion_ai import spec
from emotion_ai_serving.local_server import LocalServer

REPO = Path(__file__).resolve().parents[1]

# The int8 versions run on oneDNN's kernels: the scripts that load models in-process import this module
# before TensorFlow, so oneDNN is on for them on every CPU (unless TF_ENABLE_ONEDNN_OPTS is set already).
spec.use_onednn()


def add_server_args(p: argparse.ArgumentParser) -> None:
    """--models to start an embedded server on free ports, or --no-server and where one runs."""
    p.add_argument("--models", type=Path, default=REPO / "models_export", help="export root to serve")
    p.add_argument("--no-server", action="store_true", help="use a server that is already running")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--grpc-port", type=int, default=spec.GRPC_PORT)
    p.add_argument("--rest-port", type=int, default=spec.REST_PORT)


@contextmanager
def server_endpoint(args: argparse.Namespace) -> Iterator[tuple[str, int, int]]:
    """(host, gRPC port, REST port) of the server `add_server_args` chose; a started one is stopped after."""
    if args.no_server:
        yield args.host, args.grpc_port, args.rest_port
        return
    with LocalServer(args.models) as server:
        yield "127.0.0.1", server.grpc_port, server.rest_port


def throwaway_venv(name: str, installs: list[list[str]], probe: str, expected: str) -> Path:
    """The Python of a venv at .cache/<name> (kept for the next run), made by this interpreter's `venv`.

    Unless `python -c probe` already prints `expected` there, each entry of `installs` (pip install arguments)
    is run in order, e.g. `[["tensorflow-cpu==2.20.0"]]`, or a `--no-deps` step after the dependencies.
    """
    venv = REPO / ".cache" / name
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    found = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, check=False)
    if found.stdout.strip() != expected:
        for args in installs:
            subprocess.run([str(python), "-m", "pip", "install", "-q", *args], check=True)
    return python


def display_path(path: Path, repo: Path) -> str:
    """`path` relative to the repository when it lies inside it (for result tables), else as given."""
    resolved = path.resolve()
    return str(resolved.relative_to(repo) if resolved.is_relative_to(repo) else path)


def write_results(out: Path, stem: str, doc: dict, markdown: Callable[[dict], str]) -> None:
    """Write `<stem>.json` and `<stem>.md` into `out` and echo the markdown table."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(doc, indent=2) + "\n")
    text = markdown(doc)
    (out / f"{stem}.md").write_text(text)
    sys.stdout.write(text)
