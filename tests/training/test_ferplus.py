"""FER+ votes: the loader aligns them with FER-2013 row by row, drops what it should, and makes the targets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from emotion_ai.spec import EMOTION_LABELS
from emotion_ai_training.data import load_emotion
from emotion_ai_training.dataset_files import DatasetError
from emotion_ai_training.ferplus import (
    FERPLUS_COLUMNS,
    agrees,
    aligned_votes,
    emotion_votes,
    load_ferplus,
    targets,
    usable,
)

from .training_datagen import fer_rows, ferplus_votes, write_fer_csv, write_ferplus_csv

# neutral happiness surprise sadness anger disgust fear contempt unknown NF
VOTES = np.array([
    [0, 7, 0, 0, 0, 0, 0, 3, 0, 0],  # happy (contempt dropped)
    [4, 0, 0, 4, 0, 0, 0, 0, 2, 0],  # tie neutral / sad
    [0, 0, 0, 0, 0, 0, 0, 0, 3, 7],  # not a face: left out
    [0, 0, 0, 0, 0, 0, 0, 10, 0, 0],  # only contempt: left out
    [3, 0, 0, 0, 0, 0, 0, 0, 3, 4],  # NF as voted as the top expression: left out
])


def test_seven_class_votes_follow_fer2013_order() -> None:
    seven = emotion_votes(VOTES)
    assert seven.shape == (5, 7)
    assert seven[0, EMOTION_LABELS.index("happy")] == 7 and seven[0].sum() == 7
    assert seven[1, EMOTION_LABELS.index("neutral")] == 4 and seven[1, EMOTION_LABELS.index("sad")] == 4
    np.testing.assert_array_equal(usable(VOTES), [True, True, False, False, False])


def test_targets_majority_splits_ties_and_votes_renormalise() -> None:
    majority = targets(VOTES[:2], "ferplus-majority")
    np.testing.assert_allclose(majority[0], np.eye(7)[EMOTION_LABELS.index("happy")])
    assert majority[1, EMOTION_LABELS.index("neutral")] == pytest.approx(0.5)
    assert majority[1, EMOTION_LABELS.index("sad")] == pytest.approx(0.5)
    soft = targets(VOTES[:2], "ferplus-votes")
    np.testing.assert_allclose(soft.sum(axis=1), 1.0, rtol=1e-6)
    assert soft[0, EMOTION_LABELS.index("happy")] == pytest.approx(1.0)  # 7 of the 7 non-contempt votes
    with pytest.raises(ValueError, match="scheme"):
        targets(VOTES, "fer2013")


def test_agreement_counts_any_tied_majority_class() -> None:
    predicted = np.array([EMOTION_LABELS.index("happy"), EMOTION_LABELS.index("sad")])
    np.testing.assert_array_equal(agrees(predicted, VOTES[:2]), [True, True])
    np.testing.assert_array_equal(agrees(predicted[::-1], VOTES[:2]), [False, False])


def test_loader_aligns_rows_and_skips_bad_fer_rows(tmp_path: Path) -> None:
    rows = fer_rows(9)
    fer = write_fer_csv(tmp_path / "fer2013.csv", rows, extra_lines=("3,1 2 3,Training",))  # a bad 10th row
    usages = [use for _, _, use in rows] + ["Training"]
    votes = ferplus_votes(10)
    data = load_emotion(fer)
    assert len(data.images) == 9 and len(data.bad_rows) == 1
    np.testing.assert_array_equal(data.rows, np.arange(9))
    aligned = aligned_votes(data, load_ferplus(write_ferplus_csv(tmp_path / "fer2013new.csv.gz", usages, votes)))
    np.testing.assert_array_equal(aligned, votes[:9])
    # The cache keeps the rows the votes align on.
    cached = load_emotion(fer, cache_dir=tmp_path / "cache")
    again = load_emotion(fer, cache_dir=tmp_path / "cache")
    np.testing.assert_array_equal(again.rows, cached.rows)


def test_loader_refuses_files_that_do_not_align(tmp_path: Path) -> None:
    rows = fer_rows(6)
    data = load_emotion(write_fer_csv(tmp_path / "fer2013.csv", rows))
    usages = [use for _, _, use in rows]
    short = load_ferplus(write_ferplus_csv(tmp_path / "short.csv", usages[:4], ferplus_votes(4)))
    with pytest.raises(DatasetError, match="rows"):
        aligned_votes(data, short)
    swapped = ["PublicTest" if u == "Training" else "Training" for u in usages]
    with pytest.raises(DatasetError, match="does not align"):
        aligned_votes(data, load_ferplus(write_ferplus_csv(tmp_path / "swapped.csv", swapped, ferplus_votes(6))))
    with pytest.raises(DatasetError, match="not a FER\\+ vote file"):
        load_ferplus(write_fer_csv(tmp_path / "not_votes.csv", rows))


def test_bad_vote_rows_are_counted_and_become_unusable(tmp_path: Path) -> None:
    path = write_ferplus_csv(tmp_path / "votes.csv", ["Training"], ferplus_votes(1),
                             extra_lines=("Training,fer1.png,1,x,0,0,0,0,0,0,0,0",))
    loaded = load_ferplus(path)
    assert len(loaded.votes) == 2 and len(loaded.bad_rows) == 1
    assert not usable(loaded.votes)[1] and loaded.votes.shape[1] == len(FERPLUS_COLUMNS)
    with pytest.raises(DatasetError):
        load_ferplus(path, strict=True)


def test_soft_label_loss_equals_numpy_cross_entropy() -> None:
    import keras

    soft = targets(ferplus_votes(4), "ferplus-votes")
    probs = np.random.default_rng(0).dirichlet(np.ones(7), size=4).astype(np.float32)
    loss = float(keras.losses.CategoricalCrossentropy()(soft, probs))
    assert loss == pytest.approx(float(np.mean(-(soft * np.log(probs)).sum(axis=1))), rel=1e-5)


@pytest.mark.parametrize("labels", ["ferplus-majority", "ferplus-votes"])
def test_training_on_ferplus_targets_resumes_and_exports_the_same_contract(tmp_path: Path, labels: str) -> None:
    tf = pytest.importorskip("tensorflow")
    from emotion_ai_training.cli import main as train_cli

    rows = fer_rows(48)
    fer = write_fer_csv(tmp_path / "fer2013.csv", rows)
    votes = write_ferplus_csv(tmp_path / "fer2013new.csv", [use for _, _, use in rows], ferplus_votes(48))
    runs = tmp_path / "runs"
    common = ["train", "emotion", "--data", str(fer), "--runs", str(runs), "--name", "e", "--labels", labels,
              "--votes", str(votes), "--tiny", "--precision", "float32", "--batch-size", "8",
              "--cache-dir", str(tmp_path / "cache")]
    assert train_cli([*common, "--epochs", "1"]) == 0
    assert train_cli([*common, "--epochs", "2", "--resume"]) == 0
    import json

    config = json.loads((runs / "e" / "config.json").read_text())
    assert config["labels"] == labels and config["votes"] == str(votes)
    assert json.loads((runs / "e" / "state.json").read_text())["epoch"] == 2
    out = tmp_path / "models_export"
    assert train_cli(["export", str(runs / "e"), "--out", str(out)]) == 0
    sig = tf.saved_model.load(str(out / "emotion" / "1")).signatures["serving_default"]
    assert sig.structured_input_signature[1]["image"].shape.as_list() == [None, 48, 48, 1]
    scores = sig(image=tf.zeros([2, 48, 48, 1], tf.uint8))["scores"].numpy()
    assert scores.shape == (2, 7)
    np.testing.assert_allclose(scores.sum(axis=1), 1.0, rtol=1e-3)
    # FER+ targets need the 7 classes and the emotion task.
    assert train_cli([*common[:-2], "--name", "f", "--classes", "5"]) == 2


def test_a_folded_version_unfolds_into_a_trainable_network_with_the_same_outputs(tmp_path: Path) -> None:
    tf = pytest.importorskip("tensorflow")
    from emotion_ai_training.cli import main as train_cli
    from emotion_ai_training.train import TrainConfig, build_model, copy_weights

    fer = write_fer_csv(tmp_path / "fer2013.csv", fer_rows(48))
    runs, out = tmp_path / "runs", tmp_path / "models_export"
    assert train_cli(["train", "emotion", "--data", str(fer), "--runs", str(runs), "--name", "e", "--tiny",
                      "--precision", "float32", "--batch-size", "8", "--epochs", "2"]) == 0
    assert train_cli(["export", str(runs / "e"), "--out", str(out), "--compute-dtype", "float32"]) == 0
    version = out / "emotion" / "1"
    assert json_card(version)["batch_norm_folded"]
    images = np.random.default_rng(1).integers(0, 256, (64, 48, 48, 1)).astype(np.float32)
    model = build_model(TrainConfig(task="emotion", data=str(fer), run_dir="", tiny=True))
    with pytest.raises(ValueError, match="needs images"):
        copy_weights(version, model)
    copy_weights(version, model, images=images)
    served = tf.saved_model.load(str(version)).signatures["serving_default"]
    expected = served(image=tf.constant(images[:8].astype(np.uint8)))["scores"].numpy()
    np.testing.assert_allclose(model.predict(images[:8], verbose=0), expected, atol=2e-3)
    assert any(layer.__class__.__name__ == "BatchNormalization" for layer in model.layers)


def json_card(version: Path) -> dict:
    import json

    return json.loads((version / "model_card.json").read_text())


def test_calibration_error_matches_its_definition() -> None:
    from emotion_ai_training.evaluate import calibration

    scores = np.array([[0.95, 0.05], [0.9, 0.1], [0.6, 0.4], [0.3, 0.7]])
    truth = np.array([0, 1, 0, 1])
    result = calibration(scores, truth, bins=2)
    # Bin [0.5, 1]: all four, confidence (0.95+0.9+0.6+0.7)/4 = 0.7875, accuracy 3/4.
    assert result["ece"] == pytest.approx(abs(0.75 - 0.7875), abs=1e-4)
    assert result["bins"] == [{"low": 0.5, "high": 1.0, "images": 4, "confidence": 0.7875, "accuracy": 0.75}]
    assert calibration(np.eye(3), np.arange(3))["ece"] == 0.0


def test_ferplus_report_counts_ties_and_leaves_out_unusable_images() -> None:
    from emotion_ai_training.evaluate import ferplus_report

    scores = np.full((5, 7), 0.01)
    scores[0, EMOTION_LABELS.index("happy")] = 0.9  # agrees
    scores[1, EMOTION_LABELS.index("sad")] = 0.9  # agrees (tie neutral / sad)
    scores[2:, EMOTION_LABELS.index("angry")] = 0.9  # left out: not a face, contempt only, NF
    report = ferplus_report(scores, VOTES)
    assert report["images"] == 2 and report["left_out"] == 3
    assert report["agreement"] == 1.0
    scores[1] = 0.01
    scores[1, EMOTION_LABELS.index("fear")] = 0.9
    report = ferplus_report(scores, VOTES)
    assert report["agreement"] == 0.5
    cm = np.array(report["confusion_matrix"])
    assert cm[EMOTION_LABELS.index("sad"), EMOTION_LABELS.index("fear")] == 1  # the first majority class


def test_fer2013_weight_mixes_the_one_hot_label_into_the_ferplus_target(tmp_path: Path) -> None:
    from emotion_ai_training.train import TrainConfig, run_batches

    rows = fer_rows(30)
    fer = write_fer_csv(tmp_path / "fer2013.csv", rows)
    votes = ferplus_votes(30)
    path = write_ferplus_csv(tmp_path / "votes.csv", [use for _, _, use in rows], votes)
    config = {"task": "emotion", "data": str(fer), "run_dir": str(tmp_path / "run"), "labels": "ferplus-votes",
              "votes": str(path), "tiny": True}
    _, plain = run_batches(TrainConfig(**config))
    _, mixed = run_batches(TrainConfig(**config, fer2013_weight=0.25))
    keep = usable(votes) & np.array([use == "PublicTest" for _, _, use in rows])
    labels = np.array([label for label, _, _ in rows])[keep]
    np.testing.assert_allclose(mixed.targets, 0.25 * np.eye(7)[labels] + 0.75 * plain.targets, rtol=1e-6)
    with pytest.raises(ValueError, match="fer2013_weight"):
        TrainConfig(task="emotion", data=str(fer), run_dir="", fer2013_weight=0.5)


def test_fitted_temperature_recovers_the_one_that_made_the_scores_overconfident() -> None:
    from emotion_ai_training.evaluate import fit_temperature, rescale, temperature_fit

    rng = np.random.default_rng(0)
    logits = rng.normal(0.0, 1.5, (4000, 7))
    truth = np.array([rng.choice(7, p=p) for p in rescale(np.exp(logits), 1.0)])  # calibrated at T = 1
    sharp = rescale(np.exp(logits), 0.5)  # the same scores made overconfident
    assert fit_temperature(sharp, truth) == pytest.approx(2.0, rel=0.08)
    np.testing.assert_allclose(rescale(sharp, 2.0), rescale(np.exp(logits), 1.0), rtol=1e-6)
    assert (rescale(sharp, 3.0).argmax(1) == sharp.argmax(1)).all()  # the top class never changes
    fit = temperature_fit(sharp, truth)
    assert fit["ece_cross_fitted"] < calibration_ece(sharp, truth) / 2


def calibration_ece(scores: np.ndarray, truth: np.ndarray) -> float:
    from emotion_ai_training.evaluate import calibration

    return calibration(scores, truth)["ece"]


def test_export_with_a_temperature_serves_rescaled_scores_and_reexport_keeps_it(tmp_path: Path) -> None:
    tf = pytest.importorskip("tensorflow")
    from emotion_ai_training.cli import main as train_cli
    from emotion_ai_training.evaluate import rescale

    fer = write_fer_csv(tmp_path / "fer2013.csv", fer_rows(48))
    runs, out = tmp_path / "runs", tmp_path / "models_export"
    assert train_cli(["train", "emotion", "--data", str(fer), "--runs", str(runs), "--name", "e", "--tiny",
                      "--precision", "float32", "--batch-size", "8", "--epochs", "1"]) == 0
    for extra in ([], ["--temperature", "0.5"]):
        assert train_cli(["export", str(runs / "e"), "--out", str(out), "--no-evaluate", *extra]) == 0
    assert train_cli(["reexport", str(out / "emotion" / "2"), "--out", str(out), "--no-evaluate",
                      "--weights-dtype", "float32"]) == 0
    images = tf.constant(np.random.default_rng(2).integers(0, 256, (6, 48, 48, 1)).astype(np.uint8))

    def scores(version: int) -> np.ndarray:
        return tf.saved_model.load(str(out / "emotion" / str(version))).signatures["serving_default"](
            image=images)["scores"].numpy()

    plain = scores(1)
    np.testing.assert_allclose(scores(2), rescale(plain, 0.5), atol=1e-4)
    np.testing.assert_allclose(scores(3), scores(2), atol=1e-4)
    assert [json_card(out / "emotion" / str(v))["temperature"] for v in (1, 2, 3)] == [1.0, 0.5, 0.5]
    assert train_cli(["export", str(runs / "e"), "--out", str(out), "--temperature", "0"]) == 2
