"""TF Serving REST API conformance (routes, bodies, status codes, error texts), run against every
available server target (see conftest.py)."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import requests
from emotion_ai import spec

KP, EMO = spec.KEYPOINTS_MODEL, spec.EMOTION_MODEL
SIZES = {KP: spec.KEYPOINTS_INPUT_SIZE, EMO: spec.EMOTION_INPUT_SIZE}


def image(model: str, batch: int = 1, seed: int = 0) -> np.ndarray:
    size = SIZES[model]
    return np.random.default_rng(seed).integers(0, 256, (batch, size, size, 1), dtype=np.uint8)


def post(http, serving, path: str, body) -> requests.Response:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return http.post(serving.rest_url + path, data=data, timeout=30)


def expect_error(resp: requests.Response, status: int, text: str) -> str:
    assert resp.status_code == status, resp.text
    assert resp.headers["Content-Type"] == "application/json"
    message = resp.json()["error"]
    assert text in message, message
    return message


# ------------------------------------------------------------------------------ status
@pytest.mark.parametrize("model", [KP, EMO])
def test_model_status_shape(http, serving, model):
    resp = http.get(f"{serving.rest_url}/v1/models/{model}", timeout=10)
    assert resp.status_code == 200
    assert resp.headers["Content-Type"] == "application/json"
    entries = resp.json()["model_version_status"]
    available = [e for e in entries if e["state"] == "AVAILABLE"]
    assert len(available) == 1
    entry = available[0]
    assert isinstance(entry["version"], str) and int(entry["version"]) >= 1
    assert entry["status"] == {"error_code": "OK", "error_message": ""}
    versions = [int(e["version"]) for e in entries]
    assert versions == sorted(versions, reverse=True)


def test_status_of_one_version_and_unknowns(http, serving):
    version = http.get(f"{serving.rest_url}/v1/models/{EMO}", timeout=10).json()[
        "model_version_status"
    ][0]["version"]
    resp = http.get(f"{serving.rest_url}/v1/models/{EMO}/versions/{version}", timeout=10)
    assert resp.status_code == 200
    assert [e["version"] for e in resp.json()["model_version_status"]] == [version]
    expect_error(
        http.get(f"{serving.rest_url}/v1/models/{EMO}/versions/987", timeout=10),
        404,
        f"Could not find version 987 of model {EMO}",
    )
    expect_error(
        http.get(f"{serving.rest_url}/v1/models/nope", timeout=10),
        404,
        "Could not find any versions of model nope",
    )
    # the label is ignored by the status endpoint
    resp = http.get(f"{serving.rest_url}/v1/models/{EMO}/labels/whatever", timeout=10)
    assert resp.status_code == 200


# ---------------------------------------------------------------------------- metadata
@pytest.mark.parametrize("model", [KP, EMO])
def test_metadata_shape(http, serving, model):
    resp = http.get(f"{serving.rest_url}/v1/models/{model}/metadata", timeout=10)
    assert resp.status_code == 200
    body = resp.json()
    assert body["model_spec"]["name"] == model
    assert body["model_spec"]["signature_name"] == ""
    assert body["model_spec"]["version"].isdigit()
    sig = body["metadata"]["signature_def"]["signature_def"][spec.SIGNATURE_NAME]
    assert sig["method_name"] == "tensorflow/serving/predict"
    image_info = sig["inputs"][spec.INPUT_KEY]
    assert image_info["dtype"] == "DT_UINT8"
    size = str(SIZES[model])
    assert [d["size"] for d in image_info["tensor_shape"]["dim"]] == ["-1", size, size, "1"]
    if model == KP:
        assert set(sig["outputs"]) == {spec.KEYPOINTS_OUTPUT_KEY}
        assert sig["outputs"][spec.KEYPOINTS_OUTPUT_KEY]["dtype"] == "DT_FLOAT"
    else:
        assert set(sig["outputs"]) == {spec.SCORES_OUTPUT_KEY, spec.CLASSES_OUTPUT_KEY}
        assert sig["outputs"][spec.CLASSES_OUTPUT_KEY]["dtype"] == "DT_STRING"


def test_metadata_unknowns(http, serving):
    expect_error(
        http.get(f"{serving.rest_url}/v1/models/nope/metadata", timeout=10),
        404,
        "Servable not found for request: Latest(nope)",
    )
    expect_error(
        http.get(f"{serving.rest_url}/v1/models/{KP}/versions/987/metadata", timeout=10),
        404,
        f"Servable not found for request: Specific({KP}, 987)",
    )
    expect_error(
        http.get(f"{serving.rest_url}/v1/models/{KP}/labels/nope/metadata", timeout=10),
        400,
        "Unrecognized servable version label: nope",
    )


# ----------------------------------------------------------------------------- predict
def test_predict_row_and_columnar_keypoints(http, serving):
    img = image(KP, 2)
    row = post(http, serving, f"/v1/models/{KP}:predict", {"instances": img.tolist()})
    assert row.status_code == 200, row.text
    assert row.headers["Content-Type"] == "application/json"
    predictions = np.asarray(row.json()["predictions"], np.float32)
    assert predictions.shape == (2, 15, 2)
    col = post(http, serving, f"/v1/models/{KP}:predict", {"inputs": img.tolist()})
    assert col.status_code == 200, col.text
    outputs = np.asarray(col.json()["outputs"], np.float32)
    np.testing.assert_allclose(outputs, predictions, rtol=1e-6)
    # named single input and explicit signature_name are equivalent
    named = post(
        http,
        serving,
        f"/v1/models/{KP}:predict",
        {
            "signature_name": spec.SIGNATURE_NAME,
            "instances": [{spec.INPUT_KEY: img[0].tolist()}, {spec.INPUT_KEY: img[1].tolist()}],
        },
    )
    np.testing.assert_allclose(np.asarray(named.json()["predictions"]), predictions, rtol=1e-6)
    col_named = post(
        http,
        serving,
        f"/v1/models/{KP}:predict",
        {"inputs": {spec.INPUT_KEY: img.tolist(), "ignored_extra": 1}},
    )
    np.testing.assert_allclose(np.asarray(col_named.json()["outputs"]), predictions, rtol=1e-6)


def test_predict_emotion_multi_output_rendering(http, serving):
    img = image(EMO, 3)
    row = post(http, serving, f"/v1/models/{EMO}:predict", {"instances": img.tolist()})
    assert row.status_code == 200, row.text
    predictions = row.json()["predictions"]
    assert len(predictions) == 3
    for item in predictions:
        assert set(item) == {spec.SCORES_OUTPUT_KEY, spec.CLASSES_OUTPUT_KEY}
        assert sorted(item[spec.CLASSES_OUTPUT_KEY]) == sorted(spec.EMOTION_LABELS)
        assert abs(sum(item[spec.SCORES_OUTPUT_KEY]) - 1.0) < 1e-4
    col = post(http, serving, f"/v1/models/{EMO}:predict", {"inputs": img.tolist()})
    outputs = col.json()["outputs"]
    assert set(outputs) == {spec.SCORES_OUTPUT_KEY, spec.CLASSES_OUTPUT_KEY}
    assert np.asarray(outputs[spec.SCORES_OUTPUT_KEY]).shape == (3, len(spec.EMOTION_LABELS))
    np.testing.assert_allclose(
        outputs[spec.SCORES_OUTPUT_KEY], [p[spec.SCORES_OUTPUT_KEY] for p in predictions]
    )


def _tf_float_text(value: np.float32) -> str:
    """The spec's rule: %.6g unless that does not round-trip (then %.9g), '.0' for whole numbers."""
    text = f"{float(value):.6g}"
    if np.float32(text) != value:
        text = f"{float(value):.9g}"
    return text if ("." in text or "e" in text) else text + ".0"


def test_float_rendering_is_tf_serving_style(http, serving):
    """Floats are written as TF Serving writes them (e.g. 0.2, 3.0, 9e+06; never 0.200000003)."""
    resp = post(http, serving, f"/v1/models/{KP}:predict", {"instances": image(KP, 2).tolist()})
    tokens = re.findall(r"-?\d[\d.e+-]*", resp.text.split('"predictions"')[1])
    assert len(tokens) == 2 * 15 * 2
    for token in tokens:
        assert token == _tf_float_text(np.float32(token)), token
    resp = post(http, serving, f"/v1/models/{EMO}:predict", {"inputs": image(EMO).tolist()})
    scores = resp.text.split('"scores"')[1]
    for token in re.findall(r"-?\d[\d.e+-]*", scores):
        assert token == _tf_float_text(np.float32(token)), token


def test_predict_by_version_and_label(http, serving):
    version = http.get(f"{serving.rest_url}/v1/models/{KP}", timeout=10).json()[
        "model_version_status"
    ][0]["version"]
    body = {"instances": image(KP).tolist()}
    assert (
        post(http, serving, f"/v1/models/{KP}/versions/{version}:predict", body).status_code == 200
    )
    expect_error(
        post(http, serving, f"/v1/models/{KP}/versions/987:predict", body),
        404,
        f"Servable not found for request: Specific({KP}, 987)",
    )
    expect_error(
        post(http, serving, f"/v1/models/{KP}/labels/nope:predict", body),
        400,
        "Unrecognized servable version label: nope",
    )
    expect_error(
        post(http, serving, "/v1/models/nope:predict", body),
        404,
        "Servable not found for request: Latest(nope)",
    )
    expect_error(
        post(http, serving, f"/v1/models/{KP}/versions/18446744073709551615:predict", body),
        400,
        "Failed to convert version: 18446744073709551615 to numeric.",
    )


@pytest.mark.parametrize(
    ("body", "status", "text"),
    [
        (b"", 400, "JSON Parse error: The document is empty"),
        (b'{"instances": [1,', 400, "JSON Parse error: "),
        (b"{'instances': 1}", 400, "JSON Parse error: "),
        (b"[1, 2]", 400, "Is not object"),
        (
            b'{"signature_name": 3, "instances": [1]}',
            400,
            "'signature_name' key must be a string value.",
        ),
        (
            b'{"instances": [1], "inputs": [1]}',
            400,
            "expecting only one of 'inputs' or 'instances' keys to exist",
        ),
        (b'{"foo": 1}', 400, "Missing 'inputs' or 'instances' key"),
        (b'{"instances": []}', 400, "No values in 'instances' array"),
        (b'{"instances": 5}', 400, "to be an list/array"),
        (
            b'{"signature_name": "nope", "instances": [1]}',
            400,
            'Serving signature name: "nope" not found in signature def',
        ),
        (b'{"instances": [{"img": [[[1]]]}]}', 400, "does not have named input: img"),
        (b'{"inputs": {"img": [[[1]]]}}', 400, "Missing named input: image in 'inputs' object."),
    ],
)
def test_predict_request_errors(http, serving, body, status, text):
    expect_error(post(http, serving, f"/v1/models/{EMO}:predict", body), status, text)


def test_json_errors_come_before_model_lookup(http, serving):
    expect_error(
        post(http, serving, "/v1/models/nope:predict", b"{not json"), 400, "JSON Parse error"
    )


def test_wrong_dtype_shape_and_ragged(http, serving):
    floats = image(EMO).astype(float) + 0.5
    message = expect_error(
        post(http, serving, f"/v1/models/{EMO}:predict", {"instances": floats.tolist()}),
        400,
        "is not of expected type: uint8",
    )
    assert message.startswith("Failed to process element: 0 of 'instances' list. Error: ")
    expect_error(
        post(http, serving, f"/v1/models/{EMO}:predict", {"instances": [{"b64": "AAAA"}]}),
        400,
        "Type: Object is not of expected type: uint8",
    )
    expect_error(
        post(http, serving, f"/v1/models/{EMO}:predict", b'{"instances": [NaN]}'),
        400,
        "JSON Value: NaN Type: Number",
    )
    # a 48x48 face sent to the 96x96 model: the graph rejects it
    resp = post(http, serving, f"/v1/models/{KP}:predict", {"instances": image(EMO).tolist()})
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]
    ragged = [image(EMO)[0].tolist(), image(KP)[0].tolist()]
    expect_error(
        post(http, serving, f"/v1/models/{EMO}:predict", {"instances": ragged}),
        400,
        "Failed to process element: 1 of 'instances' list",
    )


@pytest.mark.parametrize(
    ("call", "status", "text"),
    [
        (
            ("GET", f"/v1/models/{EMO}:predict"),
            400,
            f"Malformed request: GET /v1/models/{EMO}:predict",
        ),
        (("POST", f"/v1/models/{EMO}/metadata"), 400, "Malformed request: POST"),
        (("PUT", f"/v1/models/{EMO}:predict"), 400, "Malformed request: PUT"),
        (("DELETE", f"/v1/models/{EMO}"), 400, "Malformed request: DELETE"),
        (("GET", f"/v1/models/{EMO}/"), 400, "Malformed request"),
        (("GET", f"/v1/models/{EMO}/version/1"), 400, "Malformed request"),
        (("GET", f"/v1/models/{EMO}/versions/x"), 400, "Malformed request"),
        (("POST", f"/v1/models/{EMO}:PREDICT"), 400, "Malformed request"),
        (("GET", "/v1/models"), 400, "Missing model name in request."),
        (("POST", "/v1/models"), 400, "Malformed request"),
    ],
)
def test_malformed_routes(http, serving, call, status, text):
    method, path = call
    resp = http.request(method, serving.rest_url + path, data=b"{}", timeout=10)
    expect_error(resp, status, text)


def test_case_insensitive_prefix(http, serving):
    resp = http.post(
        f"{serving.rest_url}/V1/MODELS/{KP}:predict",
        data=json.dumps({"instances": image(KP).tolist()}),
        timeout=10,
    )
    assert resp.status_code == 200, resp.text


@pytest.mark.parametrize("path", ["/", "/healthz", "/v2/models/emotion", "/statuspage"])
def test_non_v1_paths_get_html_404(http, serving, path):
    resp = http.get(serving.rest_url + path, timeout=10)
    assert resp.status_code == 404
    assert resp.headers["Content-Type"].startswith("text/html")
    assert "<TITLE>404 Not Found</TITLE>" in resp.text


@pytest.mark.parametrize(
    ("model", "verb", "text"),
    [
        (EMO, "classify", "No classification inputs found in SignatureDef"),
        (KP, "classify", "No classification inputs found in SignatureDef"),
        (EMO, "regress", "Expected one output Tensor."),
        (KP, "regress", "No regression inputs found in SignatureDef"),
    ],
)
def test_classify_regress_on_predict_signatures(http, serving, model, verb, text):
    body = {"examples": [{"x": 1.0}]}
    expect_error(post(http, serving, f"/v1/models/{model}:{verb}", body), 400, text)


def test_classify_request_errors(http, serving):
    expect_error(
        post(http, serving, f"/v1/models/{EMO}:classify", {"foo": 1}),
        400,
        "key 'examples' is expected and was not found",
    )
    expect_error(
        post(http, serving, f"/v1/models/{EMO}:regress", {"examples": []}),
        400,
        "'examples' value is an empty array",
    )
    expect_error(
        post(http, serving, "/v1/models/nope:classify", {"examples": [{"x": 1}]}),
        404,
        "Servable not found for request: Latest(nope)",
    )
    expect_error(
        post(
            http,
            serving,
            f"/v1/models/{EMO}:classify",
            {"signature_name": "nope", "examples": [{"x": 1}]},
        ),
        400,
        "No signature was found with the name: nope",
    )


def test_gzip_request_body(http, serving):
    import gzip

    body = gzip.compress(json.dumps({"instances": image(KP).tolist()}).encode())
    resp = http.post(
        f"{serving.rest_url}/v1/models/{KP}:predict",
        data=body,
        headers={"Content-Encoding": "gzip"},
        timeout=10,
    )
    assert resp.status_code == 200, resp.text
    assert np.asarray(resp.json()["predictions"]).shape == (1, 15, 2)


def test_prometheus_metrics(http, serving):
    if serving.prometheus_path is None:
        pytest.skip("monitoring config of this target unknown")
    post(http, serving, f"/v1/models/{KP}:predict", {"instances": image(KP).tolist()})
    resp = http.get(serving.rest_url + serving.prometheus_path, timeout=10)
    assert resp.status_code == 200
    assert resp.headers["Content-Type"].startswith("text/plain")
    assert "# TYPE" in resp.text
    assert ":tensorflow:serving:request_count" in resp.text


def test_body_size_cap(http, serving):
    if serving.max_request_bytes is None:
        pytest.skip("only the embedded server has a request cap (TF Serving accepts ~2 GiB)")
    body = b'{"instances": [' + b"1," * (serving.max_request_bytes // 2) + b"1]}"
    resp = http.post(f"{serving.rest_url}/v1/models/{KP}:predict", data=body, timeout=30)
    assert resp.status_code == 413
    assert "exceeds the limit" in resp.json()["error"]
