"""TF Serving gRPC API conformance (PredictionService, ModelService) with the official messages,
run against every available server target (see conftest.py)."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
import requests
import tensorflow as tf
from emotion_ai import spec
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

KP, EMO = spec.KEYPOINTS_MODEL, spec.EMOTION_MODEL
SIZES = {KP: spec.KEYPOINTS_INPUT_SIZE, EMO: spec.EMOTION_INPUT_SIZE}


def image(model: str, batch: int = 1, seed: int = 0) -> np.ndarray:
    size = SIZES[model]
    return np.random.default_rng(seed).integers(0, 256, (batch, size, size, 1), dtype=np.uint8)


@pytest.fixture(scope="module")
def channel(serving):
    with serving.channel() as ch:
        yield ch


@pytest.fixture(scope="module")
def predictions(channel):
    return prediction_service_pb2_grpc.PredictionServiceStub(channel)


@pytest.fixture(scope="module")
def models(channel):
    return model_service_pb2_grpc.ModelServiceStub(channel)


def predict_request(
    model: str, arr: np.ndarray | None = None, **spec_fields
) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    for key, value in spec_fields.items():
        if key == "version":
            request.model_spec.version.value = value
        else:
            setattr(request.model_spec, key, value)
    arr = image(model) if arr is None else arr
    request.inputs[spec.INPUT_KEY].CopyFrom(tf.make_tensor_proto(arr))
    return request


def expect_status(call, code: grpc.StatusCode, text: str = "") -> str:
    with pytest.raises(grpc.RpcError) as info:
        call()
    assert info.value.code() == code, info.value.details()
    assert text in info.value.details(), info.value.details()
    return info.value.details()


# ---------------------------------------------------------------------------- Predict
def test_predict_keypoints(predictions):
    response = predictions.Predict(predict_request(KP, image(KP, 2)), timeout=30)
    assert response.model_spec.name == KP
    assert response.model_spec.signature_name == spec.SIGNATURE_NAME
    assert response.model_spec.version.value >= 1
    out = response.outputs[spec.KEYPOINTS_OUTPUT_KEY]
    assert out.dtype == tf.float32.as_datatype_enum
    assert [d.size for d in out.tensor_shape.dim] == [2, 15, 2]
    assert tf.make_ndarray(out).shape == (2, 15, 2)


def test_predict_emotion_and_output_filter(predictions):
    response = predictions.Predict(predict_request(EMO, image(EMO, 3)), timeout=30)
    scores = tf.make_ndarray(response.outputs[spec.SCORES_OUTPUT_KEY])
    classes = tf.make_ndarray(response.outputs[spec.CLASSES_OUTPUT_KEY])
    assert scores.shape == classes.shape == (3, len(spec.EMOTION_LABELS))
    np.testing.assert_allclose(scores.sum(axis=1), 1.0, atol=1e-4)
    assert sorted(c.decode() for c in classes[0]) == sorted(spec.EMOTION_LABELS)
    request = predict_request(EMO, image(EMO, 3))
    request.output_filter.append(spec.SCORES_OUTPUT_KEY)
    filtered = predictions.Predict(request, timeout=30)
    assert set(filtered.outputs) == {spec.SCORES_OUTPUT_KEY}
    np.testing.assert_allclose(tf.make_ndarray(filtered.outputs[spec.SCORES_OUTPUT_KEY]), scores)


def test_grpc_and_rest_agree(predictions, serving):
    img = image(KP, 1, seed=7)
    grpc_out = tf.make_ndarray(
        predictions.Predict(predict_request(KP, img), timeout=30).outputs[spec.KEYPOINTS_OUTPUT_KEY]
    )
    rest = requests.post(
        f"{serving.rest_url}/v1/models/{KP}:predict", json={"instances": img.tolist()}, timeout=30
    )
    np.testing.assert_allclose(
        np.asarray(rest.json()["predictions"], np.float32), grpc_out, rtol=1e-6
    )


def test_tensor_content_and_typed_inputs_agree(predictions):
    img = image(EMO, 1, seed=3)
    packed = predict_request(EMO, img)  # make_tensor_proto uses tensor_content
    assert packed.inputs[spec.INPUT_KEY].tensor_content
    typed = predict_request(EMO, img)
    proto = typed.inputs[spec.INPUT_KEY]
    proto.ClearField("tensor_content")
    proto.int_val.extend(img.reshape(-1).tolist())
    a = predictions.Predict(packed, timeout=30).outputs[spec.SCORES_OUTPUT_KEY]
    b = predictions.Predict(typed, timeout=30).outputs[spec.SCORES_OUTPUT_KEY]
    np.testing.assert_allclose(tf.make_ndarray(a), tf.make_ndarray(b))


def test_predict_unknowns(predictions):
    expect_status(
        lambda: predictions.Predict(predict_request("nope", image(KP))),
        grpc.StatusCode.NOT_FOUND,
        "Servable not found for request: Latest(nope)",
    )
    expect_status(
        lambda: predictions.Predict(predict_request(KP, version=987)),
        grpc.StatusCode.NOT_FOUND,
        f"Servable not found for request: Specific({KP}, 987)",
    )
    expect_status(
        lambda: predictions.Predict(predict_request(KP, version_label="nope")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "Unrecognized servable version label: nope",
    )
    expect_status(
        lambda: predictions.Predict(predict_request(KP, signature_name="nope")),
        grpc.StatusCode.FAILED_PRECONDITION,
        'Serving signature key "nope" not found.',
    )
    expect_status(
        lambda: predictions.Predict(predict_request("", image(KP))),
        grpc.StatusCode.INVALID_ARGUMENT,
        "ModelSpec has no name specified.",
    )
    expect_status(
        lambda: predictions.Predict(predict_pb2.PredictRequest()),
        grpc.StatusCode.INVALID_ARGUMENT,
        "Missing ModelSpec",
    )


def test_predict_bad_inputs(predictions):
    expect_status(
        lambda: predictions.Predict(predict_request(EMO, image(EMO).astype(np.float32))),
        grpc.StatusCode.INVALID_ARGUMENT,
        "uint8",
    )
    expect_status(
        lambda: predictions.Predict(predict_request(KP, image(EMO))),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    request = predict_request(EMO)
    request.inputs["extra"].CopyFrom(tf.make_tensor_proto(np.zeros(1, np.uint8)))
    expect_status(
        lambda: predictions.Predict(request),
        grpc.StatusCode.INVALID_ARGUMENT,
        "input size does not match signature",
    )
    renamed = predict_pb2.PredictRequest()
    renamed.model_spec.name = EMO
    renamed.inputs["img"].CopyFrom(tf.make_tensor_proto(image(EMO)))
    expect_status(
        lambda: predictions.Predict(renamed),
        grpc.StatusCode.INVALID_ARGUMENT,
        "input tensor alias not found in signature: img",
    )
    filtered = predict_request(EMO)
    filtered.output_filter.append("nope")
    expect_status(
        lambda: predictions.Predict(filtered),
        grpc.StatusCode.INVALID_ARGUMENT,
        "output tensor alias not found in signature: nope",
    )


def test_no_small_message_cap(serving, predictions):
    """Requests above gRPC's 4 MiB default are accepted (TF Serving allows ~2 GiB)."""
    batch = image(KP, 500)  # 500 * 96 * 96 bytes = 4.6 MB
    response = predictions.Predict(predict_request(KP, batch), timeout=60)
    assert tf.make_ndarray(response.outputs[spec.KEYPOINTS_OUTPUT_KEY]).shape == (500, 15, 2)
    if serving.max_request_bytes is not None:
        too_big = image(KP, serving.max_request_bytes // (96 * 96) + 10)
        expect_status(
            lambda: predictions.Predict(predict_request(KP, too_big), timeout=60),
            grpc.StatusCode.RESOURCE_EXHAUSTED,
        )


# ---------------------------------------------------------------- metadata and status
def test_get_model_metadata(predictions):
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = EMO
    response = predictions.GetModelMetadata(request, timeout=10)
    assert response.model_spec.name == EMO and response.model_spec.version.value >= 1
    sig_map = get_model_metadata_pb2.SignatureDefMap()
    assert response.metadata["signature_def"].Unpack(sig_map)
    sig = sig_map.signature_def[spec.SIGNATURE_NAME]
    assert sig.inputs[spec.INPUT_KEY].dtype == tf.uint8.as_datatype_enum
    assert set(sig.outputs) == {spec.SCORES_OUTPUT_KEY, spec.CLASSES_OUTPUT_KEY}
    empty = get_model_metadata_pb2.GetModelMetadataRequest()
    empty.model_spec.name = EMO
    expect_status(
        lambda: predictions.GetModelMetadata(empty),
        grpc.StatusCode.INVALID_ARGUMENT,
        "must specify at least one metadata_field",
    )
    other = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["nope"])
    other.model_spec.name = EMO
    expect_status(
        lambda: predictions.GetModelMetadata(other),
        grpc.StatusCode.INVALID_ARGUMENT,
        "Metadata field nope is not supported",
    )
    missing = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    missing.model_spec.name = "nope"
    expect_status(
        lambda: predictions.GetModelMetadata(missing),
        grpc.StatusCode.NOT_FOUND,
        "Servable not found for request: Latest(nope)",
    )


def test_get_model_status(models):
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = KP
    response = models.GetModelStatus(request, timeout=10)
    states = {s.version: s.state for s in response.model_version_status}
    assert get_model_status_pb2.ModelVersionStatus.AVAILABLE in states.values()
    request.model_spec.name = "nope"
    expect_status(
        lambda: models.GetModelStatus(request),
        grpc.StatusCode.NOT_FOUND,
        "Could not find any versions of model nope",
    )
    request.model_spec.name = KP
    request.model_spec.version.value = 987
    expect_status(
        lambda: models.GetModelStatus(request),
        grpc.StatusCode.NOT_FOUND,
        f"Could not find version 987 of model {KP}",
    )


# -------------------------------------------------------- classify / regress / multi
def test_classify_regress_multi_inference_statuses(predictions):
    classify = classification_pb2.ClassificationRequest()
    classify.model_spec.name = EMO
    classify.input.example_list.examples.add()
    expect_status(
        lambda: predictions.Classify(classify),
        grpc.StatusCode.INVALID_ARGUMENT,
        "No classification inputs found in SignatureDef",
    )
    regress = regression_pb2.RegressionRequest()
    regress.model_spec.name = KP
    regress.input.example_list.examples.add()
    expect_status(
        lambda: predictions.Regress(regress),
        grpc.StatusCode.INVALID_ARGUMENT,
        "No regression inputs found in SignatureDef",
    )
    regress.model_spec.name = "nope"
    expect_status(lambda: predictions.Regress(regress), grpc.StatusCode.NOT_FOUND)
    multi = inference_pb2.MultiInferenceRequest()
    task = multi.tasks.add(method_name="tensorflow/serving/predict")
    task.model_spec.name = EMO
    multi.input.example_list.examples.add()
    expect_status(
        lambda: predictions.MultiInference(multi),
        grpc.StatusCode.UNIMPLEMENTED,
        "Unsupported signature method_name",
    )


def test_reload_config(models, serving):
    bad = model_management_pb2.ReloadConfigRequest()
    bad.config.custom_model_config.type_url = "type.googleapis.com/x"
    expect_status(
        lambda: models.HandleReloadConfigRequest(bad),
        grpc.StatusCode.INVALID_ARGUMENT,
        "Only ModelConfigList is currently supported",
    )
    if serving.kind == "env":
        return  # do not reconfigure a server we do not own
    good = model_management_pb2.ReloadConfigRequest()
    for name in spec.SERVED_MODELS:  # the same models again: later tests (the Kubernetes probe) need them all
        good.config.model_config_list.config.add(
            name=name, base_path=f"/models/{name}", model_platform="tensorflow"
        )
    response = models.HandleReloadConfigRequest(good, timeout=60)
    assert response.status.error_code == 0
    label = model_management_pb2.ReloadConfigRequest()
    label.config.CopyFrom(good.config)
    label.config.model_config_list.config[1].version_labels["canary"] = 987
    expect_status(
        lambda: models.HandleReloadConfigRequest(label, timeout=60),
        grpc.StatusCode.FAILED_PRECONDITION,
        f"Request to assign label to version 987 of model {EMO}",
    )
