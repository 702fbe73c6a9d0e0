"""int8 versions (`emotion-ai-train quantize`): their signature, card and answers against the float version,
and what quantize and reexport refuse."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from emotion_ai.spec import ONEDNN_ENV
from emotion_ai_training.cli import main as train_cli

from .training_datagen import fer_rows, write_fer_csv

pytest.importorskip("neural_compressor")
pytestmark = pytest.mark.slow


def _in_onednn_process(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """Run Python with oneDNN on: the suite turns it off for itself (conftest), the int8 kernels need it."""
    return subprocess.run([sys.executable, *args], env=dict(os.environ) | ONEDNN_ENV, cwd=cwd, capture_output=True,
                          text=True, timeout=600, check=False)


COMPARE = textwrap.dedent("""
    import json, sys
    import numpy as np, tensorflow as tf
    images = np.random.default_rng(0).integers(0, 256, (16, 48, 48, 1), dtype=np.uint8)
    out = {}
    for folder in sys.argv[1:]:
        answer = tf.saved_model.load(folder).signatures["serving_default"](image=tf.constant(images))
        out[folder] = {"scores": answer["scores"].numpy().tolist(),
                       "classes": answer["classes"].numpy().astype(str).tolist()}
    print(json.dumps(out))
""")


def test_quantized_version_answers_like_its_source_under_the_same_names(tmp_path: Path) -> None:
    data = write_fer_csv(tmp_path / "fer2013.csv", fer_rows(96))
    runs, out = tmp_path / "runs", tmp_path / "models_export"
    assert train_cli(["train", "emotion", "--data", str(data), "--runs", str(runs), "--name", "net", "--epochs", "1",
                      "--tiny", "--precision", "float32", "--batch-size", "8",
                      "--cache-dir", str(tmp_path / "cache")]) == 0
    assert train_cli(["export", str(runs / "net"), "--out", str(out), "--flip-tta", "--no-evaluate"]) == 0  # 1
    assert train_cli(["export", str(runs / "net"), "--out", str(out), "--flip-tta", "--flip-below", "0.5",
                      "--no-evaluate"]) == 0  # 2: a branch
    exported = out / "emotion"

    quantize = _in_onednn_process(["-m", "emotion_ai_training.cli", "quantize", str(exported / "1"), "--out", str(out),
                                   "--samples", "24", "--eval-dir", str(tmp_path / "eval")], tmp_path)
    assert quantize.returncode == 0, quantize.stderr[-3000:]
    assert quantize.stdout.strip() == str(exported / "3")
    assert not (tmp_path / "nc_workspace").exists()  # the quantizer's scratch stays in a temporary folder

    card = json.loads((exported / "3" / "model_card.json").read_text())
    source = json.loads((exported / "1" / "model_card.json").read_text())
    assert card["compute_dtype"] == card["weights_dtype"] == "int8" and card["version"] == 3
    assert card["quantization"]["calibration"]["images"] == 24
    assert card["exported_from"]["version"] == 1 and card["labels"] == source["labels"]
    assert 0.0 <= card["validation_metrics"]["accuracy"] <= 1.0 and card["validation_metrics"]["images"] == 32
    assert (exported / "3" / "assets.extra" / "tf_serving_warmup_requests").stat().st_size > 0
    assert not (exported / "3" / "variables").exists()  # no weights outside the graph, no folder to wait for

    compare = _in_onednn_process(["-c", COMPARE, str(exported / "1"), str(exported / "3")], tmp_path)
    assert compare.returncode == 0, compare.stderr[-3000:]
    answers = json.loads(compare.stdout.strip().splitlines()[-1])
    plain, int8 = answers[str(exported / "1")], answers[str(exported / "3")]
    assert int8["classes"] == plain["classes"]  # the same output names, the labels in the same order
    scores, reference = np.array(int8["scores"]), np.array(plain["scores"])
    assert np.allclose(scores.sum(axis=1), 1.0, atol=1e-4)
    assert np.abs(scores - reference).max() < 0.05  # int8 rounding, not another model

    # Refused before any work: a graph with a branch, an int8 version, and a reexport of an int8 version.
    assert train_cli(["quantize", str(exported / "2"), "--out", str(out), "--no-evaluate"]) == 2
    assert train_cli(["quantize", str(exported / "3"), "--out", str(out), "--no-evaluate"]) == 2
    assert train_cli(["reexport", str(exported / "3"), "--out", str(out), "--no-evaluate"]) == 2
    assert sorted(p.name for p in exported.iterdir()) == ["1", "2", "3"]
