"""Requests the client would never send, straight at the embedded server over REST and gRPC.

Each must get TF Serving's documented status (see /work/shared/reference/tf_serving_api.md:
HTTP 400 / INVALID_ARGUMENT for bad tensors and JSON, 404 / NOT_FOUND for unknown models and
versions, 400 for unknown labels, 413 / RESOURCE_EXHAUSTED above the request cap), and the
server must keep serving afterwards (`serving_ok` runs a good request after every case).
"""

from __future__ import annotations

import gzip

import grpc
import numpy as np
import pytest
from emotion_ai import spec

from .conftest import (
    MAX_REQUEST_BYTES,
    grpc_predict,
    keypoints_batch,
    predict_request,
    raw_predict,
)

KP, EM = spec.KEYPOINTS_MODEL, spec.EMOTION_MODEL
PIXELS = keypoints_batch(1).tolist()


def rest_cases() -> list[tuple[str, str, object, int, str]]:
    """(id, path, body (dict = JSON, bytes = raw), expected HTTP status, text in the error)."""
    em_img = np.zeros((1, 48, 48, 1), np.uint8).tolist()
    return [
        ("malformed_json", f"/v1/models/{KP}:predict", b'{"instances": [1, 2', 400,
         "JSON Parse error"),
        ("empty_body", f"/v1/models/{KP}:predict", b"", 400, "JSON Parse error"),
        ("not_an_object", f"/v1/models/{KP}:predict", b"[1, 2, 3]", 400, "Is not object"),
        ("binary_garbage", f"/v1/models/{KP}:predict", bytes(range(256)) * 4, 400, ""),
        ("no_instances", f"/v1/models/{KP}:predict", {"foo": 1}, 400, ""),
        ("wrong_dtype_string", f"/v1/models/{KP}:predict", {"instances": [[["x"] * 96] * 96]},
         400, ""),
        ("wrong_dtype_float", f"/v1/models/{KP}:predict",
         {"instances": (np.asarray(PIXELS) + 0.5).tolist()}, 400, ""),
        ("wrong_shape", f"/v1/models/{KP}:predict", {"instances": em_img}, 400, ""),
        ("wrong_rank", f"/v1/models/{KP}:predict", {"instances": [1, 2, 3]}, 400, ""),
        ("ragged", f"/v1/models/{KP}:predict", {"instances": [[[0]], [[0], [1]]]}, 400, ""),
        ("unknown_input_name", f"/v1/models/{KP}:predict",
         {"inputs": {"pixels": PIXELS}}, 400, ""),
        ("unknown_signature", f"/v1/models/{KP}:predict",
         {"signature_name": "nope", "instances": PIXELS}, 400, "nope"),
        ("unknown_model", "/v1/models/nope:predict", {"instances": PIXELS}, 404,
         "Servable not found"),
        ("unknown_version", f"/v1/models/{KP}/versions/999:predict", {"instances": PIXELS}, 404,
         "Servable not found"),
        ("huge_version", f"/v1/models/{KP}/versions/99999999999999999999:predict",
         {"instances": PIXELS}, 400, "Failed to convert version"),
        ("unknown_label", f"/v1/models/{KP}/labels/canary:predict", {"instances": PIXELS}, 400,
         "Unrecognized servable version label"),
        ("bad_verb", f"/v1/models/{KP}:explode", {"instances": PIXELS}, 400, "Malformed request"),
        ("emotion_wrong_shape", f"/v1/models/{EM}:predict", {"instances": PIXELS}, 400, ""),
    ]  # fmt: skip


@pytest.mark.parametrize("case", rest_cases(), ids=[c[0] for c in rest_cases()])
def test_rest_bad_request(case, server, http, serving_ok):
    _, path, body, status, text = case
    url = server.rest_url + path
    if isinstance(body, bytes):
        r = http.post(url, data=body, headers={"Content-Type": "application/json"}, timeout=30)
    else:
        r = http.post(url, json=body, timeout=30)
    assert r.status_code == status, r.text
    assert r.headers["Content-Type"] == "application/json"
    assert text in r.json()["error"]
    serving_ok()


def test_rest_oversized_body_is_refused_before_reading(server, http, serving_ok):
    body = b'{"instances": [' + b"0," * (MAX_REQUEST_BYTES // 2) + b"0]}"
    r = http.post(f"{server.rest_url}/v1/models/{KP}:predict", data=body, timeout=60)
    assert r.status_code == 413, r.text[:300]
    assert "exceeds the limit" in r.json()["error"]
    serving_ok()


def test_rest_gzip_bomb_is_capped(server, http, serving_ok):
    inflated = b'{"instances": [' + b"0," * (8 * MAX_REQUEST_BYTES) + b"0]}"
    body = gzip.compress(inflated, compresslevel=9)
    assert len(body) < MAX_REQUEST_BYTES // 10
    r = http.post(
        f"{server.rest_url}/v1/models/{KP}:predict",
        data=body,
        headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
        timeout=60,
    )
    assert r.status_code == 413, r.text[:300]
    serving_ok()


def test_rest_huge_batch_over_cap_and_large_batch_under_cap(server, http, serving_ok):
    # 2000 images of 96x96 as JSON is ~70 MB: refused by size, never parsed
    n_over = 2000
    head = b'{"instances": ['
    one = str(np.zeros((96, 96, 1), np.uint8).tolist()).encode()
    body = head + b",".join([one] * n_over) + b"]}"
    r = http.post(f"{server.rest_url}/v1/models/{KP}:predict", data=body, timeout=60)
    assert r.status_code == 413
    # 64 images fit under the cap and are answered in full
    batch = keypoints_batch(64)
    r = http.post(
        f"{server.rest_url}/v1/models/{KP}:predict", json={"instances": batch.tolist()}, timeout=60
    )
    assert r.status_code == 200, r.text[:300]
    assert np.asarray(r.json()["predictions"]).shape == (64, 15, 2)
    serving_ok()


def _grpc_error(channel, payload: bytes) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        raw_predict(channel, payload)
    return info.value


def grpc_cases() -> list[tuple[str, object, grpc.StatusCode, str]]:
    """(id, request (PredictRequest or raw bytes), expected status, text in the details)."""
    kp = {spec.INPUT_KEY: keypoints_batch(1)}
    return [
        ("malformed_protobuf", b"\xff\xff\xff\xff\x0f\x12garbage", None, ""),
        ("wrong_dtype", predict_request(KP, {spec.INPUT_KEY: keypoints_batch(1, np.float32)}),
         grpc.StatusCode.INVALID_ARGUMENT, ""),
        ("wrong_shape", predict_request(KP, {spec.INPUT_KEY: np.zeros((1, 48, 48, 1), np.uint8)}),
         grpc.StatusCode.INVALID_ARGUMENT, ""),
        ("wrong_rank", predict_request(KP, {spec.INPUT_KEY: np.zeros((96, 96), np.uint8)}),
         grpc.StatusCode.INVALID_ARGUMENT, ""),
        ("no_inputs", predict_request(KP, {}), grpc.StatusCode.INVALID_ARGUMENT, ""),
        ("unknown_input", predict_request(KP, {"pixels": keypoints_batch(1)}),
         grpc.StatusCode.INVALID_ARGUMENT, ""),
        ("no_model_name", predict_request("", kp), grpc.StatusCode.INVALID_ARGUMENT, ""),
        ("unknown_model", predict_request("nope", kp), grpc.StatusCode.NOT_FOUND,
         "Servable not found"),
        ("unknown_version", predict_request(KP, kp, version=999), grpc.StatusCode.NOT_FOUND,
         "Servable not found"),
        ("unknown_label", predict_request(KP, kp, label="canary"),
         grpc.StatusCode.INVALID_ARGUMENT, "Unrecognized servable version label"),
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("request_", "code", "text"), [c[1:] for c in grpc_cases()], ids=[c[0] for c in grpc_cases()]
)
def test_grpc_bad_request(request_, code, text, channel, serving_ok):
    payload = request_ if isinstance(request_, bytes) else request_.SerializeToString()
    err = _grpc_error(channel, payload)
    if code is None:  # undecodable message: grpcio rejects it before the servicer runs
        assert err.code() in (grpc.StatusCode.INTERNAL, grpc.StatusCode.INVALID_ARGUMENT)
    else:
        assert err.code() == code, err.details()
        assert text in (err.details() or "")
    serving_ok()


def test_grpc_signature_mismatch_dtype_message_is_actionable(channel):
    req = predict_request(KP, {spec.INPUT_KEY: keypoints_batch(1, np.float32)})
    err = _grpc_error(channel, req.SerializeToString())
    assert "uint8" in err.details() or "DT_UINT8" in err.details(), err.details()


def test_grpc_huge_batch_over_cap_and_large_batch_under_cap(channel, serving_ok):
    over = MAX_REQUEST_BYTES // (96 * 96) + 64  # tensor_content alone exceeds the cap
    err = _grpc_error(
        channel, predict_request(KP, {spec.INPUT_KEY: keypoints_batch(over)}).SerializeToString()
    )
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, err.details()
    under = MAX_REQUEST_BYTES // (96 * 96) // 2
    resp = grpc_predict(channel, predict_request(KP, {spec.INPUT_KEY: keypoints_batch(under)}))
    dims = [d.size for d in resp.outputs[spec.KEYPOINTS_OUTPUT_KEY].tensor_shape.dim]
    assert dims == [under, 15, 2]
    serving_ok()


def test_client_maps_unknown_model_to_typed_error(server, serving_ok):
    from emotion_ai import ModelRef
    from emotion_ai.errors import ModelNotFoundError

    crop = {spec.INPUT_KEY: np.zeros((1, 48, 48, 1), np.uint8)}
    for protocol in ("grpc", "rest"):
        for ref in (ModelRef("nope"), ModelRef(EM, version=7)):
            # called through the transport: the client only asks the models when it sees a face
            with (
                server.client(protocol, timeout=20, retries=0) as c,
                pytest.raises(ModelNotFoundError),
            ):
                c.transport.predict(ref, crop, 20)
    serving_ok()
