"""Keypoint losses and metric: masked where a coordinate is missing (NaN in the target)."""

from __future__ import annotations

import keras
from keras import ops


def _masked_diff(y_true, y_pred):
    """(prediction − target, 0 where the target is missing) and the count of present coordinates."""
    y_true = ops.cast(y_true, "float32")
    y_pred = ops.cast(y_pred, "float32")
    mask = ops.logical_not(ops.isnan(y_true))
    diff = ops.where(mask, y_pred - ops.where(mask, y_true, 0.0), 0.0)
    return diff, ops.sum(ops.cast(mask, "float32"))


@keras.saving.register_keras_serializable("emotion_ai")
def masked_mse(y_true, y_pred):
    """Mean squared error over the coordinates that are present (NaN in y_true = missing)."""
    diff, n = _masked_diff(y_true, y_pred)
    return ops.sum(ops.square(diff)) / ops.maximum(n, 1.0)


@keras.saving.register_keras_serializable("emotion_ai")
def masked_l1(y_true, y_pred):
    """Mean absolute error over the coordinates that are present (NaN in y_true = missing)."""
    diff, n = _masked_diff(y_true, y_pred)
    return ops.sum(ops.abs(diff)) / ops.maximum(n, 1.0)


KEYPOINTS_LOSSES = {"mse": masked_mse, "l1": masked_l1}


@keras.saving.register_keras_serializable("emotion_ai")
class MaskedRMSE(keras.metrics.Metric):
    """Root mean squared error in pixels over present coordinates, accumulated over an epoch."""

    def __init__(self, name: str = "rmse", **kwargs):
        super().__init__(name=name, **kwargs)
        self.sq = self.add_variable((), initializer="zeros", name="sq")
        self.n = self.add_variable((), initializer="zeros", name="n")

    def update_state(self, y_true, y_pred, sample_weight=None):
        diff, n = _masked_diff(y_true, y_pred)
        self.sq.assign_add(ops.sum(ops.square(diff)))
        self.n.assign_add(n)

    def result(self):
        return ops.sqrt(self.sq / ops.maximum(self.n, 1.0))
