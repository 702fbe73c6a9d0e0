"""Start the project's embedded server (`emotion-ai-serve`, from the serving package) for local use.

    with LocalServer("models_export") as server:
        with server.client("grpc") as client:
            print(client.predict("photo.jpg").faces)

Only needed for development, tests and benchmarks; the client itself talks to any TF Serving.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import spec
from .client import EmotionClient
from .errors import EmotionAIError
from .transport import all_available


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something accepts TCP connections on host:port right now."""
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def serve_executable() -> str | None:
    """Path of `emotion-ai-serve` (next to this Python first), or None when not installed."""
    local = Path(sys.executable).with_name("emotion-ai-serve")
    return str(local) if local.exists() else shutil.which("emotion-ai-serve")


def model_config(models_root: str | os.PathLike) -> str:
    """A ModelServerConfig text proto serving root/keypoints and root/emotion."""
    root = Path(models_root).resolve()
    entries = "".join(
        f'  config {{ name: "{m}" base_path: "{root / m}" model_platform: "tensorflow" }}\n'
        for m in (spec.KEYPOINTS_MODEL, spec.EMOTION_MODEL)
    )
    return f"model_config_list {{\n{entries}}}\n"


@dataclass
class LocalServer:
    """`emotion-ai-serve` on free loopback ports serving `models_root`; a context manager."""

    models_root: str | os.PathLike
    startup_timeout: float = 180.0
    extra_args: list[str] = field(default_factory=list)
    grpc_port: int = 0
    rest_port: int = 0
    proc: subprocess.Popen | None = None
    _tmp: Any = None

    @property
    def log_path(self) -> Path:
        return Path(self._tmp.name) / "server.log"

    def start(self) -> LocalServer:
        exe = serve_executable()
        if exe is None:
            raise FileNotFoundError("emotion-ai-serve is not installed (pip install ./serving)")
        self._tmp = tempfile.TemporaryDirectory(prefix="emotion-ai-serve-")
        config = Path(self._tmp.name) / "models.config"
        config.write_text(model_config(self.models_root))
        self.grpc_port, self.rest_port = free_port(), free_port()
        cmd = [
            exe,
            "--host=127.0.0.1",
            f"--port={self.grpc_port}",
            f"--rest_api_port={self.rest_port}",
            f"--model_config_file={config}",
            *self.extra_args,
        ]
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        with self.client("rest", timeout=2, retries=0) as probe:
            while True:
                if self.proc is not None and self.proc.poll() is not None:
                    raise RuntimeError(
                        f"emotion-ai-serve exited ({self.proc.returncode}):\n{self.log_tail()}"
                    )
                try:
                    if all_available(probe.status()):
                        return
                except EmotionAIError:
                    pass
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(
                        f"server not ready in {self.startup_timeout:g} s:\n{self.log_tail()}"
                    )
                time.sleep(0.5)

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def client(self, protocol: str = "grpc", **kwargs: Any) -> EmotionClient:
        """An EmotionClient connected to this server."""
        return EmotionClient(
            host="127.0.0.1",
            protocol=protocol,
            grpc_port=self.grpc_port,
            rest_port=self.rest_port,
            **kwargs,
        )

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    def close(self) -> None:
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
