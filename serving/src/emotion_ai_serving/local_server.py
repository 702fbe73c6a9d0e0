"""Start the embedded server (`emotion-ai-serve`) in a subprocess, for tests, benchmarks and local use.

    with LocalServer("models_export") as server:
        with server.client("grpc") as client:
            print(client.predict("photo.jpg").faces)

It lives next to the server it launches; the client itself talks to any TF Serving.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emotion_ai import spec
from emotion_ai.client import EmotionClient
from emotion_ai.errors import EmotionAIError
from emotion_ai.options import Protocol_
from emotion_ai.transport import all_available


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


def served_models(models_root: str | os.PathLike) -> list[str]:
    """The models `LocalServer` serves from `models_root`: every task's fast model ("keypoints", "emotion")
    and each further variant of `spec.SERVED_MODELS` (e.g. "emotion_accurate") that has a folder there.

    Args:
        models_root: a folder laid out as models_export/ (`<model>/<version>/`).

    Returns:
        Model names in `spec.SERVED_MODELS` order.
    """
    root = Path(models_root)
    return [m for m in spec.SERVED_MODELS if m in spec.MODEL_VARIANTS or (root / m).is_dir()]


def model_config(models_root: str | os.PathLike) -> str:
    """A ModelServerConfig text proto serving `served_models(models_root)` from their folders there."""
    root = Path(models_root).resolve()
    entries = "".join(
        f'  config {{ name: "{m}" base_path: "{root / m}" model_platform: "tensorflow" }}\n'
        for m in served_models(root)
    )
    return f"model_config_list {{\n{entries}}}\n"


@dataclass
class LocalServer:
    """`emotion-ai-serve` in a subprocess on loopback ports; a context manager.

    With `models_root` it serves `served_models(root)` (keypoints, emotion and emotion_accurate when
    that folder exists) and is ready once every one of them reports AVAILABLE; without it,
    `extra_args` say what to serve and it is ready once both ports accept connections (the server
    opens them only after its first load, of every configured model). Ports are picked once, so a
    restart listens where the previous run did. `host=None` leaves the server's default bind.
    Config and logs (`server-<n>.log` for the n-th start) go to `workdir`, or a temporary
    directory removed by `close()`.
    """

    models_root: str | os.PathLike | None = None
    extra_args: list[str] = field(default_factory=list)
    host: str | None = "127.0.0.1"
    grpc_port: int = 0
    rest_port: int = 0
    workdir: str | os.PathLike | None = None
    startup_timeout: float = 180.0
    proc: subprocess.Popen | None = None
    starts: int = 0
    _tmp: Any = None

    @property
    def log_path(self) -> Path:
        return self._dir / f"server-{self.starts}.log"

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.rest_port}"

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def _dir(self) -> Path:
        if self.workdir is not None:
            return Path(self.workdir)
        if self._tmp is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="emotion-ai-serve-")
        return Path(self._tmp.name)

    def start(self, wait: bool = True) -> LocalServer:
        """Launch the server; with `wait`, return once it is ready (see the class docstring)."""
        exe = serve_executable()
        if exe is None:
            raise FileNotFoundError("emotion-ai-serve is not installed (pip install ./serving)")
        self._dir.mkdir(parents=True, exist_ok=True)
        self.grpc_port = self.grpc_port or free_port()
        self.rest_port = self.rest_port or free_port()
        cmd = [exe, f"--port={self.grpc_port}", f"--rest_api_port={self.rest_port}"]
        if self.host is not None:
            cmd.append(f"--host={self.host}")
        if self.models_root is not None:
            config = self._dir / "models.config"
            config.write_text(model_config(self.models_root))
            cmd.append(f"--model_config_file={config}")
        cmd += self.extra_args
        self.starts += 1
        # The served int8 models need oneDNN even where the caller turned it off for itself (the test suite).
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1") | spec.ONEDNN_ENV
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float | None = None) -> None:
        """Block until the server is ready; RuntimeError (with the log) if it exits or times out."""
        timeout = self.startup_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        with self.client("rest", timeout=2, retries=0) as probe:
            while not self._ready(probe):
                if not self.alive():
                    code = self.proc.returncode if self.proc is not None else None
                    raise RuntimeError(f"emotion-ai-serve exited ({code}):\n{self.log_tail()}")
                if time.monotonic() > deadline:
                    self.kill()
                    raise RuntimeError(f"server not ready in {timeout:g} s:\n{self.log_tail()}")
                time.sleep(0.2)

    def _ready(self, probe: EmotionClient) -> bool:
        if not (port_open(self.rest_port) and port_open(self.grpc_port)):
            return False
        if self.models_root is None:
            return True
        try:
            states = probe.model_status()
        except EmotionAIError:
            return False
        wanted = served_models(self.models_root)
        return all_available({m: states.get(m) or [] for m in wanted})

    def log_tail(self, chars: int = 5000) -> str:
        """The end of the current run's log ("" before the first start)."""
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def client(self, protocol: Protocol_ = "grpc", **kwargs: Any) -> EmotionClient:
        """An EmotionClient connected to this server."""
        return EmotionClient(
            host="127.0.0.1",
            protocol=protocol,
            grpc_port=self.grpc_port,
            rest_port=self.rest_port,
            **kwargs,
        )

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: the crash case, no graceful shutdown."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        """Send `sig` (SIGKILL after `timeout` s) and return the exit code (0 if never started)."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode

    def close(self) -> None:
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
