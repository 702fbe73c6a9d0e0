"""Unit tests: tensors, images, crop geometry, merging, labels, errors, retries, tracking."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import cv2
import grpc
import numpy as np
import pytest
from emotion_ai import spec
from emotion_ai._proto import tfs_pb2 as pb
from emotion_ai.detect import Detection
from emotion_ai.errors import (
    InvalidImageError,
    ModelNotFoundError,
    RequestTimeoutError,
    ServerError,
    ServerUnavailableError,
)
from emotion_ai.grpc_transport import map_rpc_error
from emotion_ai.images import load_image, probe_size
from emotion_ai.merge import check_emotion_outputs, merge_faces
from emotion_ai.preprocess import CropTransform, crop_square, model_inputs, square_for_box
from emotion_ai.rest_transport import map_http_error, model_path, parse_predict_response, predict_body
from emotion_ai.tensors import json_to_numpy, make_tensor_proto, numpy_to_json, tensor_proto_to_numpy
from emotion_ai.tracking import IoUTracker, iou
from emotion_ai.transport import ModelRef, RetryableError, RetryPolicy, with_retries

from .conftest import FakeRpcError, FakeTransport


def test_client_imports_without_tensorflow():
    code = (
        "import sys; sys.modules['tensorflow'] = None; sys.modules['tensorflow_serving'] = None\n"
        "import emotion_ai, emotion_ai.cli, emotion_ai.client\n"
        "assert not any(m.startswith('tensorflow') and sys.modules[m] for m in sys.modules)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# -- tensors ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "dtype", [np.uint8, np.float32, np.float64, np.int32, np.int64, np.float16]
)
def test_tensor_content_round_trip(dtype):
    a = (np.arange(24) % 7).astype(dtype).reshape(2, 3, 4)
    proto = make_tensor_proto(a)
    assert proto.tensor_content and [d.size for d in proto.tensor_shape.dim] == [2, 3, 4]
    out = tensor_proto_to_numpy(proto)
    assert out.dtype == a.dtype
    np.testing.assert_array_equal(out, a)


def test_val_fields_decode_and_single_value_broadcasts():
    t = pb.TensorProto(dtype=pb.DT_FLOAT)
    t.tensor_shape.dim.add(size=2)
    t.tensor_shape.dim.add(size=2)
    t.float_val.append(0.5)
    np.testing.assert_array_equal(tensor_proto_to_numpy(t), np.full((2, 2), 0.5, np.float32))
    h = pb.TensorProto(dtype=pb.DT_HALF)
    h.tensor_shape.dim.add(size=2)
    h.half_val.extend(np.array([1.5, -2.0], np.float16).view(np.uint16).tolist())
    np.testing.assert_array_equal(tensor_proto_to_numpy(h), [1.5, -2.0])
    s = make_tensor_proto(np.array([["a", "bé"]]))
    assert s.dtype == pb.DT_STRING and list(s.string_val) == [b"a", "bé".encode()]
    assert tensor_proto_to_numpy(s).tolist() == [["a", "bé"]]
    bad = pb.TensorProto(dtype=pb.DT_FLOAT)
    bad.tensor_shape.dim.add(size=3)
    bad.float_val.extend([1.0, 2.0])
    with pytest.raises(ValueError, match="2 values for shape"):
        tensor_proto_to_numpy(bad)


def test_rest_output_parsing_columnar_row_b64_nan():
    doc = json.loads('{"outputs": {"scores": [[NaN, 0.5]], "classes": [["a", "b"]]}}')
    out = parse_predict_response(doc)
    assert np.isnan(out["scores"][0, 0]) and out["classes"].tolist() == [["a", "b"]]
    assert parse_predict_response({"outputs": [[1.0, 2.0]]})[""].shape == (1, 2)
    rows = parse_predict_response({"predictions": [{"x": [1], "y_bytes": {"b64": "aGk="}}]})
    assert rows["x"].tolist() == [[1]] and rows["y_bytes"].tolist() == ["hi"]
    assert json_to_numpy([{"b64": "aGVsbG8="}]).tolist() == ["hello"]
    with pytest.raises(ServerError, match="neither"):
        parse_predict_response({"result": 1})


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.int64, np.uint16, np.uint64])
def test_numpy_to_json_integers_match_tolist(dtype):
    rng = np.random.default_rng(3)
    info = np.iinfo(dtype)
    for shape in [(), (1,), (7,), (2, 3), (3, 5, 4, 1), (2, 1, 1, 3)]:
        values = rng.integers(info.min, info.max, size=shape, dtype=dtype, endpoint=True)
        text = numpy_to_json(values)
        assert json.loads(text) == values.tolist(), (dtype, shape, text[:80])
    ends = np.array([info.min, info.max, 0, 9, 10, 99, 100], dtype=dtype)
    assert json.loads(numpy_to_json(ends)) == ends.tolist()


def test_numpy_to_json_other_dtypes_and_empty_arrays_fall_back_to_lists():
    assert numpy_to_json(np.array([1.5, np.nan])) == "[1.5,NaN]"
    assert numpy_to_json(np.array([[True, False]])) == "[[true,false]]"
    assert numpy_to_json(np.zeros((0, 3), np.uint8)) == "[]"
    assert numpy_to_json(np.array([2**64 - 1], np.uint64)) == "[18446744073709551615]"
    assert numpy_to_json(np.array([-3, 42, 7])) == "[-3,42, 7]"  # one width, blanks to the left


def test_predict_body_is_the_columnar_request_the_server_parses():
    from emotion_ai_serving.json_tensor import InputSpec, parse_json_object, predict_tensors_from_json

    pixels = np.random.default_rng(0).integers(0, 256, (3, 96, 96, 1), dtype=np.uint8)
    body = predict_body(ModelRef("keypoints", signature_name="serving_default"), {"image": pixels})
    doc = parse_json_object(body)
    assert doc["signature_name"] == "serving_default" and list(doc) == ["inputs", "signature_name"]
    tensors, rows = predict_tensors_from_json(doc, {"image": InputSpec("uint8", np.uint8)}, may_contain_bools=False)
    assert not rows and tensors["image"].dtype == np.uint8
    np.testing.assert_array_equal(tensors["image"], pixels)


# -- images ----------------------------------------------------------------------------------------
def test_image_inputs_path_bytes_and_arrays(tmp_path, astronaut_bgr, astronaut_jpeg):
    path = tmp_path / "ünïcode face.jpg"
    path.write_bytes(astronaut_jpeg)
    from_path = load_image(path)
    assert from_path.shape == (512, 512, 3) and from_path.dtype == np.uint8
    np.testing.assert_array_equal(load_image(str(path)), load_image(astronaut_jpeg))
    rgb = astronaut_bgr[:, :, ::-1]
    np.testing.assert_array_equal(load_image(rgb, color="rgb"), astronaut_bgr)
    gray = cv2.cvtColor(astronaut_bgr, cv2.COLOR_BGR2GRAY)
    assert load_image(gray).shape == (512, 512, 3)
    assert load_image(gray[:, :, None]).shape == (512, 512, 3)
    bgra = cv2.cvtColor(astronaut_bgr, cv2.COLOR_BGR2BGRA)
    np.testing.assert_array_equal(load_image(bgra), astronaut_bgr)
    sixteen = astronaut_bgr.astype(np.uint16) * 257
    np.testing.assert_array_equal(load_image(sixteen), astronaut_bgr)
    np.testing.assert_array_equal(load_image(astronaut_bgr / 255.0), astronaut_bgr)
    png16 = cv2.imencode(".png", sixteen)[1].tobytes()
    np.testing.assert_array_equal(load_image(png16), astronaut_bgr)


def test_gif_first_frame_and_cmyk_jpeg(astronaut_bgr):
    imageio = pytest.importorskip("imageio.v3")
    frames = np.stack([astronaut_bgr[:, :, ::-1], 255 - astronaut_bgr[:, :, ::-1]])
    gif = imageio.imwrite("<bytes>", frames, extension=".gif")
    img = load_image(gif)
    assert img.shape == (512, 512, 3)
    assert np.abs(img.astype(int) - astronaut_bgr).mean() < 30  # first frame, not the inverted one
    pil = pytest.importorskip("PIL.Image")
    import io

    buf = io.BytesIO()
    pil.fromarray(astronaut_bgr[:, :, ::-1]).convert("CMYK").save(buf, "JPEG", quality=95)
    cmyk = load_image(buf.getvalue())
    assert np.abs(cmyk.astype(int) - astronaut_bgr).mean() < 10


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"hello, I am a text file\n", "not an image"),
        (np.zeros((0, 10), np.uint8), "no pixels"),
        (np.zeros((4, 4, 2), np.uint8), "H x W"),
        (np.full((4, 4), np.nan), "NaN"),
        (12345, "cannot read an image from a int"),
    ],
)
def test_invalid_inputs_raise_invalid_image_error(data, message):
    with pytest.raises(InvalidImageError, match=message):
        load_image(data)


def test_truncated_and_huge_header_images(astronaut_jpeg, tmp_path):
    with pytest.raises(InvalidImageError, match="truncated or corrupt"):
        load_image(astronaut_jpeg[: len(astronaut_jpeg) // 3])
    png = cv2.imencode(".png", np.zeros((8, 8), np.uint8))[1].tobytes()
    huge = png[:16] + (100_000).to_bytes(4, "big") + (100_000).to_bytes(4, "big") + png[24:]
    assert probe_size(huge) == (100_000, 100_000)
    t = time.perf_counter()
    with pytest.raises(InvalidImageError, match=r"100000 x 100000 pixels, more than"):
        load_image(huge)
    assert time.perf_counter() - t < 0.5  # refused from the header, nothing decoded
    with pytest.raises(InvalidImageError, match="truncated"):
        load_image(png[:20])
    assert probe_size(astronaut_jpeg) == (512, 512)
    with pytest.raises(InvalidImageError, match="no such file"):
        load_image(tmp_path / "missing.png")
    with pytest.raises(InvalidImageError, match="directory"):
        load_image(tmp_path)


def test_png_needs_its_iend_chunk_but_may_have_bytes_after_it():
    gray = np.arange(64, dtype=np.uint8).reshape(8, 8)
    png = cv2.imencode(".png", gray)[1].tobytes()
    iend = png.rindex(b"IEND") - 4
    for cut in (len(png) // 2, iend, iend + 6):
        with pytest.raises(InvalidImageError, match="PNG without its IEND chunk"):
            load_image(png[:cut])
    # Trailing bytes after IEND (appended metadata, padding) are legal and must decode.
    for tail in (b"\0" * 100, b"IEND" * 3, b"trailing text"):
        np.testing.assert_array_equal(load_image(png + tail)[:, :, 0], gray)


# -- geometry --------------------------------------------------------------------------------------
def test_crop_transform_round_trip_exact():
    t = CropTransform(left=-13, top=40, side=157, size=96)
    pts = np.random.default_rng(0).uniform(-5, 100, size=(15, 2))
    np.testing.assert_allclose(t.to_crop(t.to_original(pts)), pts, atol=1e-9)


@pytest.mark.parametrize(
    "box", [(150.0, 90.0, 120.0, 120.0), (-20.0, 300.0, 160.0, 160.0), (525, -12, 110, 110)]
)
def test_synthetic_points_round_trip_within_half_pixel(box):
    """Blobs drawn at known sub-pixel points are found again in the 96-px crop and mapped back."""
    h, w = 420, 640
    x, y, bw, bh = box
    rng = np.random.default_rng(1)
    truth = np.column_stack(
        [rng.uniform(x + 0.2 * bw, x + 0.8 * bw, 8), rng.uniform(y + 0.2 * bh, y + 0.8 * bh, 8)]
    )
    sigma = 0.03 * bw
    m = 5 * sigma  # blobs whose tails reach the border would be skewed by the padding
    truth = truth[
        (truth[:, 0] > m) & (truth[:, 0] < w - m) & (truth[:, 1] > m) & (truth[:, 1] < h - m)
    ]
    assert len(truth) >= 2
    yy, xx = np.mgrid[0:h, 0:w]
    for geometry in [g for c in spec.CROPS.values() for g in (c.keypoints, c.emotion)]:
        size = spec.KEYPOINTS_INPUT_SIZE
        t = square_for_box(box, geometry, size)
        for px, py in truth:
            img = np.exp(-((xx - px) ** 2 + (yy - py) ** 2) / (2 * sigma**2)) * 250
            crop = crop_square(img.astype(np.float32), t)
            cy, cx = np.mgrid[0:size, 0:size]
            wsum = crop.sum()
            found = np.array([(crop * cx).sum() / wsum, (crop * cy).sum() / wsum])
            back = t.to_original(found)
            assert np.abs(back - (px, py)).max() < 0.5, (back, (px, py))


def test_crop_pads_by_edge_replication_and_batches():
    gray = np.tile(np.arange(100, dtype=np.uint8), (80, 1))  # value = column index
    t = CropTransform(left=-20, top=-10, side=40, size=40)
    crop = crop_square(gray, t)
    assert crop.shape == (40, 40)
    assert (crop[:, :21] == 0).all()  # left padding replicates column 0
    np.testing.assert_array_equal(crop[0, 20:], np.arange(0, 20))
    far = crop_square(gray, CropTransform(left=500, top=500, side=30, size=10))
    assert far.shape == (10, 10) and (far == 99).all()
    batch, tfs = model_inputs(gray, [(10, 10, 30, 30), (50, 20, 40, 40)], spec.CROPS["haar"].emotion, 48)
    assert batch.shape == (2, 48, 48, 1) and batch.dtype == np.uint8 and len(tfs) == 2


# -- merging and labels ----------------------------------------------------------------------------
def test_merge_maps_keypoints_and_uses_model_labels():
    dets = [Detection((100.0, 50.0, 96.0, 96.0), 0.9), Detection((300.0, 60.0, 48.0, 48.0), 0.8)]
    tfs = [CropTransform(100, 50, 96, 96), CropTransform(300, 60, 48, 96)]
    kp = np.zeros((2, 15, 2))
    kp[:, 0] = (30.0, 40.0)
    labels = ["surprise", "angry", "happy"]
    scores = np.array([[0.1, 0.2, 0.7], [0.6, 0.3, 0.1]])
    classes = np.array([labels, labels])
    faces = merge_faces(dets, tfs, kp, scores, classes)
    assert faces[0].keypoints["left_eye_center"] == (130.0, 90.0)
    assert faces[1].keypoints["left_eye_center"] == pytest.approx(
        (300 + 30.5 * 0.5 - 0.5, 60 + 40.5 * 0.5 - 0.5)
    )
    assert list(faces[0].keypoints) == list(spec.KEYPOINT_NAMES)
    assert faces[0].emotion == "happy" and faces[1].emotion == "surprise"
    assert faces[0].scores == {"surprise": 0.1, "angry": 0.2, "happy": 0.7}
    assert faces[1].detection_score == 0.8 and faces[1].box == (300.0, 60.0, 48.0, 48.0)


def test_check_emotion_outputs_shapes():
    ref = ModelRef("emotion")
    _, c = check_emotion_outputs(np.ones((2, 3)), np.array(["a", "b", "c"]), 2, ref)
    assert c.shape == (2, 3)
    with pytest.raises(ServerError, match="classes of shape"):
        check_emotion_outputs(np.ones((2, 3)), np.array([["a", "b"]] * 2), 2, ref)
    with pytest.raises(ServerError, match="scores of shape"):
        check_emotion_outputs(np.ones((3, 3)), np.array(["a", "b", "c"]), 2, ref)


# -- error mapping ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "details", "kind"),
    [
        (
            grpc.StatusCode.NOT_FOUND,
            "Servable not found for request: Latest(x)",
            ModelNotFoundError,
        ),
        (
            grpc.StatusCode.INVALID_ARGUMENT,
            "Unrecognized servable version label: beta",
            ModelNotFoundError,
        ),
        (
            grpc.StatusCode.FAILED_PRECONDITION,
            'Serving signature name: "s" not found in signature def',
            ModelNotFoundError,
        ),
        (grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded", RequestTimeoutError),
        (grpc.StatusCode.INVALID_ARGUMENT, "input size does not match signature", ServerError),
        (grpc.StatusCode.INTERNAL, "boom", ServerError),
    ],
)
def test_grpc_error_mapping(code, details, kind):
    err = map_rpc_error(FakeRpcError(code, details), ModelRef("x"))
    assert type(err) is kind
    if isinstance(err, ServerError):
        assert err.message == details and err.code == code.name


@pytest.mark.parametrize(
    ("status", "body", "ctype", "kind", "text"),
    [
        (
            404,
            b'{ "error": "Servable not found for request: Latest(half)" }',
            "application/json",
            ModelNotFoundError,
            "Latest(half)",
        ),
        (
            400,
            b'{"error": "Unrecognized servable version label: beta"}',
            "application/json",
            ModelNotFoundError,
            "beta",
        ),
        (
            400,
            b'{\n    "error": "JSON Parse error: Invalid value. at offset: 0"\n}',
            "application/json",
            ServerError,
            "JSON Parse error",
        ),
        (504, b'{"error": "deadline"}', "application/json", RequestTimeoutError, "deadline"),
        (500, b"not json", "text/plain", ServerError, "not json"),
        (
            404,
            b"<HTML><HEAD>\n<TITLE>404 Not Found</TITLE>",
            "text/html",
            ServerError,
            "not a TF Serving REST endpoint",
        ),
    ],
)
def test_http_error_mapping(status, body, ctype, kind, text):
    err = map_http_error(status, body, ModelRef("half"), ctype)
    assert type(err) is kind
    assert text in str(err)
    if isinstance(err, ServerError):
        assert err.http_status == status


def test_rest_model_paths():
    assert model_path(ModelRef("emotion")) == "/v1/models/emotion"
    assert model_path(ModelRef("a/b", version=3)) == "/v1/models/a%2Fb/versions/3"
    assert model_path(ModelRef("m", version_label="st:able")) == "/v1/models/m/labels/st%3Aable"
    with pytest.raises(ValueError, match="not both"):
        ModelRef("m", version=1, version_label="x")


def test_retries_are_bounded_with_backoff():
    sleeps: list[float] = []
    attempts = []

    def attempt(remaining):
        attempts.append(remaining)
        raise RetryableError("connection refused")

    policy = RetryPolicy(retries=3, backoff=0.1, sleep=sleeps.append)
    with pytest.raises(ServerUnavailableError, match="gave up after 4 attempt"):
        with_retries(attempt, timeout=30, policy=policy, what="predict")
    assert sleeps == [0.1, 0.2, 0.4] and len(attempts) == 4
    # a backoff that would overrun the deadline stops early
    sleeps.clear()

    def real_sleep(seconds: float) -> None:
        sleeps.append(seconds)
        time.sleep(seconds)

    with pytest.raises(ServerUnavailableError):
        with_retries(
            attempt,
            timeout=0.25,
            policy=RetryPolicy(retries=5, backoff=0.1, sleep=real_sleep),
            what="p",
        )
    assert sleeps == [0.1]  # 0.1 s in, the next backoff (0.2 s) would pass the 0.25 s deadline
    # success after a retry
    state = {"n": 0}

    def flaky(remaining):
        state["n"] += 1
        if state["n"] < 2:
            raise RetryableError("503")
        return "ok"

    assert (
        with_retries(flaky, timeout=5, policy=RetryPolicy(sleep=lambda s: None), what="p") == "ok"
    )


def test_unreachable_servers_fail_fast_with_typed_error():
    from emotion_ai import EmotionClient

    for protocol in ("grpc", "rest"):
        with EmotionClient(
            protocol=protocol, grpc_port=9, rest_port=9, timeout=3, retries=2
        ) as client:
            t = time.perf_counter()
            with pytest.raises(ServerUnavailableError):
                client.status()
            assert time.perf_counter() - t < 3.5


# -- tracking --------------------------------------------------------------------------------------
def test_iou_tracker_keeps_ids_and_forgets_old_tracks():
    assert iou((0, 0, 10, 10), (5, 0, 10, 10)) == pytest.approx(50 / 150)
    tr = IoUTracker(max_age=2)
    assert tr.update([(0, 0, 50, 50), (200, 0, 50, 50)]) == [1, 2]
    assert tr.update([(205, 3, 50, 50), (4, 2, 50, 50)]) == [2, 1]
    assert tr.update([(35, 0, 50, 50)]) == [1]  # moved fast (IoU 0.24): centroid fallback
    tr.update([])
    tr.update([])
    tr.update([])
    assert tr.active == 0
    assert tr.update([(0, 0, 50, 50)]) == [3]


def test_options_and_keyword_options_are_never_mixed_silently():
    from emotion_ai import EmotionClient
    from emotion_ai.client import ClientOptions

    options = ClientOptions(timeout=4.0)
    with pytest.raises(TypeError, match=r"not both .*timeout"):
        EmotionClient(options=options, timeout=1.0)
    with pytest.raises(TypeError, match="grpc_port"):
        EmotionClient(options=options, grpc_port=1)
    client = EmotionClient.from_options(options, transport=FakeTransport())
    try:
        assert client.options is options and client.options.timeout == 4.0
    finally:
        client.close()
    defaults = EmotionClient(transport=FakeTransport())
    try:
        assert defaults.options == ClientOptions()
    finally:
        defaults.close()


def test_cli_connection_defaults_are_the_client_options_defaults():
    from emotion_ai.cli import build_parser
    from emotion_ai.client import ClientOptions

    args = build_parser().parse_args(["status"])
    d = ClientOptions()
    assert (args.host, args.protocol, args.grpc_port, args.rest_port, args.timeout) == (
        d.host, d.protocol, d.grpc_port, d.rest_port, d.timeout)


@pytest.mark.parametrize("doc", [
    {"outputs": {"scores": [[1.0], [1.0, 2.0]]}},      # ragged
    {"predictions": [{"scores": [1.0]}, {"other": 1}]},  # rows with different keys
    {"predictions": {"scores": 1}},                     # not a list of rows
])
def test_malformed_rest_predict_replies_are_server_errors(doc):
    with pytest.raises(ServerError, match="malformed predict reply"):
        parse_predict_response(doc)


def test_malformed_grpc_tensor_is_a_server_error():
    from emotion_ai.grpc_transport import GrpcTransport

    proto = pb.TensorProto(dtype=pb.DT_FLOAT, tensor_shape=pb.TensorShapeProto(dim=[pb.TensorShapeProto.Dim(size=3)]))
    proto.float_val.extend([1.0, 2.0])  # 2 values for 3 elements
    with pytest.raises(ValueError):
        tensor_proto_to_numpy(proto)
    transport = GrpcTransport("127.0.0.1:9")
    transport._call = lambda *a, **k: pb.PredictResponse(outputs={"scores": proto})
    try:
        with pytest.raises(ServerError, match="malformed predict reply"):
            transport.predict(ModelRef("emotion"), {"image": np.zeros((1, 48, 48, 1), np.uint8)}, 1.0)
    finally:
        transport.close()


def test_cli_environment_defaults_and_model_flags(monkeypatch, capsys):
    from emotion_ai import cli, cli_support

    monkeypatch.setenv("EMOTION_AI_HOST", "serving.internal")
    monkeypatch.setenv("EMOTION_AI_PROTOCOL", "rest")
    monkeypatch.setenv("EMOTION_AI_REST_PORT", "18501")
    args = cli.build_parser().parse_args(["status", "--emotion-version", "5", "--keypoints-label", "stable"])
    assert (args.host, args.protocol, args.rest_port) == ("serving.internal", "rest", 18501)
    client = cli_support.client_from_args(args)
    try:
        assert client.models["emotion"] == ModelRef("emotion", version=5)
        assert client.models["keypoints"] == ModelRef("keypoints", version_label="stable")
        assert client.options.host == "serving.internal" and client.options.protocol == "rest"
    finally:
        client.close()
    assert cli.build_parser().parse_args(["status", "--host", "other"]).host == "other"  # flags win
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["status", "--emotion-version", "5", "--emotion-label", "x"])
    monkeypatch.setenv("EMOTION_AI_GRPC_PORT", "not-a-port")
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        cli.build_parser()
    assert exc.value.code == 2
    assert capsys.readouterr().err == (
        "emotion-ai: error: EMOTION_AI_GRPC_PORT='not-a-port': 'not-a-port' is not an integer\n")


@pytest.mark.parametrize("doc", [[1, 2], {"model_version_status": [3]}, {"model_version_status": [{"version": "x"}]}])
def test_malformed_status_reply_is_a_server_error(doc):
    from emotion_ai.errors import ServerError
    from emotion_ai.rest_transport import parse_status_response

    with pytest.raises(ServerError, match="malformed model status"):
        parse_status_response(doc)
