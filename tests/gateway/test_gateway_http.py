"""The analysis gateway over HTTP, against the embedded server with the committed models: the photo's values,
the three ways to send an image, annotation, batches, every bad input as problem details, auth, limits,
health, readiness, metrics and the OpenAPI schema."""

from __future__ import annotations

import base64
import sys
import zlib

import cv2
import numpy as np
import pytest
from emotion_ai import spec
from emotion_ai.gateway import GatewaySettings
from emotion_ai.options import ClientOptions
from emotion_ai_serving.local_server import free_port

from .conftest import MAX_BODY, gateway_client, settings_for

ANALYZE = "/v1/faces:analyze"
BATCH = "/v1/faces:batchAnalyze"


def _faces(doc: dict) -> list[tuple[str, list[float]]]:
    return [(f["emotion"], f["box"]) for f in doc["faces"]]


def _assert_problem(response, status: int, kind: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    doc = response.json()
    assert doc["status"] == status and doc["type"].endswith(":" + kind), doc
    assert doc["title"] and doc["detail"]
    assert "Traceback" not in response.text and 'File "' not in response.text
    return doc


def test_the_astronaut_is_one_happy_face_with_15_keypoints(api, photos):
    r = api.post(ANALYZE, content=photos.one_face_jpeg(), headers={"content-type": "image/jpeg"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json"
    doc = r.json()
    assert doc["image_size"] == [640, 480]
    assert len(doc["faces"]) == 1
    face = doc["faces"][0]
    assert face["emotion"] == "happy", face["scores"]
    assert len(face["keypoints"]) == 15 and set(face["keypoints"]) == set(spec.KEYPOINT_NAMES)
    assert abs(sum(face["scores"].values()) - 1) < 1e-3
    x, _y, w, _h = face["box"]
    assert x >= 80 and x + w <= 560 and w > 50  # inside the photo's part of the canvas
    assert doc["models"] == {"keypoints": "keypoints", "emotion": "emotion"}
    assert set(doc["timings_ms"]) >= {"decode", "detect", "keypoints", "emotion", "total"}


def test_raw_multipart_and_base64_json_give_the_same_faces(api, photos):
    jpeg = photos.four_face_jpeg()
    raw = api.post(ANALYZE, content=jpeg, headers={"content-type": "image/jpeg"}).json()
    form = api.post(ANALYZE, files={"image": ("four.jpg", jpeg, "image/jpeg")}).json()
    b64 = api.post(ANALYZE, json={"image": {"b64": base64.b64encode(jpeg).decode()}}).json()
    assert len(raw["faces"]) == 4
    assert _faces(raw) == _faces(form) == _faces(b64)
    octet = api.post(ANALYZE, content=jpeg, headers={"content-type": "application/octet-stream"}).json()
    assert _faces(octet) == _faces(raw)


def test_png_and_webp_bodies_work(api, photos):
    image = cv2.imdecode(np.frombuffer(photos.one_face_jpeg(), np.uint8), cv2.IMREAD_COLOR)
    for suffix, kind in ((".png", "image/png"), (".webp", "image/webp")):
        ok, buf = cv2.imencode(suffix, image)
        assert ok
        r = api.post(ANALYZE, content=buf.tobytes(), headers={"content-type": kind})
        assert r.status_code == 200, (kind, r.text)
        assert [f["emotion"] for f in r.json()["faces"]] == ["happy"]


@pytest.mark.parametrize("how", ["query", "accept"])
def test_annotate_returns_a_jpeg_of_the_photos_size(api, photos, how):
    params = {"annotate": "true"} if how == "query" else {}
    accept = "image/jpeg" if how == "accept" else "application/json"
    r = api.post(ANALYZE, params=params, content=photos.one_face_jpeg(),
                 headers={"content-type": "image/jpeg", "accept": accept})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/jpeg"
    image = cv2.imdecode(np.frombuffer(r.content, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None and image.shape == (480, 640, 3)
    original = cv2.imdecode(np.frombuffer(photos.one_face_jpeg(), np.uint8), cv2.IMREAD_COLOR)
    assert np.abs(image.astype(int) - original).mean() > 0.5  # something was drawn


def test_accept_json_first_keeps_json():
    from emotion_ai.gateway.app import wants_jpeg

    assert wants_jpeg("image/jpeg")
    assert wants_jpeg("image/jpeg, application/json;q=0.5")
    assert not wants_jpeg("application/json, image/jpeg;q=0.5")
    assert not wants_jpeg("*/*") and not wants_jpeg(None)


def test_batch_isolates_a_corrupt_image(api, photos):
    one, four = photos.one_face_jpeg(), photos.four_face_jpeg()
    files = [("images", ("one.jpg", one, "image/jpeg")), ("images", ("bad.jpg", one[: len(one) // 3], "image/jpeg")),
             ("images", ("four.jpg", four, "image/jpeg"))]
    r = api.post(BATCH, files=files)
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [e["index"] for e in results] == [0, 1, 2]
    assert [e["name"] for e in results] == ["one.jpg", "bad.jpg", "four.jpg"]
    assert [f["emotion"] for f in results[0]["prediction"]["faces"]] == ["happy"]
    assert "prediction" not in results[1]
    assert results[1]["error"]["status"] == 422 and results[1]["error"]["type"].endswith(":invalid-image")
    assert len(results[2]["prediction"]["faces"]) == 4
    as_json = api.post(BATCH, json={"images": [{"b64": base64.b64encode(x).decode()} for x in (one, four)]}).json()
    assert [len(e["prediction"]["faces"]) for e in as_json["results"]] == [1, 4]


def test_a_batch_over_the_image_limit_is_refused(api, photos):
    one = base64.b64encode(photos.one_face_jpeg()[:100]).decode()
    _assert_problem(api.post(BATCH, json={"images": [{"b64": one}] * 5}), 413, "too-many-images")


def _bomb_png(side: int = 3000) -> bytes:
    """A real, valid PNG of side x side black pixels (9 MP) that compresses to a few kilobytes."""
    ok, buf = cv2.imencode(".png", np.zeros((side, side), np.uint8), [cv2.IMWRITE_PNG_COMPRESSION, 9])
    assert ok and len(buf) < 50_000
    return buf.tobytes()


def _header_only_png(width: int, height: int) -> bytes:
    ihdr = np.array([width, height], ">u4").tobytes() + bytes([8, 2, 0, 0, 0])
    chunk = len(ihdr).to_bytes(4, "big") + b"IHDR" + ihdr
    return b"\x89PNG\r\n\x1a\n" + chunk + zlib.crc32(b"IHDR" + ihdr).to_bytes(4, "big")


@pytest.mark.parametrize(("case", "status", "kind"), [
    ("empty body", 400, "invalid-request"),
    ("truncated jpeg", 422, "invalid-image"),
    ("text as jpeg", 422, "invalid-image"),
    ("wrong content type", 415, "unsupported-media-type"),
    ("no content type", 415, "unsupported-media-type"),
    ("malformed json", 400, "invalid-request"),
    ("json without image", 400, "invalid-request"),
    ("json with a url", 400, "invalid-request"),
    ("malformed base64", 400, "invalid-request"),
    ("malformed multipart", 400, "invalid-request"),
    ("multipart without a file", 400, "invalid-request"),
    ("body too large", 413, "body-too-large"),
    ("decompression bomb", 413, "too-many-pixels"),
    ("huge header", 413, "too-many-pixels"),
    ("bad query value", 400, "invalid-request"),
    ("version and label", 400, "invalid-request"),
    ("unknown model version", 404, "model-not-found"),
])
def test_bad_inputs_are_problem_details(api, photos, case, status, kind):
    jpeg = photos.one_face_jpeg()
    image = {"content-type": "image/jpeg"}
    requests = {
        "empty body": lambda: api.post(ANALYZE, content=b"", headers=image),
        "truncated jpeg": lambda: api.post(ANALYZE, content=jpeg[: len(jpeg) // 3], headers=image),
        "text as jpeg": lambda: api.post(ANALYZE, content=b"hello, not an image", headers=image),
        "wrong content type": lambda: api.post(ANALYZE, content=jpeg, headers={"content-type": "text/plain"}),
        "no content type": lambda: api.post(ANALYZE, content=jpeg),
        "malformed json": lambda: api.post(ANALYZE, content=b'{"image": {"b64": ', headers={
            "content-type": "application/json"}),
        "json without image": lambda: api.post(ANALYZE, json={"picture": 1}),
        "json with a url": lambda: api.post(ANALYZE, json={"image": {"url": "http://169.254.169.254/"}}),
        "malformed base64": lambda: api.post(ANALYZE, json={"image": {"b64": "not base64!!"}}),
        "malformed multipart": lambda: api.post(ANALYZE, content=b"--x\r\ngarbage", headers={
            "content-type": "multipart/form-data; boundary=x"}),
        "multipart without a file": lambda: api.post(ANALYZE, files={"note": (None, b"text")}),
        "body too large": lambda: api.post(ANALYZE, content=b"\xff\xd8" + bytes(MAX_BODY), headers=image),
        "decompression bomb": lambda: api.post(ANALYZE, content=_bomb_png(), headers={"content-type": "image/png"}),
        "huge header": lambda: api.post(ANALYZE, content=_header_only_png(100_000, 100_000), headers={
            "content-type": "image/png"}),
        "bad query value": lambda: api.post(ANALYZE, params={"min_score": "2"}, content=jpeg, headers=image),
        "version and label": lambda: api.post(ANALYZE, params={"emotion_version": 1, "emotion_label": "stable"},
                                              content=jpeg, headers=image),
        "unknown model version": lambda: api.post(ANALYZE, params={"emotion_version": 999}, content=jpeg,
                                                  headers=image),
    }
    _assert_problem(requests[case](), status, kind)


def test_unknown_route_and_method_are_problem_details(api):
    _assert_problem(api.get("/v1/nothing"), 404, "not-found")
    _assert_problem(api.get(ANALYZE), 405, "method-not-allowed")


def test_query_options_pick_the_detector_and_the_model_variant(api, photos):
    jpeg = photos.one_face_jpeg()
    r = api.post(ANALYZE, params={"detector": "haar", "variant": "accurate"}, content=jpeg,
                 headers={"content-type": "image/jpeg"})
    assert r.status_code == 200, r.text
    doc = r.json()
    assert [f["emotion"] for f in doc["faces"]] == ["happy"]
    assert doc["models"]["emotion"] == spec.served_model(spec.EMOTION_MODEL, "accurate")
    pinned = api.post(ANALYZE, params={"emotion_version": 1, "min_score": 0.5}, content=jpeg,
                      headers={"content-type": "image/jpeg"})
    assert pinned.status_code in (200, 404), pinned.text  # version 1 may have been retired
    _assert_problem(api.post(ANALYZE, params={"detector": "yunet:/etc/passwd"}, content=jpeg,
                             headers={"content-type": "image/jpeg"}), 400, "invalid-request")


def test_auth_requires_one_of_the_keys(model_server, photos):
    settings = settings_for(model_server, api_keys=frozenset({"s3cret", "other"}))
    with gateway_client(settings) as client:
        body, image = photos.one_face_jpeg(), {"content-type": "image/jpeg"}
        missing = _assert_problem(client.post(ANALYZE, content=body, headers=image), 401, "unauthorized")
        assert missing["detail"].startswith("a bearer token is required")
        wrong = client.post(ANALYZE, content=body, headers=image | {"authorization": "Bearer nope"})
        _assert_problem(wrong, 401, "unauthorized")
        assert wrong.headers["www-authenticate"].startswith("Bearer")
        _assert_problem(client.post(ANALYZE, content=body, headers=image | {"authorization": "Basic s3cret"}), 401,
                        "unauthorized")
        ok = client.post(ANALYZE, content=body, headers=image | {"authorization": "Bearer s3cret"})
        assert ok.status_code == 200 and len(ok.json()["faces"]) == 1
        assert client.get("/healthz").status_code == 200  # operations stay open
        assert "emotion_ai_gateway_rejected_total" in client.get("/metrics").text


def test_a_full_gateway_answers_503_with_retry_after(model_server, photos):
    with gateway_client(settings_for(model_server, max_concurrency=1, retry_after=3)) as client:
        gate = client.app.state.gateway.gate
        with gate.slot():  # one analysis in flight: the limit
            r = client.post(ANALYZE, content=photos.one_face_jpeg(), headers={"content-type": "image/jpeg"})
            _assert_problem(r, 503, "overloaded")
            assert r.headers["retry-after"] == "3"
        assert client.post(ANALYZE, content=photos.one_face_jpeg(),
                           headers={"content-type": "image/jpeg"}).status_code == 200


def test_a_request_past_its_deadline_is_504(model_server, photos):
    with gateway_client(settings_for(model_server, deadline=0.001)) as client:
        _assert_problem(client.post(ANALYZE, content=photos.four_face_jpeg(), headers={"content-type": "image/jpeg"}),
                        504, "deadline-exceeded")


def test_health_readiness_and_metrics(api, photos):
    assert api.get("/healthz").json() == {"status": "ok"}
    ready = api.get("/readyz")
    assert ready.status_code == 200, ready.text
    doc = ready.json()
    assert doc["status"] == "ready"
    assert {s["state"] for s in doc["models"]["keypoints"]} >= {"AVAILABLE"}
    api.post(ANALYZE, content=photos.one_face_jpeg(), headers={"content-type": "image/jpeg"})
    api.post(ANALYZE, content=b"", headers={"content-type": "image/jpeg"})
    metrics = api.get("/metrics")
    assert metrics.status_code == 200 and metrics.headers["content-type"].startswith("text/plain")
    text = metrics.text
    assert 'emotion_ai_gateway_requests_total{method="POST",route="/v1/faces:analyze",status="200"}' in text
    assert 'emotion_ai_gateway_requests_total{method="POST",route="/v1/faces:analyze",status="400"}' in text
    assert 'emotion_ai_gateway_request_duration_seconds_bucket{le="0.5",method="POST",route="/v1/faces:analyze"}' \
        in text
    assert "emotion_ai_gateway_requests_in_flight" in text
    assert "emotion_ai_gateway_faces_per_image_count" in text
    if sys.platform == "linux":  # the process's own metrics: its resident memory, in bytes
        rss = [line for line in text.splitlines() if line.startswith("process_resident_memory_bytes ")]
        assert len(rss) == 1 and float(rss[0].split()[1]) > 10 * 2**20


def test_readyz_is_503_when_the_model_server_is_unreachable():
    settings = GatewaySettings(client=ClientOptions(host="127.0.0.1", grpc_port=free_port(), timeout=1, retries=0))
    with gateway_client(settings) as client:
        assert client.get("/healthz").status_code == 200
        r = client.get("/readyz")
        _assert_problem(r, 503, "not-ready")
        assert r.headers["retry-after"]
        _assert_problem(client.post(ANALYZE, content=_header_only_png(10, 10)[:8] + b"x",
                                    headers={"content-type": "image/png"}), 422, "invalid-image")


def test_openapi_lists_the_routes_and_the_docs_need_no_cdn(api):
    schema = api.get("/openapi.json").json()
    assert {"/v1/faces:analyze", "/v1/faces:batchAnalyze", "/healthz", "/readyz", "/metrics"} <= set(schema["paths"])
    analyze = schema["paths"]["/v1/faces:analyze"]["post"]
    assert {"image/jpeg", "multipart/form-data", "application/json"} <= set(analyze["requestBody"]["content"])
    assert {p["name"] for p in analyze["parameters"]} >= {"detector", "variant", "annotate", "emotion_version"}
    ok = analyze["responses"]["200"]["content"]
    assert ok["application/json"]["schema"]["$ref"].endswith("/PredictionOut") and "image/jpeg" in ok
    assert analyze["responses"]["413"]["content"]["application/problem+json"]["schema"]["$ref"].endswith("/ProblemOut")
    assert "422" not in schema["paths"]["/v1/faces:batchAnalyze"]["post"]["responses"]  # bad queries are 400 here
    assert {"PredictionOut", "FaceOut", "ProblemOut", "BatchOut"} <= set(schema["components"]["schemas"])
    assert "HTTPValidationError" not in schema["components"]["schemas"]
    docs = api.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    assert "cdn." not in docs.text and "https://" not in docs.text.split("<body>")[0]
    js = [line for line in docs.text.splitlines() if ".js" in line]
    assert js and all("static-offline-docs" in line for line in js if "src=" in line)


def test_a_multipart_batch_over_the_image_limit_is_refused(api, photos):
    files = [("images", (f"{i}.jpg", b"\xff\xd8", "image/jpeg")) for i in range(6)]
    _assert_problem(api.post(BATCH, files=files), 413, "too-many-images")


def test_an_unexpected_error_is_a_500_without_its_details(api, photos, monkeypatch):
    def broken(options):
        raise RuntimeError("secret internals /etc/shadow")

    monkeypatch.setattr(api.app.state.gateway.clients, "get", broken)
    r = api.post(ANALYZE, content=photos.one_face_jpeg(), headers={"content-type": "image/jpeg"})
    _assert_problem(r, 500, "internal-error")
    assert "secret" not in r.text and "RuntimeError" not in r.text


def test_the_web_page_loads_only_its_own_files(api):
    page = api.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert "http://" not in page.text and "https://" not in page.text and "//cdn" not in page.text
    for asset, kind in (("/ui/app.js", "javascript"), ("/ui/app.css", "text/css")):
        r = api.get(asset)
        assert r.status_code == 200 and kind in r.headers["content-type"], asset
        assert "http://" not in r.text and "https://" not in r.text
    js = api.get("/ui/app.js").text
    assert "v1/faces:analyze" in js and "v1/stream" in js
    assert "/" not in api.get("/openapi.json").json()["paths"]


def test_cors_allows_only_the_listed_origins():
    settings = GatewaySettings(client=ClientOptions(host="127.0.0.1", grpc_port=free_port(), timeout=1, retries=0),
                               cors_origins=("https://app.example",))
    with gateway_client(settings) as client:
        preflight = {"access-control-request-method": "POST", "access-control-request-headers": "authorization"}
        ok = client.options(ANALYZE, headers={"origin": "https://app.example"} | preflight)
        assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == "https://app.example"
        other = client.options(ANALYZE, headers={"origin": "https://evil.example"} | preflight)
        assert "access-control-allow-origin" not in other.headers
        plain = client.get("/healthz", headers={"origin": "https://evil.example"})
        assert "access-control-allow-origin" not in plain.headers
    with gateway_client(GatewaySettings(client=settings.client)) as client:  # no list: no CORS at all
        r = client.get("/healthz", headers={"origin": "https://app.example"})
        assert "access-control-allow-origin" not in r.headers
