"""WiSE-FT interpolation: the weights on the line between a run's start and its checkpoint, and the CLI report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from .training_datagen import fer_rows, ferplus_votes, write_fer_csv, write_ferplus_csv

pytest.importorskip("tensorflow")
import keras
from emotion_ai_training.cli import main as train_cli
from emotion_ai_training.interpolate import checkpoint_name, interpolate_weights


def test_interpolated_weights_lie_on_the_line_and_integers_keep_the_start() -> None:
    start = [np.array([0.0, 2.0], np.float32), np.array([7, 8], np.int64)]
    end = [np.array([4.0, -2.0], np.float32), np.array([1, 2], np.int64)]
    mid = interpolate_weights(start, end, 0.25)
    np.testing.assert_allclose(mid[0], [1.0, 1.0])
    assert mid[0].dtype == np.float32
    np.testing.assert_array_equal(mid[1], [7, 8])
    np.testing.assert_array_equal(interpolate_weights(start, end, 1.0)[0], end[0])
    with pytest.raises(ValueError, match="do not match"):
        interpolate_weights(start, [end[0], np.zeros(3)], 0.5)


def test_interpolate_cli_writes_a_checkpoint_and_both_metrics_per_alpha(tmp_path: Path) -> None:
    rows = fer_rows(48)
    fer = write_fer_csv(tmp_path / "fer2013.csv", rows)
    votes = write_ferplus_csv(tmp_path / "fer2013new.csv", [use for _, _, use in rows], ferplus_votes(48))
    runs, out, cache = tmp_path / "runs", tmp_path / "models_export", str(tmp_path / "cache")
    common = ["--data", str(fer), "--runs", str(runs), "--tiny", "--precision", "float32", "--batch-size", "8",
              "--cache-dir", cache]
    assert train_cli(["train", "emotion", "--name", "base", "--epochs", "2", *common]) == 0
    assert train_cli(["export", str(runs / "base"), "--out", str(out), "--no-evaluate"]) == 0
    # a run without --init-from has no start to interpolate from: one line, exit 2
    assert train_cli(["interpolate", str(runs / "base"), "--alpha", "0.5"]) == 2
    assert train_cli(["train", "emotion", "--name", "ft", "--epochs", "1", "--init-from", str(out / "emotion" / "1"),
                      "--labels", "ferplus-votes", "--votes", str(votes), *common]) == 0
    run = runs / "ft"
    assert train_cli(["interpolate", str(run), "--alpha", "0", "0.5", "1"]) == 0
    report = json.loads((run / "interpolated.json").read_text())
    assert [r["alpha"] for r in report["alphas"]] == [0.0, 0.5, 1.0] and report["votes"] == str(votes)
    for r in report["alphas"]:
        for view in ("one_view", "mirror"):
            assert 0.0 <= r[view]["fer2013_accuracy"] <= 1.0 and 0.0 <= r[view]["ferplus_agreement"] <= 1.0

    def kernel(path: Path) -> np.ndarray:
        return keras.models.load_model(path, compile=False).get_layer("stage1_block1_conv1").get_weights()[0]

    start, end = kernel(run / checkpoint_name(0.0)), kernel(run / "best.keras")
    assert not np.allclose(start, end)
    np.testing.assert_allclose(kernel(run / checkpoint_name(1.0)), end, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(kernel(run / checkpoint_name(0.5)), (start + end) / 2, rtol=1e-5, atol=1e-6)
    # a later run adds α values to the report instead of replacing it
    assert train_cli(["interpolate", str(run), "--alpha", "0.25", "0.5"]) == 0
    report = json.loads((run / "interpolated.json").read_text())
    assert [r["alpha"] for r in report["alphas"]] == [0.0, 0.25, 0.5, 1.0]
    # an interpolated checkpoint exports like any other, its card naming start, end and α
    assert train_cli(["export", str(run), "--out", str(out), "--checkpoint", checkpoint_name(0.5),
                      "--no-evaluate"]) == 0
    assert (out / "emotion" / "2" / "saved_model.pb").is_file()
    member = json.loads((out / "emotion" / "2" / "model_card.json").read_text())["training"]
    assert member["checkpoint"] == checkpoint_name(0.5) and member["checkpoint_epoch"] is None
    assert member["interpolated"] == {"start": str(out / "emotion" / "1"), "end": "best.keras", "alpha": 0.5}
    assert train_cli(["interpolate", str(run), "--alpha", "1.5"]) == 2


def test_a_run_started_from_one_member_of_an_ensemble_is_refused(tmp_path: Path) -> None:
    """Runs from before --init-member left may have started from member K of an ensemble version; the start
    can no longer be rebuilt, so interpolation refuses them (their code is at the named commit)."""
    from emotion_ai_training.interpolate import interpolate_run

    run = tmp_path / "run"
    run.mkdir()
    config = {"task": "emotion", "data": "fer2013.csv", "run_dir": str(run), "init_from": "models_export/emotion/6"}
    (run / "config.json").write_text(json.dumps(config | {"init_member": 1}))
    with pytest.raises(ValueError, match=r"member 1 .*ecae1ad"):
        interpolate_run(run, [0.5])
