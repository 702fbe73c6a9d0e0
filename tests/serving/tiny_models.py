"""Tiny SavedModels that follow the export contract, for when emotion_ai_training.testing is not
installed. Each version adds `version` to its outputs so a test can tell versions apart."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _write_warmup(version_dir: Path, model: str, size: int) -> None:
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = "serving_default"
    request.inputs["image"].CopyFrom(tf.make_tensor_proto(np.zeros((1, size, size, 1), np.uint8)))
    log = prediction_log_pb2.PredictionLog(
        predict_log=prediction_log_pb2.PredictLog(request=request)
    )
    extra = version_dir / "assets.extra"
    extra.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(extra / "tf_serving_warmup_requests")) as writer:
        writer.write(log.SerializeToString())


def write_model(root: Path, model: str, version: int) -> Path:
    """Write root/<model>/<version> (keypoints or emotion)."""
    import tensorflow as tf
    from emotion_ai import spec

    out = root / model / str(version)
    if model == spec.KEYPOINTS_MODEL:
        size = spec.KEYPOINTS_INPUT_SIZE

        class Keypoints(tf.Module):
            def __init__(self) -> None:
                super().__init__()
                self.bias = tf.Variable(float(version))

            @tf.function(input_signature=[tf.TensorSpec([None, size, size, 1], tf.uint8, "image")])
            def serve(self, image):
                mean = tf.reduce_mean(tf.cast(image, tf.float32), axis=[1, 2, 3])
                points = tf.reshape(tf.range(30, dtype=tf.float32), [1, 15, 2])
                return {spec.KEYPOINTS_OUTPUT_KEY: points + mean[:, None, None] / 255.0 + self.bias}

        module = Keypoints()
    else:
        size = spec.EMOTION_INPUT_SIZE
        labels = list(spec.EMOTION_LABELS)

        class Emotion(tf.Module):
            def __init__(self) -> None:
                super().__init__()
                self.weights = tf.Variable(tf.linspace(0.0, 1.0, len(labels)) * float(version))

            @tf.function(input_signature=[tf.TensorSpec([None, size, size, 1], tf.uint8, "image")])
            def serve(self, image):
                mean = tf.reduce_mean(tf.cast(image, tf.float32), axis=[1, 2, 3]) / 255.0
                scores = tf.nn.softmax(mean[:, None] * self.weights[None, :] + self.weights)
                classes = tf.tile(tf.constant([labels]), [tf.shape(image)[0], 1])
                return {spec.SCORES_OUTPUT_KEY: scores, spec.CLASSES_OUTPUT_KEY: classes}

        module = Emotion()
    tf.saved_model.save(module, str(out), signatures={"serving_default": module.serve})
    _write_warmup(out, model, size)
    return out


def make_tiny_export_tree(root: Path) -> Path:
    from emotion_ai import spec

    for model in (spec.KEYPOINTS_MODEL, spec.EMOTION_MODEL):
        write_model(root, model, 1)
    return root
