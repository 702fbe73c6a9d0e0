"""Reproduce the README accuracy table from the committed models and the shared data.

    .venv/bin/python bench/accuracy.py                     # models_export/, ../shared/data
    .venv/bin/python bench/accuracy.py --models DIR --data-dir ../shared/data

Runs the training package's evaluator (the same code as `emotion-ai-train evaluate`) on the
newest version of each model: FER-2013 PublicTest for emotion, the by-subject validation split for
keypoints. Writes bench/results/accuracy.json and bench/results/accuracy.md.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from bench_common import display_path, latest_version, write_results
from emotion_ai import spec
from emotion_ai_training.evaluate import evaluate
from machine import machine_info

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent


def markdown(doc: dict) -> str:
    em, kp = doc["emotion"], doc["keypoints"]
    pct = "{:.1%}".format
    lines = [
        "# Accuracy (validation splits)",
        "",
        f"Command: `{doc['command']}`; {doc['machine']}",
        "",
        "| model | split | images | metric | value |",
        "|---|---|---:|---|---:|",
        f"| {em['model']} | {em['split']} | {em['images']} | accuracy (7 classes) "
        f"| {pct(em['accuracy'])} |",
        f"| | | | macro-F1 | {em['macro_f1']:.3f} |",
        f"| | | | accuracy (5-class subset) | {pct(em['accuracy_5class'])} |",
        f"| | | | disgust recall | {em['disgust_recall']:.3f} |",
        f"| {kp['model']} | {kp['split']} | {kp['images']} | RMSE (px of 96) | {kp['rmse']:.3f} |",
        f"| | | | NME (inter-ocular) | {kp['nme_interocular']:.4f} |",
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", type=Path, default=REPO / "models_export")
    p.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "data")
    p.add_argument("--cache-dir", default=str(REPO / "cache"))
    p.add_argument("--seed", type=int, default=0, help="keypoints split seed used in training")
    p.add_argument("--out", type=Path, default=BENCH / "results")
    args = p.parse_args()

    em_dir = latest_version(args.models / spec.EMOTION_MODEL)
    kp_dir = latest_version(args.models / spec.KEYPOINTS_MODEL)
    if em_dir is None or kp_dir is None:
        raise FileNotFoundError(f"{args.models}: needs a version folder for both models")
    with tempfile.TemporaryDirectory() as tmp:
        em = evaluate(spec.EMOTION_MODEL, em_dir, str(args.data_dir / "fer2013.csv.gz"), Path(tmp) / "em",
                      args.cache_dir)
        kp = evaluate(spec.KEYPOINTS_MODEL, kp_dir, str(args.data_dir / "facial_keypoints.csv.gz"),
                      Path(tmp) / "kp", args.cache_dir, args.seed)
    doc = {
        "command": "python bench/accuracy.py " + " ".join(sys.argv[1:]),
        "machine": machine_info()["summary"],
        "emotion": em,
        "keypoints": kp,
    }
    for part, path in (("emotion", em_dir), ("keypoints", kp_dir)):
        doc[part]["model"] = display_path(path, REPO)
    write_results(args.out, "accuracy", doc, markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
