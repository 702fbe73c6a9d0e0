"""Integration: the client against a real `emotion-ai-serve` subprocess (REST and gRPC).

Models: the trained export in models_export/ when present, else tiny contract-conforming models
from `tests/support/tiny_models.make_export_tree` (tests that need trained weights skip then).
"""

from __future__ import annotations

import json
import re
import time

import numpy as np
import pytest
from emotion_ai import (
    ModelNotFoundError,
    ModelRef,
    Prediction,
    ServerError,
    ServerUnavailableError,
    spec,
)
from emotion_ai import cli as cli_mod

from .conftest import start_server

PROTOCOLS = ("grpc", "rest")


def _two_faces(astronaut_bgr: np.ndarray) -> np.ndarray:
    gap = np.zeros((512, 160, 3), np.uint8)
    return np.ascontiguousarray(
        np.concatenate([astronaut_bgr[:, ::-1], gap, astronaut_bgr], axis=1)
    )


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_status_and_metadata(server, protocol):
    with server.client(protocol) as client:
        states = client.status()
        assert set(states) == {"keypoints", "emotion"}
        for versions in states.values():
            assert any(v.state == "AVAILABLE" and v.error_code == "OK" for v in versions)
        sig = client.metadata("keypoints")[spec.SIGNATURE_NAME]
        assert sig.inputs[spec.INPUT_KEY].dtype == "DT_UINT8"
        assert sig.inputs[spec.INPUT_KEY].shape == (None, 96, 96, 1)
        assert spec.KEYPOINTS_OUTPUT_KEY in sig.outputs
        em = client.metadata("emotion")[spec.SIGNATURE_NAME]
        assert em.outputs[spec.CLASSES_OUTPUT_KEY].dtype == "DT_STRING"
        assert em.inputs[spec.INPUT_KEY].shape == (None, 48, 48, 1)


def _assert_same(a: Prediction, b: Prediction, tol: float = 1e-4) -> None:
    assert len(a.faces) == len(b.faces)
    for fa, fb in zip(a.faces, b.faces, strict=True):
        assert fa.box == fb.box
        assert fa.emotion == fb.emotion
        assert list(fa.scores) == list(fb.scores)
        np.testing.assert_allclose(list(fa.scores.values()), list(fb.scores.values()), atol=tol)
        np.testing.assert_allclose(
            np.array(list(fa.keypoints.values())), np.array(list(fb.keypoints.values())), atol=tol
        )


def test_rest_and_grpc_agree(server, astronaut_bgr):
    image = _two_faces(astronaut_bgr)
    with server.client("grpc") as g, server.client("rest") as r:
        pg, pr = g.predict(image), r.predict(image)
    assert len(pg.faces) == 2
    _assert_same(pg, pr)
    for face in pg.faces:
        assert list(face.scores) == [str(c) for c in face.scores]  # labels from the model's classes
        assert sum(face.scores.values()) == pytest.approx(1.0, abs=1e-3)
        assert set(face.keypoints) == set(spec.KEYPOINT_NAMES)
        assert all(np.isfinite(xy).all() for xy in face.keypoints.values())


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_batch_matches_single_predictions(server, protocol, astronaut_bgr, astronaut_jpeg):
    images = [
        astronaut_jpeg,
        np.full((200, 300, 3), 90, np.uint8),
        _two_faces(astronaut_bgr),
        b"junk",
    ]
    with server.client(protocol) as client:
        batch = client.predict_batch(images, errors="return")
        singles = [client.predict(img) for img in images[:3]]
    assert isinstance(batch[3], Exception)
    assert [len(p.faces) for p in batch[:3]] == [1, 0, 2]
    for b, s in zip(batch[:3], singles, strict=True):
        _assert_same(b, s, tol=1e-3)  # float32 results depend slightly on the batch size


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_missing_model_or_version_is_model_not_found(server, protocol, astronaut_bgr):
    cases = [
        ({"emotion": "no_such_model"}, ModelNotFoundError, "no_such_model"),
        ({"keypoints": ModelRef("keypoints", version=987)}, ModelNotFoundError, "987"),
        ({"keypoints": ModelRef("keypoints", signature_name="nope")}, ServerError, "nope"),
    ]
    for models, kind, text in cases:
        with server.client(protocol, models=models) as client, pytest.raises(kind, match=text):
            client.predict(astronaut_bgr)


def test_astronaut_one_face_with_plausible_eyes(server, model_root, astronaut_bgr):
    _, trained = model_root
    if not trained:
        pytest.skip("needs the trained models in models_export/ (absent)")
    for protocol in PROTOCOLS:
        with server.client(protocol) as client:
            pred = client.predict(astronaut_bgr)
        assert len(pred.faces) == 1
        face = pred.faces[0]
        x, y, w, h = face.box
        for name in ("left_eye_center", "right_eye_center"):
            ex, ey = face.keypoints[name]
            assert x <= ex <= x + w and y <= ey <= y + h, (name, (ex, ey), face.box)
        # subject's left eye appears on the image's right
        assert face.keypoints["left_eye_center"][0] > face.keypoints["right_eye_center"][0]


def test_cli_against_server(server, astronaut_jpeg, tmp_path, capsys):
    img = tmp_path / "astronaut.jpg"
    img.write_bytes(astronaut_jpeg)
    ports = [
        "--host",
        "127.0.0.1",
        "--grpc-port",
        str(server.grpc_port),
        "--rest-port",
        str(server.rest_port),
    ]
    assert cli_mod.main(["status", "--json", *ports]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["keypoints"]["versions"][0]["state"] == "AVAILABLE"
    assert cli_mod.main(["predict", str(img), "--json", "--protocol", "rest", *ports]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["image"] == str(img) and len(doc["faces"]) == 1
    face = doc["faces"][0]
    assert len(face["box"]) == 4 and face["emotion"] in face["scores"]
    assert set(face["keypoints"]) == set(spec.KEYPOINT_NAMES)


def test_server_stopped_raises_unavailable_within_deadline(model_root, astronaut_bgr):
    root, _ = model_root
    srv = start_server(root)
    try:
        clients = [srv.client(p, timeout=4.0, retries=3) for p in PROTOCOLS]
        for client in clients:
            assert len(client.predict(astronaut_bgr).faces) == 1
    finally:
        srv.close()
    try:
        for client in clients:
            t = time.perf_counter()
            with pytest.raises(ServerUnavailableError):
                client.predict(astronaut_bgr)
            assert time.perf_counter() - t < 4.0 + 1.0
    finally:
        for client in clients:
            client.close()


def test_a_client_on_the_other_protocols_port_is_told_so(server):
    from emotion_ai import EmotionClient
    from emotion_ai.errors import ServerUnavailableError

    crossed = {"rest": {"rest_port": server.grpc_port}, "grpc": {"grpc_port": server.rest_port}}
    hints = {"rest": "speaks gRPC (HTTP/2), not REST", "grpc": "speaks HTTP/1.1 (REST?), not gRPC"}
    for protocol, ports in crossed.items():
        with EmotionClient("127.0.0.1", protocol=protocol, timeout=5, **ports) as client, pytest.raises(
            ServerUnavailableError, match=re.escape(hints[protocol])
        ):
            client.status()
