"""Weight averaging (SWA) of kept epochs: the kept files, the mean, batch-norm re-estimation, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from emotion_ai_training.cli import main as train_cli

from .training_datagen import fer_rows, write_fer_csv

pytest.importorskip("tensorflow")
import keras
from emotion_ai_training.average import (
    epoch_path,
    kept_epochs,
    mean_weights,
    recalibrate_batch_norm,
    save_epoch_weights,
)


def _dense(seed: int) -> keras.Model:
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((3,))
    return keras.Model(inputs, keras.layers.Dense(2)(keras.layers.BatchNormalization()(inputs)))


def test_mean_weights_is_the_elementwise_mean_of_the_files(tmp_path: Path) -> None:
    models = [_dense(seed) for seed in (1, 2, 3)]
    for k, m in enumerate(models):
        save_epoch_weights(m, epoch_path(tmp_path, k + 1))
    assert kept_epochs(tmp_path) == [1, 2, 3]
    mean = mean_weights(epoch_path(tmp_path, k) for k in (1, 2, 3))
    for i, value in enumerate(mean):
        np.testing.assert_allclose(value, np.mean([m.get_weights()[i] for m in models], axis=0), rtol=1e-6)
    # one file averages to itself, exactly
    for a, b in zip(mean_weights([epoch_path(tmp_path, 2)]), models[1].get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="no checkpoints"):
        mean_weights([])


def test_mean_weights_refuses_another_architecture(tmp_path: Path) -> None:
    save_epoch_weights(_dense(1), epoch_path(tmp_path, 1))
    other = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    save_epoch_weights(other, epoch_path(tmp_path, 2))
    with pytest.raises(ValueError, match="do not match"):
        mean_weights([epoch_path(tmp_path, 1), epoch_path(tmp_path, 2)])


def test_batch_norm_statistics_become_the_mean_of_the_batch_statistics() -> None:
    model = _dense(0)
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


def test_keep_epochs_then_average_cli(tmp_path: Path) -> None:
    data = write_fer_csv(tmp_path / "fer2013.csv", fer_rows(48))
    runs = tmp_path / "runs"
    assert train_cli(["train", "emotion", "--data", str(data), "--runs", str(runs), "--name", "e", "--tiny",
                      "--precision", "float32", "--batch-size", "8", "--epochs", "3", "--keep-epochs", "2",
                      "--cache-dir", str(tmp_path / "cache")]) == 0
    run = runs / "e"
    assert kept_epochs(run) == [2, 3]  # the oldest beyond two were removed
    # --resume may change how many are kept from then on
    assert train_cli(["train", "emotion", "--data", str(data), "--runs", str(runs), "--name", "e", "--tiny",
                      "--epochs", "4", "--resume", "--keep-epochs", "3"]) == 0
    assert kept_epochs(run) == [2, 3, 4]
    last = keras.models.load_model(run / "last.keras", compile=False)
    with np.load(epoch_path(run, 4)) as f:  # the newest kept epoch is last.keras's weights
        for i, w in enumerate(last.get_weights()):
            np.testing.assert_array_equal(f[f"arr_{i}"], w)

    assert train_cli(["average", str(run), "--from", "2"]) == 0
    report = json.loads((run / "averaged.json").read_text())
    assert report["epochs"] == [2, 3, 4] and report["metric"] == "accuracy"
    assert 0.0 <= report["averaged"] <= 1.0 and 0.0 <= report["best_checkpoint"] <= 1.0
    averaged = keras.models.load_model(run / "averaged.keras", compile=False)
    kernel = "stage1_block1_conv1"
    expect = np.mean([_kernel(run, e, last, kernel) for e in (2, 3, 4)], axis=0)
    np.testing.assert_allclose(averaged.get_layer(kernel).get_weights()[0], expect, rtol=1e-5, atol=1e-7)
    # exported like any checkpoint
    out = tmp_path / "models_export"
    assert train_cli(["export", str(run), "--out", str(out), "--checkpoint", "averaged.keras", "--no-evaluate"]) == 0
    card = json.loads((out / "emotion" / "1" / "model_card.json").read_text())
    assert card["training"]["averaged_epochs"] == [2, 3, 4] and card["training"]["checkpoint_epoch"] is None
    # no kept epoch in the range: a clear error, exit code 2
    assert train_cli(["average", str(run), "--from", "7"]) == 2


def _kernel(run: Path, epoch: int, model: keras.Model, name: str) -> np.ndarray:
    index = next(i for i, w in enumerate(model.weights) if w.path.startswith(f"{name}/"))
    with np.load(epoch_path(run, epoch)) as f:
        return f[f"arr_{index}"]
