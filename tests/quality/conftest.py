"""Fixtures of the reliability and security suite: real tiny SavedModels, a real
`emotion-ai-serve` subprocess (server defaults, only the request cap lowered), the generated
bad-input corpus, and raw REST/gRPC helpers for requests the client would never send."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import requests
from emotion_ai import spec
from emotion_ai._proto import tfs_pb2 as pb
from emotion_ai.tensors import make_tensor_proto
from emotion_ai_serving.local_server import LocalServer

from .quality_support import Case, build_corpus

#: Request cap of the suite's server (REST body / gRPC message), small so tests stay cheap.
MAX_REQUEST_BYTES = 4 * 1024 * 1024
PREDICT = "/tensorflow.serving.PredictionService/Predict"


def make_models(root: Path, versions: tuple[int, ...] = (1,), seed: int = 0) -> Path:
    from ..support.tiny_models import make_export_tree

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return make_export_tree(root, versions=versions, seed=seed)


@pytest.fixture(scope="session")
def export_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_models(tmp_path_factory.mktemp("quality_models"))


@pytest.fixture(scope="session")
def server(export_tree: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    """The embedded server with its default bind address (no --host) and a 4 MiB request cap."""
    proc = LocalServer(
        export_tree,
        extra_args=[f"--max_request_bytes={MAX_REQUEST_BYTES}"],
        host=None,
        workdir=tmp_path_factory.mktemp("quality_server"),
    ).start()
    try:
        yield proc
    finally:
        assert proc.stop() == 0, proc.log_tail()


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Case, Path]]:
    return build_corpus(tmp_path_factory.mktemp("bad_inputs"))


@pytest.fixture(scope="session")
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session


@pytest.fixture(scope="session")
def channel(server: LocalServer) -> Iterator[grpc.Channel]:
    big = 64 * 1024 * 1024
    ch = grpc.insecure_channel(
        server.grpc_target,
        options=[("grpc.max_send_message_length", big), ("grpc.max_receive_message_length", big)],
    )
    try:
        yield ch
    finally:
        ch.close()


def keypoints_batch(n: int, dtype: type = np.uint8) -> np.ndarray:
    size = spec.KEYPOINTS_INPUT_SIZE
    rng = np.random.default_rng(n)
    return rng.integers(0, 256, (n, size, size, 1)).astype(dtype)


def predict_request(
    model: str, inputs: dict[str, np.ndarray], *, version: int | None = None, label: str = ""
) -> pb.PredictRequest:
    req = pb.PredictRequest()
    req.model_spec.name = model
    if version is not None:
        req.model_spec.version.value = version
    if label:
        req.model_spec.version_label = label
    for key, value in inputs.items():
        req.inputs[key].CopyFrom(make_tensor_proto(value))
    return req


def raw_predict(channel: grpc.Channel, payload: bytes, timeout: float = 30) -> bytes:
    """Send arbitrary bytes as a Predict request body; returns the raw response bytes."""
    call = channel.unary_unary(PREDICT, request_serializer=None, response_deserializer=None)
    return call(payload, timeout=timeout)


def grpc_predict(channel: grpc.Channel, req: pb.PredictRequest) -> pb.PredictResponse:
    return pb.PredictResponse.FromString(raw_predict(channel, req.SerializeToString()))


@pytest.fixture
def serving_ok(
    server: LocalServer, http: requests.Session, channel: grpc.Channel
) -> Callable[[], None]:
    """Asserts that a good keypoints request still succeeds over REST and gRPC."""

    def check() -> None:
        assert server.alive(), server.log_tail()
        batch = keypoints_batch(2)
        r = http.post(
            f"{server.rest_url}/v1/models/{spec.KEYPOINTS_MODEL}:predict",
            json={"instances": batch.tolist()},
            timeout=30,
        )
        assert r.status_code == 200, r.text
        assert np.asarray(r.json()["predictions"]).shape == (2, len(spec.KEYPOINT_NAMES), 2)
        resp = grpc_predict(channel, predict_request(spec.KEYPOINTS_MODEL, {spec.INPUT_KEY: batch}))
        dims = [d.size for d in resp.outputs[spec.KEYPOINTS_OUTPUT_KEY].tensor_shape.dim]
        assert dims == [2, len(spec.KEYPOINT_NAMES), 2]

    return check
