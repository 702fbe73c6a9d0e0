"""Rebuilding an exported version's networks, the emotion cascade graph and its re-export."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from emotion_ai_training.cli import main as train_cli

from .training_datagen import fer_rows, write_fer_csv

tf = pytest.importorskip("tensorflow")


def _train_runs(tmp_path: Path, names: tuple[str, ...]) -> tuple[Path, Path, Path]:
    data = write_fer_csv(tmp_path / "fer2013.csv", fer_rows(48))
    runs = tmp_path / "runs"
    for seed, name in enumerate(names):
        assert train_cli(["train", "emotion", "--data", str(data), "--runs", str(runs), "--name", name, "--epochs",
                          "1", "--seed", str(seed + 1), "--tiny", "--precision", "float32", "--batch-size", "8",
                          "--cache-dir", str(tmp_path / "cache")]) == 0
    return data, runs, tmp_path / "models_export"


def _scores(version: Path, images: np.ndarray) -> np.ndarray:
    sig = tf.saved_model.load(str(version)).signatures["serving_default"]
    return sig(image=tf.constant(images))["scores"].numpy()


def _mean_over_views(ensemble, images: np.ndarray) -> np.ndarray:
    """An ExportedEnsemble's mean output over its views, computed by its Keras networks."""
    from emotion_ai_training.serving_graph import tta_views

    views = tta_views(tf.constant(images, tf.float32), ensemble.flip_tta, ensemble.shift_tta)
    return np.mean([[tf.cast(m(v, training=False), tf.float32).numpy() for v in views] for m in ensemble.models],
                   axis=(0, 1))


def test_rebuilt_networks_compute_what_the_version_serves(tmp_path: Path) -> None:
    from emotion_ai_training.export import export_model
    from emotion_ai_training.rebuild import rebuild_version
    from emotion_ai_training.train import TrainConfig, build_model, copy_weights

    data, runs, out = _train_runs(tmp_path, ("a", "b"))
    assert train_cli(["export", str(runs / "a"), str(runs / "b"), "--out", str(out), "--flip-tta", "--shift-tta",
                      "2", "--weights-dtype", "float16", "--no-evaluate"]) == 0
    folded = out / "emotion" / "1"
    card = json.loads((folded / "model_card.json").read_text())
    # The same runs exported without folding (the layout of versions exported before folding existed).
    members = []
    for run in ("a", "b"):
        model = build_model(TrainConfig(**json.loads((runs / run / "config.json").read_text())))
        copy_weights(runs / run / "best.keras", model)
        members.append(model)
    unfolded = export_model(members, "emotion", out / "emotion", version=2, labels=tuple(card["labels"]),
                            flip_tta=True, shift_tta=2, card={"training": card["training"]}, fold_batch_norms=False)
    images = np.random.default_rng(0).integers(0, 256, (6, 48, 48, 1), dtype=np.uint8)
    for version in (folded, unfolded):
        rebuilt = rebuild_version(version)
        assert (rebuilt.flip_tta, rebuilt.shift_tta, len(rebuilt.models)) == (True, 2, 2)
        np.testing.assert_allclose(_mean_over_views(rebuilt, images), _scores(version, images), atol=1e-5)
    # The folded rebuild has no batch-norm layers left; the unfolded one keeps them.
    kinds = [{type(layer).__name__ for layer in rebuild_version(v).models[0].layers} for v in (folded, unfolded)]
    assert "BatchNormalization" not in kinds[0] and "BatchNormalization" in kinds[1]
    with pytest.raises(FileNotFoundError):
        rebuild_version(tmp_path)

    # A new run can start from a one-network exported version (`--init-from VERSION`): run b's network alone,
    # unfolded, gives back b's weights (float16 storage); an ensemble of several networks, or a folded version
    # without images to unfold it with, is refused.
    single = export_model(members[1], "emotion", out / "emotion", version=3, labels=tuple(card["labels"]),
                          card={"training": card["training"][1]}, fold_batch_norms=False, weights_dtype="float16")
    fresh = build_model(TrainConfig(**json.loads((runs / "b" / "config.json").read_text())))
    copy_weights(single, fresh)
    for got, want in zip(fresh.get_weights(), members[1].get_weights(), strict=True):
        np.testing.assert_allclose(got, want, rtol=2e-3, atol=2e-3)
    single_folded = export_model(members[1], "emotion", out / "emotion", version=4, labels=tuple(card["labels"]),
                                 card={"training": card["training"][1]})
    with pytest.raises(ValueError, match="folded"):
        copy_weights(single_folded, fresh)
    with pytest.raises(ValueError, match="ensemble of 2 networks"):
        copy_weights(unfolded, fresh)
    common = ["train", "emotion", "--data", str(data), "--runs", str(runs), "--epochs", "1", "--tiny", "--precision",
              "float32", "--batch-size", "8", "--cache-dir", str(tmp_path / "cache")]
    assert train_cli([*common, "--name", "c", "--init-from", str(single)]) == 0
    assert json.loads((runs / "c" / "config.json").read_text())["init_from"] == str(single)
    assert train_cli([*common, "--name", "d", "--init-from", str(unfolded)]) == 2


def test_cascade_answers_only_the_unsure_faces_with_the_fallback(tmp_path: Path) -> None:
    from emotion_ai_training.rebuild import rebuild_version

    _, runs, out = _train_runs(tmp_path, ("fast", "slow"))
    exported = out / "emotion"
    assert train_cli(["export", str(runs / "fast"), "--out", str(out), "--no-evaluate"]) == 0  # 1
    assert train_cli(["export", str(runs / "slow"), "--out", str(out), "--flip-tta"]) == 0  # 2, evaluated
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (40, 48, 48, 1), dtype=np.uint8)
    fast, slow = _scores(exported / "1", images), _scores(exported / "2", images)
    assert np.abs(fast - slow).max() > 1e-3  # the stages differ, so the test can tell which answered
    threshold = float(np.median(fast.max(axis=1)))  # about half the faces deferred
    assert train_cli(["export", str(runs / "fast"), "--out", str(out), "--fallback", str(exported / "2"),
                      "--defer-below", f"{threshold:.6f}"]) == 0  # 3, evaluated
    cascaded = _scores(exported / "3", images)
    deferred = fast.max(axis=1) < float(f"{threshold:.6f}")
    assert 0 < deferred.sum() < len(images)
    np.testing.assert_allclose(cascaded[deferred], slow[deferred], atol=1e-5)
    np.testing.assert_allclose(cascaded[~deferred], fast[~deferred], atol=1e-5)
    np.testing.assert_allclose(cascaded, np.where(deferred[:, None], slow, fast), atol=1e-5)
    # A batch with no face deferred, one with every face deferred, and an empty batch.
    sure = images[~deferred][:3]
    np.testing.assert_allclose(_scores(exported / "3", sure), fast[~deferred][:3], atol=1e-5)
    np.testing.assert_allclose(_scores(exported / "3", images[deferred]), slow[deferred], atol=1e-5)
    assert _scores(exported / "3", images[:0]).shape == (0, 7)

    card = json.loads((exported / "3" / "model_card.json").read_text())
    assert card["cascade"]["defer_below"] == pytest.approx(threshold, abs=1e-6)
    assert card["cascade"]["fallback"]["version"] == 2 and card["cascade"]["fallback"]["flip_tta"] is True
    assert card["parameters"] == 2 * json.loads((exported / "1" / "model_card.json").read_text())["parameters"]
    assert "accuracy" in card["validation_metrics"]
    with pytest.raises(ValueError, match="cascade"):
        rebuild_version(exported / "3")
    # Half a cascade, a threshold outside (0, 1], or a fallback with other labels: clear errors, exit code 2.
    assert train_cli(["export", str(runs / "fast"), "--out", str(out), "--fallback", str(exported / "2")]) == 2
    assert train_cli(["export", str(runs / "fast"), "--out", str(out), "--defer-below", "0.5"]) == 2
    assert train_cli(["export", str(runs / "fast"), "--out", str(out), "--fallback", str(exported / "2"),
                      "--defer-below", "1.5", "--no-evaluate"]) == 2
    assert sorted(p.name for p in exported.iterdir()) == ["1", "2", "3"]


def test_reexport_keeps_a_cascade_and_bfloat16_computes_close_to_float32(tmp_path: Path) -> None:
    _, runs, out = _train_runs(tmp_path, ("fast", "slow"))
    exported = out / "emotion"
    assert train_cli(["export", str(runs / "fast"), "--out", str(out), "--no-evaluate"]) == 0  # 1
    assert train_cli(["export", str(runs / "slow"), "--out", str(out), "--flip-tta", "--no-evaluate"]) == 0  # 2
    images = np.random.default_rng(2).integers(0, 256, (40, 48, 48, 1), dtype=np.uint8)
    fast = _scores(exported / "1", images)
    threshold = f"{float(np.median(fast.max(axis=1))):.6f}"
    assert train_cli(["export", str(runs / "fast"), "--out", str(out), "--fallback", str(exported / "2"),
                      "--defer-below", threshold, "--no-evaluate"]) == 0  # 3
    # Re-exported in float32 from the SavedModel alone: the same graph, threshold and card record.
    assert train_cli(["reexport", str(exported / "3"), "--out", str(out), "--version", "4", "--weights-dtype",
                      "float32", "--no-evaluate"]) == 0
    np.testing.assert_allclose(_scores(exported / "4", images), _scores(exported / "3", images), atol=1e-5)
    source, copy = (json.loads((exported / v / "model_card.json").read_text()) for v in ("3", "4"))
    assert copy["cascade"]["defer_below"] == source["cascade"]["defer_below"] and copy["compute_dtype"] == "float32"
    assert copy["exported_from"]["version"] == 3 and copy["training"] == source["training"]
    # In bfloat16: weights stored as bfloat16 in both stages (the float32 head as --weights-dtype), outputs close.
    assert train_cli(["reexport", str(exported / "3"), "--out", str(out), "--version", "5", "--compute-dtype",
                      "bfloat16", "--no-evaluate"]) == 0
    assert train_cli(["export", str(runs / "slow"), "--out", str(out), "--version", "6", "--flip-tta",
                      "--compute-dtype", "bfloat16", "--no-evaluate"]) == 0
    for version, reference, head in (("5", "3", tf.float16), ("6", "2", tf.float32)):
        card = json.loads((exported / version / "model_card.json").read_text())
        assert card["compute_dtype"] == "bfloat16" and card["batch_norm_folded"] is True
        module = tf.saved_model.load(str(exported / version))
        stages = [module.net] + ([module.fallback_net] if card.get("cascade") else [])
        for stage in stages:
            dtypes = {w.dtype for member in stage.trainable for w in member}
            assert dtypes == {tf.bfloat16, head}  # the body in bfloat16, the float32 head as --weights-dtype
        ours, theirs = _scores(exported / version, images), _scores(exported / reference, images)
        clear = np.abs(fast.max(axis=1) - float(threshold)) > 0.02  # no face near the threshold changes stage
        np.testing.assert_allclose(ours[clear], theirs[clear], atol=3e-2)
        assert ours.dtype == np.float32 and np.allclose(ours.sum(axis=1), 1.0, atol=1e-3)
    assert train_cli(["reexport", str(tmp_path), "--out", str(out), "--no-evaluate"]) == 2  # not a version


REPO = Path(__file__).resolve().parents[2]
SHARED_FER = REPO.parent / "shared" / "data" / "fer2013.csv.gz"


def _committed_cascade() -> Path | None:
    """The newest committed emotion version (of any rung of the ladder) that is a cascade."""
    from emotion_ai import spec
    from emotion_ai.versions import version_dirs

    folders = [f for m in spec.SERVED_MODELS for f in version_dirs(REPO / "models_export" / m)]
    for _, folder in sorted(folders, reverse=True):
        card = folder / "model_card.json"
        if card.is_file() and json.loads(card.read_text()).get("cascade"):
            return folder
    return None


@pytest.mark.skipif(_committed_cascade() is None or not SHARED_FER.is_file(),
                    reason="no committed emotion version is a cascade, or no FER-2013 copy beside the repo")
def test_committed_cascade_answers_unsure_faces_exactly_as_its_fallback(tmp_path: Path) -> None:
    from emotion_ai_training.data import load_task
    from emotion_ai_training.rebuild import rebuild_cascade

    version = _committed_cascade()
    card = json.loads((version / "model_card.json").read_text())
    bf16 = card.get("compute_dtype") == "bfloat16"
    _, fallback, _ = rebuild_cascade(version, card.get("compute_dtype", "float32"))
    faces = load_task("emotion", str(SHARED_FER), cache_dir=str(tmp_path)).subset("validation")[0][:96, ..., None]
    ours, theirs = _scores(version, faces), _mean_over_views(fallback, faces)
    # The fallback's networks rebuilt from the cascade, run outside its graph: rounding only (bfloat16's is
    # coarser, and its sums depend on the batch).
    same = np.abs(ours - theirs).max(axis=1) < (3e-2 if bf16 else 1e-3)
    # Every face either got the fallback's answer or a first-stage answer at least as sure as the threshold.
    assert np.all(same | (ours.max(axis=1) >= card["cascade"]["defer_below"]))
    assert 0 < same.sum() < len(faces)  # both stages answered some of these faces
    # Calls in which no face is deferred (the second stage must be skipped, not fed an empty batch).
    sure = faces[~same]
    for batch in (sure[:1], sure[:8]):
        assert np.all(_scores(version, batch).max(axis=1) >= card["cascade"]["defer_below"])


def test_flip_below_mirrors_only_the_unsure_faces_and_carries_over_a_reexport(tmp_path: Path) -> None:
    _, runs, out = _train_runs(tmp_path, ("net",))
    exported = out / "emotion"
    assert train_cli(["export", str(runs / "net"), "--out", str(out), "--no-evaluate"]) == 0  # 1: one view
    assert train_cli(["export", str(runs / "net"), "--out", str(out), "--flip-tta", "--no-evaluate"]) == 0  # 2
    images = np.random.default_rng(2).integers(0, 256, (40, 48, 48, 1), dtype=np.uint8)
    plain, mirrored = _scores(exported / "1", images), _scores(exported / "2", images)
    assert np.abs(plain - mirrored).max() > 1e-4  # the mirror changes the answers, so the test can tell
    threshold = float(np.median(plain.max(axis=1)))  # about half the faces unsure
    assert train_cli(["export", str(runs / "net"), "--out", str(out), "--flip-tta", "--flip-below",
                      f"{threshold:.6f}", "--no-evaluate"]) == 0  # 3
    unsure = plain.max(axis=1) < float(f"{threshold:.6f}")
    assert 0 < unsure.sum() < len(images)
    np.testing.assert_allclose(_scores(exported / "3", images), np.where(unsure[:, None], mirrored, plain), atol=1e-5)
    # Every face sure, every face unsure, and an empty batch.
    np.testing.assert_allclose(_scores(exported / "3", images[~unsure]), plain[~unsure], atol=1e-5)
    np.testing.assert_allclose(_scores(exported / "3", images[unsure]), mirrored[unsure], atol=1e-5)
    assert _scores(exported / "3", images[:0]).shape == (0, 7)
    card = json.loads((exported / "3" / "model_card.json").read_text())
    assert card["flip_below"] == pytest.approx(threshold, abs=1e-6)
    # A re-export keeps the threshold (here into float16 storage): the same faces are mirrored.
    assert train_cli(["reexport", str(exported / "3"), "--out", str(out), "--no-evaluate"]) == 0  # 4
    card = json.loads((exported / "4" / "model_card.json").read_text())
    assert card["flip_below"] == pytest.approx(threshold, abs=1e-6)
    np.testing.assert_allclose(_scores(exported / "4", images), _scores(exported / "3", images), atol=2e-3)
    # Without a mirror view, or out of (0, 1]: a clear error, exit code 2, nothing exported.
    assert train_cli(["export", str(runs / "net"), "--out", str(out), "--flip-below", "0.5", "--no-evaluate"]) == 2
    assert train_cli(["export", str(runs / "net"), "--out", str(out), "--flip-tta", "--flip-below", "1.5",
                      "--no-evaluate"]) == 2
    assert sorted(p.name for p in exported.iterdir()) == ["1", "2", "3", "4"]
