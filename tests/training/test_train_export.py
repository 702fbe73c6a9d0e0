"""Smoke training on generated data, resume, export contract, warmup file, evaluation and describe."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from emotion_ai.spec import EMOTION_LABELS, FLIP_PERMUTATION
from emotion_ai_training.cli import main as train_cli
from emotion_ai_training.evaluate import classification_report, keypoint_errors

from .training_datagen import fer_rows, frontal_points, keypoint_frame, write_fer_csv, write_keypoints_csv

tf = pytest.importorskip("tensorflow")


def test_masked_mse_ignores_missing_coordinates() -> None:
    from emotion_ai_training.losses import MaskedRMSE, masked_mse

    y_true = np.array([[[1.0, 2.0], [np.nan, np.nan]]], np.float32)
    y_pred = np.array([[[2.0, 4.0], [100.0, 100.0]]], np.float32)
    assert float(masked_mse(y_true, y_pred)) == pytest.approx((1 + 4) / 2)
    metric = MaskedRMSE()
    metric.update_state(y_true, y_pred)
    assert float(metric.result()) == pytest.approx(np.sqrt(2.5))


def _train(args: list[str]) -> None:
    assert train_cli(["train", *args, "--tiny", "--precision", "float32", "--batch-size", "8"]) == 0


def test_emotion_smoke_training_resume_and_export(tmp_path: Path) -> None:
    data = write_fer_csv(tmp_path / "fer2013.csv", fer_rows(48))
    runs = tmp_path / "runs"
    _train(["emotion", "--data", str(data), "--runs", str(runs), "--name", "e", "--epochs", "1",
            "--cache-dir", str(tmp_path / "cache")])
    run = runs / "e"
    assert {"config.json", "last.keras", "best.keras", "state.json", "history.csv",
            "training_curves.png"} <= {p.name for p in run.iterdir()}
    assert json.loads((run / "state.json").read_text())["epoch"] == 1
    # A second run with the same name refuses to overwrite; --resume continues.
    assert train_cli(["train", "emotion", "--data", str(data), "--runs", str(runs), "--name", "e", "--tiny"]) == 2
    import keras

    kernel = "stage1_block1_conv1"
    epoch_1 = keras.models.load_model(run / "last.keras", compile=False).get_layer(kernel).get_weights()[0]
    # --resume --epochs 2 re-plans the cosine schedule to end at epoch 2; the one-epoch schedule the run
    # was started with has ended (learning rate 0), so the weights changing shows the re-planning.
    _train(["emotion", "--data", str(data), "--runs", str(runs), "--name", "e", "--epochs", "2", "--resume"])
    assert json.loads((run / "state.json").read_text())["epoch"] == 2
    assert json.loads((run / "config.json").read_text())["epochs"] == 2
    epoch_2 = keras.models.load_model(run / "last.keras", compile=False).get_layer(kernel).get_weights()[0]
    assert np.abs(epoch_2 - epoch_1).max() > 1e-6
    # A run cannot be resumed to fewer epochs than it has trained (clear error, exit code 2).
    assert train_cli(["train", "emotion", "--data", str(data), "--runs", str(runs), "--name", "e", "--tiny",
                      "--epochs", "1", "--resume"]) == 2
    assert len((run / "history.csv").read_text().strip().splitlines()) == 3  # header + 2 epochs

    # --init-from starts a new run from those weights: with a zero learning rate they stay as they were.
    _train(["emotion", "--data", str(data), "--runs", str(runs), "--name", "f", "--epochs", "1", "--lr", "0",
            "--init-from", str(run / "last.keras")])
    start = keras.models.load_model(run / "last.keras", compile=False).get_layer(kernel).get_weights()[0]
    after = keras.models.load_model(runs / "f" / "last.keras", compile=False).get_layer(kernel).get_weights()[0]
    np.testing.assert_array_equal(after, start)
    assert json.loads((runs / "f" / "config.json").read_text())["init_from"] == str(run / "last.keras")
    # Weights of another architecture are refused with a clear error (exit code 2), not a crash.
    assert train_cli(["train", "emotion", "--data", str(data), "--runs", str(runs), "--name", "g", "--tiny",
                      "--classes", "5", "--init-from", str(run / "last.keras")]) == 2

    out = tmp_path / "models_export"
    assert train_cli(["export", str(run), "--out", str(out)]) == 0
    version = out / "emotion" / "1"
    sig = tf.saved_model.load(str(version)).signatures["serving_default"]
    assert list(sig.structured_input_signature[1]) == ["image"]
    spec = sig.structured_input_signature[1]["image"]
    assert spec.dtype == tf.uint8 and spec.shape.as_list() == [None, 48, 48, 1]
    outs = sig.structured_outputs
    assert set(outs) == {"scores", "classes"}
    assert outs["scores"].dtype == tf.float32 and outs["scores"].shape.as_list() == [None, 7]
    assert outs["classes"].dtype == tf.string and outs["classes"].shape.as_list() == [None, 7]
    result = sig(image=tf.constant(np.random.default_rng(0).integers(0, 256, (3, 48, 48, 1), dtype=np.uint8)))
    np.testing.assert_allclose(result["scores"].numpy().sum(1), 1.0, atol=1e-5)
    assert [c.decode() for c in result["classes"].numpy()[2]] == list(EMOTION_LABELS)
    # The served graph (batch norms folded into the convolutions) computes what the checkpoint does.
    from emotion_ai_training.train import TrainConfig, build_model, copy_weights

    pixels = np.random.default_rng(0).integers(0, 256, (3, 48, 48, 1), dtype=np.uint8)
    checkpoint = build_model(TrainConfig(**json.loads((run / "config.json").read_text())))
    copy_weights(run / "best.keras", checkpoint)
    np.testing.assert_allclose(result["scores"].numpy(), checkpoint.predict(pixels.astype(np.float32), verbose=0),
                               atol=1e-5)

    card = json.loads((version / "model_card.json").read_text())
    assert card["training_data"]["file"] == "fer2013.csv" and len(card["training_data"]["sha256"]) == 64
    assert card["training_data"]["splits"] == {"train": 16, "validation": 16, "test": 16}
    assert 0.0 <= card["validation_metrics"]["accuracy"] <= 1.0
    assert card["training"]["epochs_trained"] == 2
    history = np.genfromtxt(run / "history.csv", delimiter=",", names=True)
    assert card["training"]["checkpoint_epoch"] == int(np.argmax(history["val_accuracy"])) + 1

    _check_warmup(version / "assets.extra" / "tf_serving_warmup_requests", "emotion", 48)
    # Versions are immutable and numbered upwards.
    assert train_cli(["export", str(run), "--out", str(out), "--version", "1", "--no-evaluate"]) == 2
    assert train_cli(["export", str(run), "--out", str(out), "--no-evaluate"]) == 0
    assert sorted(p.name for p in (out / "emotion").iterdir()) == ["1", "2"]


def test_regularisation_flags_reach_the_model_augmentation_and_preview(tmp_path: Path) -> None:
    data = write_fer_csv(tmp_path / "fer2013.csv", fer_rows(48))
    runs, cache = tmp_path / "runs", str(tmp_path / "cache")
    _train(["emotion", "--data", str(data), "--runs", str(runs), "--name", "r", "--epochs", "1", "--cache-dir", cache,
            "--dropout", "0.25", "--erase", "0.0", "--label-smoothing", "0.05"])
    config = json.loads((runs / "r" / "config.json").read_text())
    assert config["resnet"]["dropout"] == 0.25 and config["erase_probability"] == 0.0
    assert config["label_smoothing"] == 0.05
    import keras

    model = keras.models.load_model(runs / "r" / "last.keras", compile=False)
    assert model.get_layer("dropout").rate == 0.25
    from emotion_ai_training.train import TrainConfig

    cfg = TrainConfig(**config)
    assert cfg.augment_config().erase_probability == 0.0 and cfg.augment_config().max_rotation_deg == 10.0
    assert TrainConfig("emotion", "d", "r").augment_config().erase_probability == 0.5
    assert TrainConfig("emotion", "d", "r", dropout=0.1).resnet_config().dropout == 0.1
    # Out-of-range values are refused before any work, with exit code 2.
    for flag in ("--dropout", "--erase", "--label-smoothing"):
        assert train_cli(["train", "emotion", "--data", str(data), "--runs", str(runs), "--name", "x", "--tiny",
                          flag, "1.5"]) == 2
    assert not (runs / "x").exists()
    # --preview draws with the configured augmentation: with the same seed, only --erase differs.
    previews = []
    for erase in ("0.0", "0.99"):
        png = tmp_path / f"preview-{erase}.png"
        assert train_cli(["train", "emotion", "--data", str(data), "--cache-dir", cache, "--erase", erase,
                          "--preview", str(png)]) == 0
        import cv2

        previews.append(cv2.imread(str(png), cv2.IMREAD_GRAYSCALE))
    assert previews[0].shape == previews[1].shape and np.abs(previews[0].astype(int) - previews[1]).mean() > 1


def test_ensemble_export_averages_members_and_float16_halves_the_size(tmp_path: Path) -> None:
    data = write_fer_csv(tmp_path / "fer2013.csv", fer_rows(48))
    runs, out, cache = tmp_path / "runs", tmp_path / "models_export", str(tmp_path / "cache")
    for name, seed in (("a", "1"), ("b", "2")):
        _train(["emotion", "--data", str(data), "--runs", str(runs), "--name", name, "--epochs", "1",
                "--seed", seed, "--cache-dir", cache])
    _train(["emotion", "--data", str(data), "--runs", str(runs), "--name", "five", "--epochs", "1",
            "--classes", "5", "--cache-dir", cache])
    a, b = str(runs / "a"), str(runs / "b")
    for args in ([a], [b], [a, b]):
        assert train_cli(["export", *args, "--out", str(out), "--no-evaluate"]) == 0
    assert train_cli(["export", a, b, "--out", str(out), "--weights-dtype", "float16", "--flip-tta"]) == 0

    def scores(version: int, images: np.ndarray) -> np.ndarray:
        sig = tf.saved_model.load(str(out / "emotion" / str(version))).signatures["serving_default"]
        return sig(image=tf.constant(images))["scores"].numpy()

    images = np.random.default_rng(0).integers(0, 256, (5, 48, 48, 1), dtype=np.uint8)
    single_a, single_b, ensemble = scores(1, images), scores(2, images), scores(3, images)
    assert np.abs(single_a - single_b).max() > 1e-3  # the members differ, so the test can tell
    np.testing.assert_allclose(ensemble, (single_a + single_b) / 2, atol=1e-5)
    mirrored = images[:, :, ::-1].copy()
    expected = (single_a + single_b + scores(1, mirrored) + scores(2, mirrored)) / 4
    half = scores(4, images)
    np.testing.assert_allclose(half, expected, atol=2e-3)  # float16 storage, float32 compute
    np.testing.assert_allclose(half.sum(1), 1.0, atol=1e-5)

    # Shift TTA: the mean over the image, its 4 copies moved by ±2 px (edges repeated) and their mirrors.
    assert train_cli(["export", a, "--out", str(out), "--no-evaluate", "--flip-tta", "--shift-tta", "2"]) == 0
    padded = np.pad(images, ((0, 0), (2, 2), (2, 2), (0, 0)), mode="edge")
    views = [padded[:, 2 + dy:50 + dy, 2 + dx:50 + dx] for dy, dx in ((0, 0), (2, 0), (0, 2), (-2, 0), (0, -2))]
    views += [v[:, :, ::-1] for v in views]
    expected = np.mean([scores(1, np.ascontiguousarray(v)) for v in views], axis=0)
    shifted = scores(5, images)
    assert np.abs(shifted - single_a).max() > 1e-4  # the views change the answer, so the test can tell
    np.testing.assert_allclose(shifted, expected, atol=1e-5)
    assert json.loads((out / "emotion" / "5" / "model_card.json").read_text())["shift_tta_pixels"] == 2
    for bad in ("12", "-1"):
        assert train_cli(["export", a, "--out", str(out), "--no-evaluate", "--shift-tta", bad]) == 2

    def stored_weights(version: int) -> tuple[set[str], int]:
        """dtypes and element count of the saved model weights (not the save counter)."""
        reader = tf.train.load_checkpoint(str(out / "emotion" / str(version) / "variables" / "variables"))
        shapes = reader.get_variable_to_shape_map()
        weights = [k for k in shapes if k.startswith("net/")]
        dtypes = {reader.get_variable_to_dtype_map()[k].name for k in weights}
        return dtypes, sum(int(np.prod(shapes[k])) for k in weights)

    (dtypes_1, count_1), (dtypes_3, count_3), (dtypes_4, count_4) = (stored_weights(v) for v in (1, 3, 4))
    assert dtypes_1 == dtypes_3 == {"float32"} and dtypes_4 == {"float16"}
    assert count_1 > 0 and count_3 == count_4 == 2 * count_1
    card = json.loads((out / "emotion" / "4" / "model_card.json").read_text())
    assert card["ensemble_members"] == 2 and card["weights_dtype"] == "float16"
    assert [m["run"] for m in card["training"]] == ["a", "b"]
    assert "accuracy" in card["validation_metrics"]
    # Runs that do not share the label set (or task, or data) cannot be averaged: clear error, exit code 2.
    assert train_cli(["export", a, str(runs / "five"), "--out", str(out), "--no-evaluate"]) == 2
    assert train_cli(["export", a, str(tmp_path), "--out", str(out), "--no-evaluate"]) == 2
    assert train_cli(["export", a, str(out / "emotion" / "1"), "--out", str(out), "--no-evaluate"]) == 2  # a version
    assert sorted(p.name for p in (out / "emotion").iterdir()) == ["1", "2", "3", "4", "5"]


def _check_warmup(path: Path, model: str, size: int) -> None:
    from tensorflow_serving.apis import prediction_log_pb2

    batches = []
    for record in tf.data.TFRecordDataset(str(path)):
        log = prediction_log_pb2.PredictionLog.FromString(record.numpy())
        req = log.predict_log.request
        assert req.model_spec.name == model and req.model_spec.signature_name == "serving_default"
        arr = tf.make_ndarray(req.inputs["image"])
        assert arr.dtype == np.uint8 and arr.shape[1:] == (size, size, 1)
        batches.append(arr.shape[0])
    assert batches == [1, 4, 16]


def test_keypoints_smoke_training_with_missing_points_and_flip_tta_export(tmp_path: Path) -> None:
    data = write_keypoints_csv(tmp_path / "training.csv", 40)
    runs = tmp_path / "runs"
    _train(["keypoints", "--data", str(data), "--runs", str(runs), "--name", "k", "--epochs", "1"])
    history = (runs / "k" / "history.csv").read_text().splitlines()
    assert np.isfinite(float(history[1].split(",")[1]))  # masked loss stays finite with missing points
    out = tmp_path / "models_export"
    assert train_cli(["export", str(runs / "k"), "--out", str(out), "--flip-tta"]) == 0
    version = out / "keypoints" / "1"
    sig = tf.saved_model.load(str(version)).signatures["serving_default"]
    spec = sig.structured_input_signature[1]["image"]
    assert spec.dtype == tf.uint8 and spec.shape.as_list() == [None, 96, 96, 1]
    assert sig.structured_outputs["keypoints"].shape.as_list() == [None, 15, 2]
    assert sig.structured_outputs["keypoints"].dtype == tf.float32
    # Flip-TTA inside the graph is mirror-equivariant: f(flip(I)) == mirror(f(I)) with names swapped.
    img = keypoint_frame(frontal_points())[None, :, :, None]
    p = sig(image=tf.constant(img))["keypoints"].numpy()[0]
    q = sig(image=tf.constant(img[:, :, ::-1].copy()))["keypoints"].numpy()[0]
    mirrored = np.stack([95 - p[:, 0], p[:, 1]], -1)[list(FLIP_PERMUTATION)]
    np.testing.assert_allclose(q, mirrored, atol=1e-3)
    card = json.loads((version / "model_card.json").read_text())
    assert card["flip_tta"] is True and "rmse" in card["validation_metrics"]
    # Shifting an image would move its keypoints, so shift TTA is refused for keypoints (exit code 2).
    assert train_cli(["export", str(runs / "k"), "--out", str(out), "--shift-tta", "2"]) == 2
    _check_warmup(version / "assets.extra" / "tf_serving_warmup_requests", "keypoints", 96)


def test_classification_report_values() -> None:
    r = classification_report(np.array([0, 0, 1, 1, 2]), np.array([0, 1, 1, 1, 0]), ("a", "b", "c"))
    assert r["accuracy"] == 0.6
    assert r["per_class"]["b"] == {"precision": 0.6667, "recall": 1.0, "f1": 0.8, "support": 2}
    assert r["per_class"]["c"]["recall"] == 0.0
    assert r["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    assert r["macro_f1"] == pytest.approx((0.5 + 0.8 + 0) / 3, abs=1e-4)


def test_keypoint_errors_values() -> None:
    true = np.tile(frontal_points(), (2, 1, 1))
    pred = true + np.array([3.0, 4.0], np.float32)  # every point off by 5 px
    true[1, 5] = np.nan  # a missing point is ignored
    e = keypoint_errors(pred, true)
    assert e["rmse"] == pytest.approx(np.sqrt(12.5), abs=1e-4)
    # Row 1 lacks an outer eye corner, so only row 0 has an inter-ocular distance (73 - 23 = 50 px).
    assert e["nme_interocular"] == pytest.approx(5 / 50, abs=1e-5)
    assert e["per_point_rmse"]["nose_tip"] == pytest.approx(np.sqrt(12.5), abs=1e-4)


def test_describe_counts_duplicates_across_splits(tmp_path: Path) -> None:
    rows = fer_rows(9)
    rows.append((rows[0][0], rows[0][1], "PublicTest"))  # same image as row 0 (Training) in PublicTest
    rows.append((3, np.zeros((48, 48), np.uint8), "Training"))  # blank
    data = write_fer_csv(tmp_path / "fer2013.csv", rows)
    out = tmp_path / "describe"
    assert train_cli(["describe", str(data), "--out", str(out), "--cache-dir", str(tmp_path / "c")]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["duplicate_groups"] == 1 and summary["groups_crossing_splits"] == 1
    assert summary["blank_images"] == 1
    assert {"class_distribution.png", "samples_per_class.png", "summary.txt"} <= {p.name for p in out.iterdir()}
    kp = write_keypoints_csv(tmp_path / "training.csv", 12)
    assert train_cli(["describe", str(kp), "--out", str(tmp_path / "dk"), "--cache-dir", str(tmp_path / "c")]) == 0
    ks = json.loads((tmp_path / "dk" / "summary.json").read_text())
    assert ks["task"] == "keypoints" and ks["missing_per_point"]["nose_tip"] == 4
    assert ks["missing_per_point"]["left_eye_center"] == 0


def test_strict_flag_fails_on_a_bad_row_that_the_default_skips(tmp_path: Path) -> None:
    data = write_fer_csv(tmp_path / "fer2013.csv", fer_rows(12), extra_lines=("9,1 2 3,Training",))
    out, cache = tmp_path / "describe", str(tmp_path / "cache")
    assert train_cli(["describe", str(data), "--out", str(out), "--cache-dir", cache]) == 0
    assert json.loads((out / "summary.json").read_text())["images"] == 12
    # The parsed file is cached now; a cache hit must still see the bad row.
    assert train_cli(["describe", str(data), "--out", str(out), "--cache-dir", cache, "--strict"]) == 2
    assert train_cli(["train", "emotion", "--data", str(data), "--runs", str(tmp_path / "runs"), "--tiny",
                      "--epochs", "1", "--cache-dir", cache, "--strict"]) == 2


def test_configs_of_retired_experiments_load_but_do_not_train_on() -> None:
    """Runs and model cards from before an experiment left keep its setting: ignored when their networks are
    built (export, rebuild, --init-from), refused when a run would train on with it (--resume)."""
    from dataclasses import asdict

    from emotion_ai_training.config import RETIRED_FIELDS, TrainConfig

    repo = Path(__file__).resolve().parents[2]
    for card in sorted((repo / "models_export").glob("*/*/model_card.json")):
        records = json.loads(card.read_text())["training"]
        for record in records if isinstance(records, list) else [records]:
            cfg = TrainConfig.from_dict(record["config"])
            assert not set(RETIRED_FIELDS) & set(asdict(cfg))
    off = {"task": "emotion", "data": "d", "run_dir": "r"} | {k: v for k, (v, _) in RETIRED_FIELDS.items()}
    assert TrainConfig.from_dict(off, strict=True) == TrainConfig("emotion", "d", "r")
    for name, (value, commit) in RETIRED_FIELDS.items():
        used = off | {name: 3 if isinstance(value, int) and not isinstance(value, bool) else True}
        assert TrainConfig.from_dict(used) == TrainConfig("emotion", "d", "r")
        with pytest.raises(ValueError, match=f"{name}=.*{commit}"):
            TrainConfig.from_dict(used, strict=True)


@pytest.mark.parametrize("kind", ["emotion", "keypoints"])
def test_evaluate_refuses_the_other_tasks_data(kind, tmp_path):
    from emotion_ai_training.data import EmotionData, KeypointsData
    from emotion_ai_training.evaluate import evaluate

    split = np.array(["validation"])
    other = (KeypointsData(np.zeros((1, 96, 96), np.uint8), np.zeros((1, 15, 2), np.float32), {}, split, "x")
             if kind == "emotion" else
             EmotionData(np.zeros((1, 48, 48), np.uint8), np.zeros(1, np.int64), split, ("happy",), "x"))
    article = "an" if kind == "emotion" else "a"
    message = f"^{article} {kind} model is evaluated on {kind} data, not {type(other).__name__}$"
    with pytest.raises(TypeError, match=message):
        evaluate(kind, tmp_path / "no-model", "unused.csv", tmp_path / "out", dataset=other)
    assert not (tmp_path / "out").exists()
