"""Gateway test fixtures: the embedded server with the committed models, a gateway app in front of it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the gateway extra is not installed (pip install -e 'client[gateway]')")
pytest.importorskip("httpx", reason="FastAPI's TestClient needs httpx")

from emotion_ai import spec
from emotion_ai.gateway import GatewaySettings, create_app
from emotion_ai.options import ClientOptions
from emotion_ai.versions import latest_version
from emotion_ai_serving.local_server import LocalServer, serve_executable
from fastapi.testclient import TestClient

from ..quality.quality_support import bench_module

REPO = Path(__file__).resolve().parents[2]
MODELS = Path(os.environ.get("EMOTION_AI_MODELS", REPO / "models_export"))


@pytest.fixture(scope="session")
def model_server() -> Iterator[LocalServer]:
    """The embedded server with the committed trained models (skipped without them)."""
    if not all(latest_version(MODELS / m) for m in (spec.KEYPOINTS_MODEL, spec.EMOTION_MODEL)):
        pytest.skip(f"no trained models in {MODELS}")
    if serve_executable() is None:
        pytest.skip("emotion-ai-serve is not installed (pip install -e serving)")
    with LocalServer(MODELS) as server:
        yield server


def settings_for(server: LocalServer, **fields: object) -> GatewaySettings:
    """Gateway settings that reach `server` over gRPC."""
    client = ClientOptions(host="127.0.0.1", grpc_port=server.grpc_port, rest_port=server.rest_port, timeout=30)
    return GatewaySettings(client=client, **fields)  # type: ignore[arg-type]


def gateway_client(settings: GatewaySettings) -> TestClient:
    """A TestClient of a gateway app (enter it to run the app's start and stop)."""
    return TestClient(create_app(settings), raise_server_exceptions=False)


#: The limits of the `api` fixture's gateway (small, so the tests can pass them cheaply).
MAX_BODY = 2_000_000
MAX_PIXELS = 4_000_000


@pytest.fixture(scope="module")
def api(model_server: LocalServer) -> Iterator[TestClient]:
    """A gateway (no authentication) in front of the embedded server, with small limits."""
    with gateway_client(settings_for(model_server, max_body_bytes=MAX_BODY, max_pixels=MAX_PIXELS,
                                     max_batch_images=4)) as client:
        yield client


@pytest.fixture(scope="session")
def photos():
    """bench/photos.py: the astronaut photo (one face) and the four-face composite."""
    return bench_module("photos")
