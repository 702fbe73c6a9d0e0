"""Folding batch norm into convolutions at export: same function, fewer layers, only where it is exact; and the
re-estimation of batch-norm statistics for weights no training pass produced (interpolate)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tensorflow")

import keras
from emotion_ai_training.batchnorm_folding import fold_batch_norm, recalibrate_batch_norm
from emotion_ai_training.models import TINY_RESNET, build_emotion_model, build_keypoints_model


def _randomise_batch_norms(model: keras.Model, seed: int = 0) -> int:
    """Give every batch norm non-trivial statistics and affine weights (fresh ones are the identity)."""
    rng = np.random.default_rng(seed)
    count = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, variance = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 1.5, gamma.shape), rng.normal(0, 0.3, beta.shape),
                               rng.normal(0, 0.5, mean.shape), rng.uniform(0.2, 2.0, variance.shape)])
            count += 1
    return count


@pytest.mark.parametrize("build", [lambda: build_emotion_model(7, TINY_RESNET),
                                   lambda: build_keypoints_model(TINY_RESNET)], ids=["emotion", "keypoints"])
def test_folded_model_computes_the_same_outputs_without_batch_norm_layers(build) -> None:
    model = build()
    batch_norms = _randomise_batch_norms(model)
    size = model.input_shape[1]
    x = np.random.default_rng(1).integers(0, 256, (4, size, size, 1)).astype(np.float32)
    folded = fold_batch_norm(model)
    assert batch_norms > 0
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in folded.layers)
    assert len(folded.layers) == len(model.layers) - batch_norms
    expected = np.asarray(model(x, training=False))
    got = np.asarray(folded(x, training=False))
    assert np.abs(expected).max() > 0.1  # a real signal, not all zeros
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_batch_norm_after_a_shared_or_activated_layer_is_kept() -> None:
    inputs = keras.Input((8, 8, 1))
    conv = keras.layers.Conv2D(4, 3, padding="same", use_bias=False, name="shared")(inputs)
    a = keras.layers.BatchNormalization(name="bn_shared")(conv)
    b = keras.layers.Activation("relu", name="side")(conv)  # a second consumer: folding would change it
    relu_conv = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="activated")(inputs)
    c = keras.layers.BatchNormalization(name="bn_after_relu")(relu_conv)
    solo = keras.layers.Conv2D(4, 1, name="solo")(inputs)
    d = keras.layers.BatchNormalization(name="bn_solo")(solo)
    model = keras.Model(inputs, keras.layers.Concatenate()([a, b, c, d]))
    _randomise_batch_norms(model, seed=3)
    folded = fold_batch_norm(model)
    names = {layer.name for layer in folded.layers}
    assert {"bn_shared", "bn_after_relu"} <= names and "bn_solo" not in names
    assert folded.get_layer("solo").use_bias
    x = np.random.default_rng(2).normal(size=(2, 8, 8, 1)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(folded(x)), np.asarray(model(x, training=False)), rtol=1e-4, atol=1e-4)


def test_batch_norm_statistics_become_the_mean_of_the_batch_statistics() -> None:
    keras.utils.set_random_seed(0)
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.BatchNormalization()(inputs)))
    bn = next(layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization))
    rng = np.random.default_rng(0)
    batches = [rng.normal(loc, 2.0, (16, 3)).astype("float32") for loc in (0.0, 1.0, 5.0)]
    weights = [w.copy() for w in model.get_weights()]
    used = recalibrate_batch_norm(model, ((x, None) for x in batches))
    assert used == 3
    np.testing.assert_allclose(bn.moving_mean.numpy(), np.mean([x.mean(0) for x in batches], axis=0), rtol=1e-5)
    np.testing.assert_allclose(bn.moving_variance.numpy(), np.mean([x.var(0) for x in batches], axis=0), rtol=1e-4)
    assert bn.momentum == pytest.approx(0.99)  # restored
    dense_before = weights[-2:]
    for a, b in zip(model.get_weights()[-2:], dense_before, strict=True):
        np.testing.assert_array_equal(a, b)  # trainable weights untouched
