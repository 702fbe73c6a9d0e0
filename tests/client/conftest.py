"""Client test fixtures: sample images, a recording fake transport for unit tests, a real server."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import grpc
import numpy as np
import pytest
from emotion_ai import EmotionClient, spec
from emotion_ai.transport import ModelRef, SignatureInfo, VersionStatus
from emotion_ai.versions import latest_version
from emotion_ai_serving.local_server import LocalServer, serve_executable

#: Labels in an order different from spec.EMOTION_LABELS: the client must use the model's `classes`.
FAKE_LABELS = ("neutral", "happy", "sad", "angry", "surprise", "fear", "disgust")


@pytest.fixture(scope="session")
def astronaut_bgr() -> np.ndarray:
    from skimage import data

    return np.ascontiguousarray(data.astronaut()[:, :, ::-1])


@pytest.fixture(scope="session")
def astronaut_jpeg(astronaut_bgr: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".jpg", astronaut_bgr, [cv2.IMWRITE_JPEG_QUALITY, 92])
    assert ok
    return buf.tobytes()


@dataclass
class FakeTransport:
    """Stands in for the *transport* in unit tests (not a server): answers deterministically.

    Keypoints: every point at model pixel (10 + i, 20 + i) for face i of the request.
    Emotion: face i gets its highest score on label FAKE_LABELS[i % 7].
    """

    calls: list[tuple[str, tuple[int, ...]]] = field(default_factory=list)
    threads: set[str] = field(default_factory=set)
    barrier: threading.Barrier | None = None

    def predict(self, model: ModelRef, inputs: dict[str, np.ndarray], timeout: float):
        batch = inputs[spec.INPUT_KEY]
        assert batch.dtype == np.uint8
        self.calls.append((model.name, batch.shape))
        self.threads.add(threading.current_thread().name)
        if self.barrier is not None:  # both model calls must be in flight at the same time
            self.barrier.wait(timeout=5)
        n = batch.shape[0]
        if model.name == spec.KEYPOINTS_MODEL:
            kp = np.zeros((n, 15, 2), np.float32)
            for i in range(n):
                kp[i] = (10 + i, 20 + i)
            return {"": kp}  # REST-style unnamed single output
        scores = np.full((n, 7), 0.01, np.float32)
        for i in range(n):
            scores[i, i % 7] = 0.94
        classes = np.tile(np.array(FAKE_LABELS), (n, 1))
        return {spec.SCORES_OUTPUT_KEY: scores, spec.CLASSES_OUTPUT_KEY: classes}

    def metadata(self, model: ModelRef, timeout: float) -> dict[str, SignatureInfo]:
        return {}

    def status(self, model: ModelRef, timeout: float) -> list[VersionStatus]:
        return [VersionStatus(1, "AVAILABLE")]

    def close(self) -> None:
        pass


@pytest.fixture
def fake_client():
    """An EmotionClient (default detector) whose transport is a FakeTransport."""
    client = EmotionClient(timeout=5, transport=FakeTransport())
    yield client
    client.close()


# -- a real embedded server (emotion-ai-serve) for integration tests ---------------------------
REPO = Path(__file__).resolve().parents[2]
TRAINED_ROOT = REPO / "models_export"


def has_models(root: Path) -> bool:
    """Both models have at least one version folder with a SavedModel."""
    return all(latest_version(root / m, saved_model=True) for m in (spec.KEYPOINTS_MODEL, spec.EMOTION_MODEL))


def start_server(model_root: Path) -> LocalServer:
    """Start emotion-ai-serve on free ports with both models and wait until they are AVAILABLE."""
    if serve_executable() is None:
        pytest.skip("emotion-ai-serve is not installed (pip install -e serving)")
    return LocalServer(model_root, extra_args=["--file_system_poll_wait_seconds=0"]).start()


def model_root_for_tests(tmp_factory) -> tuple[Path, bool]:
    """(root, trained): the trained export if present, else tiny models from make_export_tree."""
    if has_models(TRAINED_ROOT):
        return TRAINED_ROOT, True
    override = os.environ.get("EMOTION_AI_TEST_MODELS")
    if override and has_models(Path(override)):
        return Path(override), False
    try:
        from ..support.tiny_models import make_export_tree
    except ImportError:
        pytest.skip(
            "no models: models_export/ is absent and the training package (for tiny test models) is not installed"
        )
    return Path(make_export_tree(tmp_factory.mktemp("export"))), False


@pytest.fixture(scope="session")
def model_root(tmp_path_factory) -> tuple[Path, bool]:
    return model_root_for_tests(tmp_path_factory)


@pytest.fixture(scope="session")
def server(model_root, tmp_path_factory):
    root, _ = model_root
    srv = start_server(root)
    yield srv
    srv.close()


class FakeRpcError(grpc.RpcError):
    """What a gRPC stub raises: a status code and its details."""

    def __init__(self, code, details):
        self._code, self._details = code, details

    def code(self):
        return self._code

    def details(self):
        return self._details
