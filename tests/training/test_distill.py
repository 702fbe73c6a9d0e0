"""Distillation: the KD loss, keypoint targets, and distilled runs that train, resume and export."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from emotion_ai_training.cli import main as train_cli

from .training_datagen import fer_rows, write_fer_csv, write_keypoints_csv

tf = pytest.importorskip("tensorflow")


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_kd_loss_is_zero_when_the_student_equals_the_teacher_and_matches_numpy_otherwise() -> None:
    from emotion_ai_training.distill import DistillationLoss

    rng = np.random.default_rng(0)
    teacher = _softmax(rng.normal(size=(5, 7)) * 2).astype(np.float32)
    labels = np.eye(7, dtype=np.float32)[rng.integers(0, 7, 5)]
    targets = np.concatenate([labels, teacher], 1)
    kd_only = DistillationLoss(alpha=1.0, temperature=4.0)
    assert float(kd_only(targets, teacher)) == pytest.approx(0.0, abs=1e-6)
    student = _softmax(rng.normal(size=(5, 7))).astype(np.float32)
    t = 3.0

    def soften(p):
        return _softmax(np.log(p) / t)

    kl = (soften(teacher) * (np.log(soften(teacher)) - np.log(soften(student)))).sum(-1)
    ce = -(labels * np.log(student)).sum(-1)
    loss = DistillationLoss(alpha=0.7, temperature=t)(targets, student)
    assert float(loss) == pytest.approx(float(np.mean(0.7 * t * t * kl + 0.3 * ce)), rel=1e-4)
    assert float(kd_only(targets, student)) > 0.01


def test_keypoint_targets_fill_missing_points_and_mix_present_ones() -> None:
    from emotion_ai_training.distill import keypoint_targets

    labels = np.array([[[10.0, 20.0], [np.nan, np.nan]]], np.float32)
    teacher = np.array([[[12.0, 24.0], [50.0, 60.0]]], np.float32)
    np.testing.assert_allclose(keypoint_targets(labels, teacher, 0.25), [[[10.5, 21.0], [50.0, 60.0]]])
    np.testing.assert_allclose(keypoint_targets(labels, teacher, 0.0)[0, 0], [10.0, 20.0])
    with pytest.raises(ValueError, match="do not match"):
        keypoint_targets(labels, teacher[:, :1], 0.5)


def _train(args: list[str]) -> int:
    return train_cli(["train", *args, "--tiny", "--precision", "float32", "--batch-size", "8"])


def test_distilled_emotion_run_trains_resumes_and_exports_the_same_contract(tmp_path: Path, caplog) -> None:
    from ..support.tiny_models import make_export_tree

    teacher = make_export_tree(tmp_path / "teachers") / "emotion" / "1"
    data = write_fer_csv(tmp_path / "fer2013.csv", fer_rows(48))
    runs, cache = tmp_path / "runs", str(tmp_path / "cache")
    common = ["emotion", "--data", str(data), "--runs", str(runs), "--cache-dir", cache, "--teacher", str(teacher)]
    assert _train([*common, "--name", "s", "--epochs", "1", "--alpha", "0.8", "--temperature", "2"]) == 0
    config = json.loads((runs / "s" / "config.json").read_text())
    assert config["teacher"] == [str(teacher)]
    assert config["distill_alpha"] == 0.8 and config["temperature"] == 2.0
    cached = list((Path(cache) / "teacher").glob("emotion-*.npz"))
    assert len(cached) == 1
    with np.load(cached[0]) as z:  # the teacher's own probabilities on the 16 training rows
        assert z["outputs"].shape == (16, 7)
        np.testing.assert_allclose(z["outputs"].sum(1), 1.0, atol=1e-5)
    mtime = cached[0].stat().st_mtime_ns
    caplog.set_level("INFO")
    assert _train([*common, "--name", "s", "--epochs", "2", "--resume"]) == 0
    assert json.loads((runs / "s" / "state.json").read_text())["epoch"] == 2
    assert cached[0].stat().st_mtime_ns == mtime and "outputs from" in caplog.text
    history = np.genfromtxt(runs / "s" / "history.csv", delimiter=",", names=True)
    assert {"loss", "accuracy", "val_accuracy"} <= set(history.dtype.names)

    out = tmp_path / "models_export"
    assert train_cli(["export", str(runs / "s"), "--out", str(out), "--flip-tta"]) == 0
    sig = tf.saved_model.load(str(out / "emotion" / "1")).signatures["serving_default"]
    spec = sig.structured_input_signature[1]["image"]
    assert spec.dtype == tf.uint8 and spec.shape.as_list() == [None, 48, 48, 1]
    assert {k: (v.dtype, v.shape.as_list()) for k, v in sig.structured_outputs.items()} == {
        "scores": (tf.float32, [None, 7]), "classes": (tf.string, [None, 7])}
    card = json.loads((out / "emotion" / "1" / "model_card.json").read_text())
    assert card["training"]["config"]["teacher"] == [str(teacher)]
    # The library call: evaluation output goes where the caller says (nowhere with eval_dir=None).
    from emotion_ai_training.export import export_runs

    evals = tmp_path / "evals"
    assert export_runs([runs / "s"], out, eval_dir=evals) == out / "emotion" / "2"
    assert (evals / "emotion-2" / "metrics.json").is_file()
    third = export_runs([runs / "s"], out, eval_dir=None)
    assert "accuracy" in json.loads((third / "model_card.json").read_text())["validation_metrics"]
    assert sorted(p.name for p in evals.iterdir()) == ["emotion-2"]
    assert card["training"]["config"]["distill_alpha"] == 0.8

    # A teacher with other classes than the student's is refused with a clear error (exit code 2).
    assert _train([*common, "--name", "five", "--classes", "5"]) == 2
    assert _train([*common, "--name", "bad", "--alpha", "1.5"]) == 2
    assert _train(["emotion", "--data", str(data), "--runs", str(runs), "--name", "arch", "--arch", "keypoints"]) == 2


def test_distilled_keypoints_run_regresses_the_teacher_where_labels_are_missing(tmp_path: Path) -> None:
    from ..support.tiny_models import make_export_tree

    teacher = make_export_tree(tmp_path / "teachers") / "keypoints" / "1"
    data = write_keypoints_csv(tmp_path / "training.csv", 40)
    runs, cache = tmp_path / "runs", str(tmp_path / "cache")
    assert _train(["keypoints", "--data", str(data), "--runs", str(runs), "--cache-dir", cache, "--name", "k",
                   "--epochs", "1", "--teacher", str(teacher)]) == 0
    assert json.loads((runs / "k" / "config.json").read_text())["teacher"] == [str(teacher)]
    (cached,) = (Path(cache) / "teacher").glob("keypoints-*.npz")
    with np.load(cached) as z:
        assert z["outputs"].ndim == 3 and z["outputs"].shape[1:] == (15, 2)
        assert np.isfinite(z["outputs"]).all()


def test_cli_train_defaults_are_the_python_api_defaults() -> None:
    import argparse
    from dataclasses import asdict

    from emotion_ai_training.cli import _add_train, train_config_from_args
    from emotion_ai_training.train import TrainConfig

    parser = argparse.ArgumentParser()
    _add_train(parser.add_subparsers(dest="command"))
    for task in ("emotion", "keypoints"):
        from_cli = train_config_from_args(parser.parse_args(["train", task, "--data", "d", "--name", "n"]))
        from_api = TrainConfig(task=task, data="d", run_dir=str(Path("runs") / "n"), cache_dir="cache")
        assert asdict(from_cli) == asdict(from_api)
    given = train_config_from_args(parser.parse_args(["train", "keypoints", "--lr", "0.01", "--keypoints-loss", "mse",
                                                      "--arch", "keypoints_small", "--alpha", "0.3"]))
    assert (given.learning_rate, given.keypoints_loss, given.arch, given.distill_alpha) == (0.01, "mse",
                                                                                             "keypoints_small", 0.3)


def _two_teachers(tmp_path: Path, seed: int) -> tuple[Path, Path]:
    """Two different emotion teachers: the tiny exported SavedModel and a seeded one-layer .keras model."""
    import keras

    from ..support.tiny_models import make_export_tree

    saved_model = make_export_tree(tmp_path / "teachers") / "emotion" / "1"
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((48, 48, 1))
    checkpoint = tmp_path / "t2.keras"
    keras.Model(inputs, keras.layers.Dense(7, activation="softmax")(keras.layers.Flatten()(inputs / 255.0))
                ).save(checkpoint)
    return saved_model, checkpoint


def test_an_ensemble_teacher_is_the_mean_of_its_members_each_cached_on_its_own(tmp_path: Path, caplog) -> None:
    from emotion_ai_training.distill import teacher_outputs

    saved_model, checkpoint = _two_teachers(tmp_path, seed=0)
    images = np.random.default_rng(0).integers(0, 256, (10, 48, 48), dtype=np.uint8)
    cache = tmp_path / "cache"
    first = teacher_outputs([saved_model], "emotion", images, cache)
    second = teacher_outputs([checkpoint], "emotion", images, cache)
    assert np.abs(first - second).max() > 1e-3  # two different teachers
    files = sorted((cache / "teacher").glob("emotion-*.npz"))
    assert len(files) == 2
    stamps = [f.stat().st_mtime_ns for f in files]
    caplog.set_level("INFO")
    both = teacher_outputs([saved_model, checkpoint], "emotion", images, cache)
    np.testing.assert_allclose(both, (first + second) / 2, rtol=1e-6)
    assert sorted((cache / "teacher").glob("emotion-*.npz")) == files  # nothing recomputed
    assert [f.stat().st_mtime_ns for f in files] == stamps and caplog.text.count("outputs from") == 2
