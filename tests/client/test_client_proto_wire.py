"""The client's own TF Serving messages are wire-compatible with tensorflow-serving-api's."""

from __future__ import annotations

import numpy as np
import pytest
from emotion_ai._proto import tfs_pb2 as ours
from emotion_ai.tensors import make_tensor_proto, tensor_proto_to_numpy

predict_pb2 = pytest.importorskip("tensorflow_serving.apis.predict_pb2")
from google.protobuf import any_pb2  # noqa: E402
from tensorflow.core.framework import tensor_pb2, types_pb2  # noqa: E402
from tensorflow.core.protobuf import meta_graph_pb2  # noqa: E402
from tensorflow_serving.apis import (  # noqa: E402
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_pb2,
    status_pb2,
)

PAIRS = [
    (
        ours.TensorShapeProto,
        tensor_pb2.TensorProto.DESCRIPTOR.fields_by_name["tensor_shape"].message_type,
    ),
    (ours.TensorProto, tensor_pb2.TensorProto.DESCRIPTOR),
    (ours.ModelSpec, model_pb2.ModelSpec.DESCRIPTOR),
    (ours.PredictRequest, predict_pb2.PredictRequest.DESCRIPTOR),
    (ours.PredictResponse, predict_pb2.PredictResponse.DESCRIPTOR),
    (ours.TensorInfo, meta_graph_pb2.TensorInfo.DESCRIPTOR),
    (ours.SignatureDef, meta_graph_pb2.SignatureDef.DESCRIPTOR),
    (ours.SignatureDefMap, get_model_metadata_pb2.SignatureDefMap.DESCRIPTOR),
    (ours.GetModelMetadataRequest, get_model_metadata_pb2.GetModelMetadataRequest.DESCRIPTOR),
    (ours.GetModelMetadataResponse, get_model_metadata_pb2.GetModelMetadataResponse.DESCRIPTOR),
    (ours.GetModelStatusRequest, get_model_status_pb2.GetModelStatusRequest.DESCRIPTOR),
    (ours.GetModelStatusResponse, get_model_status_pb2.GetModelStatusResponse.DESCRIPTOR),
    (ours.ModelVersionStatus, get_model_status_pb2.ModelVersionStatus.DESCRIPTOR),
    (ours.StatusProto, status_pb2.StatusProto.DESCRIPTOR),
]


def test_distinct_proto_package_so_both_load_in_one_process():
    assert ours.PredictRequest.DESCRIPTOR.full_name == "emotion_ai.tfs.PredictRequest"
    assert predict_pb2.PredictRequest.DESCRIPTOR.full_name == "tensorflow.serving.PredictRequest"


@pytest.mark.parametrize(("mine", "official"), PAIRS, ids=lambda p: getattr(p, "__name__", ""))
def test_every_field_matches_upstream_number_type_and_label(mine, official):
    for field in mine.DESCRIPTOR.fields:
        up = official.fields_by_number[field.number]
        assert up.name == field.name
        assert up.type == field.type, field.name
        assert up.is_repeated == field.is_repeated, field.name
        if field.message_type is not None:
            assert up.message_type.name == field.message_type.name
        if field.type in (field.TYPE_FLOAT, field.TYPE_INT32, field.TYPE_INT64, field.TYPE_DOUBLE):
            assert up.is_packed == field.is_packed, field.name


def test_enum_numbers_match_upstream():
    for value in ours.DataType.DESCRIPTOR.values:
        assert types_pb2.DataType.Value(value.name) == value.number
    code = status_pb2.StatusProto.DESCRIPTOR.fields_by_name["error_code"].enum_type
    for value in ours.ErrorCode.DESCRIPTOR.values:
        assert code.values_by_name[value.name].number == value.number
    for value in ours.ModelVersionStatus.State.DESCRIPTOR.values:
        assert get_model_status_pb2.ModelVersionStatus.State.Value(value.name) == value.number


def _our_request() -> ours.PredictRequest:
    req = ours.PredictRequest()
    req.model_spec.name = "keypoints"
    req.model_spec.version.value = 3
    req.model_spec.signature_name = "serving_default"
    image = (np.arange(2 * 96 * 96) % 256).astype(np.uint8).reshape(2, 96, 96, 1)
    req.inputs["image"].CopyFrom(make_tensor_proto(image))
    req.output_filter.append("keypoints")
    return req


def test_our_predict_request_parses_with_official():
    wire = _our_request().SerializeToString()
    official = predict_pb2.PredictRequest.FromString(wire)
    assert official.model_spec.name == "keypoints"
    assert official.model_spec.version.value == 3
    assert official.model_spec.signature_name == "serving_default"
    t = official.inputs["image"]
    assert t.dtype == types_pb2.DT_UINT8
    assert [d.size for d in t.tensor_shape.dim] == [2, 96, 96, 1]
    assert t.tensor_content == (np.arange(2 * 96 * 96) % 256).astype(np.uint8).tobytes()
    assert list(official.output_filter) == ["keypoints"]
    # ... and back again, byte for byte.
    assert ours.PredictRequest.FromString(official.SerializeToString()) == _our_request()


def test_version_label_round_trips_both_ways():
    mine = ours.ModelSpec(name="emotion", version_label="stable", signature_name="s")
    official = model_pb2.ModelSpec.FromString(mine.SerializeToString())
    assert official.WhichOneof("version_choice") == "version_label"
    assert official.version_label == "stable"
    back = ours.ModelSpec.FromString(official.SerializeToString())
    assert back.WhichOneof("version_choice") == "version_label" and back.version_label == "stable"


def test_official_predict_response_parses_with_ours_val_fields_and_content():
    resp = predict_pb2.PredictResponse()
    resp.model_spec.name = "emotion"
    resp.model_spec.version.value = 1
    scores = resp.outputs["scores"]
    scores.dtype = types_pb2.DT_FLOAT
    scores.tensor_shape.dim.add(size=2)
    scores.tensor_shape.dim.add(size=3)
    scores.float_val.extend([0.1, 0.2, 0.7, 0.5, 0.25, 0.25])
    classes = resp.outputs["classes"]
    classes.dtype = types_pb2.DT_STRING
    classes.tensor_shape.dim.add(size=2)
    classes.tensor_shape.dim.add(size=3)
    classes.string_val.extend([b"angry", b"happy", b"sad"] * 2)
    kp = resp.outputs["keypoints"]
    kp.dtype = types_pb2.DT_FLOAT
    kp.tensor_shape.dim.add(size=1)
    kp.tensor_shape.dim.add(size=2)
    kp.tensor_content = np.array([[1.5, -2.25]], np.float32).tobytes()

    mine = ours.PredictResponse.FromString(resp.SerializeToString())
    assert mine.model_spec.name == "emotion" and mine.model_spec.version.value == 1
    np.testing.assert_allclose(
        tensor_proto_to_numpy(mine.outputs["scores"]),
        [[0.1, 0.2, 0.7], [0.5, 0.25, 0.25]],
        rtol=1e-6,
    )
    assert (
        tensor_proto_to_numpy(mine.outputs["classes"]).tolist() == [["angry", "happy", "sad"]] * 2
    )
    np.testing.assert_array_equal(tensor_proto_to_numpy(mine.outputs["keypoints"]), [[1.5, -2.25]])
    assert predict_pb2.PredictResponse.FromString(mine.SerializeToString()) == resp


def test_metadata_any_payload_parses_with_our_signature_def_map():
    sig_map = get_model_metadata_pb2.SignatureDefMap()
    sd = sig_map.signature_def["serving_default"]
    sd.method_name = "tensorflow/serving/predict"
    sd.inputs["image"].name = "serving_default_image:0"
    sd.inputs["image"].dtype = types_pb2.DT_UINT8
    for s in (-1, 96, 96, 1):
        sd.inputs["image"].tensor_shape.dim.add(size=s)
    sd.outputs["keypoints"].dtype = types_pb2.DT_FLOAT
    sd.outputs["keypoints"].tensor_shape.unknown_rank = True
    resp = get_model_metadata_pb2.GetModelMetadataResponse()
    resp.model_spec.name = "keypoints"
    payload = any_pb2.Any()
    payload.Pack(sig_map)
    resp.metadata["signature_def"].CopyFrom(payload)

    mine = ours.GetModelMetadataResponse.FromString(resp.SerializeToString())
    assert mine.metadata["signature_def"].type_url.endswith("tensorflow.serving.SignatureDefMap")
    parsed = ours.SignatureDefMap.FromString(mine.metadata["signature_def"].value)
    info = parsed.signature_def["serving_default"]
    assert info.inputs["image"].dtype == ours.DT_UINT8
    assert [d.size for d in info.inputs["image"].tensor_shape.dim] == [-1, 96, 96, 1]
    assert info.inputs["image"].name == "serving_default_image:0"
    assert info.outputs["keypoints"].tensor_shape.unknown_rank
    # Our request parses with the official message.
    req = ours.GetModelMetadataRequest(model_spec=ours.ModelSpec(name="keypoints"))
    req.metadata_field.append("signature_def")
    off = get_model_metadata_pb2.GetModelMetadataRequest.FromString(req.SerializeToString())
    assert off.model_spec.name == "keypoints" and list(off.metadata_field) == ["signature_def"]


def test_model_status_both_directions():
    resp = get_model_status_pb2.GetModelStatusResponse()
    v = resp.model_version_status.add(
        version=2, state=get_model_status_pb2.ModelVersionStatus.AVAILABLE
    )
    v.status.error_code = 0
    e = resp.model_version_status.add(version=1, state=get_model_status_pb2.ModelVersionStatus.END)
    e.status.error_code = 5
    e.status.error_message = "gone"
    mine = ours.GetModelStatusResponse.FromString(resp.SerializeToString())
    assert [
        (s.version, ours.ModelVersionStatus.State.Name(s.state)) for s in mine.model_version_status
    ] == [
        (2, "AVAILABLE"),
        (1, "END"),
    ]
    assert ours.ErrorCode.Name(mine.model_version_status[1].status.error_code) == "NOT_FOUND"
    assert mine.model_version_status[1].status.error_message == "gone"
    assert get_model_status_pb2.GetModelStatusResponse.FromString(mine.SerializeToString()) == resp
    req = ours.GetModelStatusRequest(model_spec=ours.ModelSpec(name="emotion"))
    req.model_spec.version.value = 7
    off = get_model_status_pb2.GetModelStatusRequest.FromString(req.SerializeToString())
    assert off.model_spec.name == "emotion" and off.model_spec.version.value == 7
