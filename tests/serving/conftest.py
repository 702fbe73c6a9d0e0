"""Serving test fixtures: real SavedModels and a real server process to talk to.

The conformance tests run against every target that is available in this session:
  * "embedded": `emotion-ai-serve` started as a subprocess on free ports (always);
  * "docker":   the tensorflow/serving container with the image and flags of docker-compose.yml,
                started with the Docker SDK (skipped when no Docker engine is reachable);
  * "env":      an already running server named by EMOTION_AI_REST_URL / EMOTION_AI_GRPC_TARGET
                (skipped when those are unset).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import requests
import yaml
from emotion_ai_serving.local_server import LocalServer

REPO = Path(__file__).resolve().parents[2]
SERVING_DIR = REPO / "serving"
COMPOSE_FILE = REPO / "docker-compose.yml"
STARTUP_TIMEOUT_S = 120


def make_export_tree(root: Path) -> Path:
    """Tiny contract-following SavedModels exported by the training package."""
    from ..support.tiny_models import make_export_tree as export_tree

    return export_tree(root)


@dataclass
class ServingTarget:
    """Where a server listens, and what the tests may assume about it."""

    kind: str
    rest_url: str
    grpc_target: str
    max_request_bytes: int | None = None
    prometheus_path: str | None = "/monitoring/prometheus/metrics"

    def channel(self) -> grpc.Channel:
        big = 64 * 1024 * 1024
        return grpc.insecure_channel(
            self.grpc_target,
            options=[
                ("grpc.max_send_message_length", big),
                ("grpc.max_receive_message_length", big),
            ],
        )


def embedded_target(server: LocalServer) -> ServingTarget:
    return ServingTarget("embedded", server.rest_url, server.grpc_target)


def compose_image_and_flags() -> tuple[str, list[str]]:
    """The image (with the default version filled in) and server flags of docker-compose.yml's `serving`."""
    service = yaml.safe_load(COMPOSE_FILE.read_text())["services"]["serving"]
    image = re.fullmatch(r"tensorflow/serving:\$\{TF_SERVING_VERSION:-([^}]+)\}", service["image"])
    flags = [f for f in service["command"] if f.startswith("--")]
    assert image and flags, "docker-compose.yml lost its image pin or command flags"
    return f"tensorflow/serving:{image.group(1)}", flags


def _docker_target(models_root: Path) -> Iterator[ServingTarget]:
    try:
        import docker

        client = docker.from_env()
        client.ping()
    except Exception as exc:  # no SDK, no socket, no permission
        pytest.skip(
            f"no Docker engine reachable ({type(exc).__name__}); "
            "the TF Serving container conformance run needs one"
        )
    image, flags = compose_image_and_flags()
    container = client.containers.run(
        image,
        command=flags,
        detach=True,
        remove=True,
        ports={"8500/tcp": None, "8501/tcp": None},
        volumes={
            str(models_root): {"bind": "/models", "mode": "ro"},
            str(SERVING_DIR): {"bind": "/config", "mode": "ro"},
        },
    )
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            container.reload()
            ports = container.attrs["NetworkSettings"]["Ports"] or {}
            if ports.get("8501/tcp") and b"Exporting HTTP/REST API" in container.logs():
                break
            time.sleep(1)
        rest = int(ports["8501/tcp"][0]["HostPort"])
        grpc_port = int(ports["8500/tcp"][0]["HostPort"])
        yield ServingTarget(
            "docker", f"http://127.0.0.1:{rest}", f"127.0.0.1:{grpc_port}"
        )
    finally:
        container.stop(timeout=10)


@pytest.fixture(scope="session")
def export_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_export_tree(tmp_path_factory.mktemp("models_export"))


EMBEDDED_MAX_REQUEST_BYTES = 8 * 1024 * 1024


TARGETS = ["embedded", "docker"] + (["env"] if os.environ.get("EMOTION_AI_REST_URL") else [])


@pytest.fixture(scope="session", params=TARGETS)
def serving(
    request: pytest.FixtureRequest, export_tree: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServingTarget]:
    """The server under test (see the module docstring)."""
    if request.param == "env":
        rest, grpc_target = (
            os.environ.get("EMOTION_AI_REST_URL"),
            os.environ.get("EMOTION_AI_GRPC_TARGET"),
        )
        if not rest or not grpc_target:
            pytest.skip("EMOTION_AI_REST_URL and EMOTION_AI_GRPC_TARGET are not set")
        yield ServingTarget("env", rest.rstrip("/"), grpc_target, prometheus_path=None)
        return
    if request.param == "docker":
        yield from _docker_target(export_tree)
        return
    server = LocalServer(
        extra_args=[
            f"--model_config_file={SERVING_DIR / 'models.config'}",
            f"--models_root={export_tree}",
            f"--monitoring_config_file={SERVING_DIR / 'monitoring.config'}",
            f"--max_request_bytes={EMBEDDED_MAX_REQUEST_BYTES}",
            "--file_system_poll_wait_seconds=0",
        ],
        workdir=tmp_path_factory.mktemp("server_logs"),
    ).start()
    target = embedded_target(server)
    target.max_request_bytes = EMBEDDED_MAX_REQUEST_BYTES
    try:
        yield target
    finally:
        assert server.stop() == 0, server.log_tail()


@pytest.fixture(scope="session")
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session
