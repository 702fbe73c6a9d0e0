"""Reproduce the README accuracy table from the committed models and the shared data.

    .venv/bin/python bench/accuracy.py                     # newest version of each model in models_export/
    .venv/bin/python bench/accuracy.py models_export/emotion/9 models_export/emotion_accurate/8   # side by side
    .venv/bin/python bench/accuracy.py --models DIR --data-dir ../shared/data

Runs the training package's evaluator (the same code as `emotion-ai-train evaluate`) on each
version folder given (default: the newest version of each model): FER-2013 PublicTest for emotion,
the by-subject validation split for keypoints. Writes bench/results/accuracy.json and .md.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from bench_common import display_path, write_results
from emotion_ai import spec
from emotion_ai.versions import has_saved_model, latest_version
from emotion_ai_training.evaluate import evaluate
from machine import machine_info

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
DATA_FILES = {spec.EMOTION_MODEL: "fer2013.csv.gz", spec.KEYPOINTS_MODEL: "facial_keypoints.csv.gz"}


def _rows(r: dict) -> list[str]:
    head = f"| {r['model']} | {r['split']} | {r['images']} |"
    if r["kind"] == spec.EMOTION_MODEL:
        return [f"{head} accuracy (7 classes) | {r['accuracy']:.1%} |",
                f"| | | | macro-F1 | {r['macro_f1']:.3f} |",
                f"| | | | accuracy (5-class subset) | {r['accuracy_5class']:.1%} |",
                f"| | | | disgust recall | {r['disgust_recall']:.3f} |"]
    return [f"{head} RMSE (px of 96) | {r['rmse']:.3f} |",
            f"| | | | NME (inter-ocular) | {r['nme_interocular']:.4f} |"]


def markdown(doc: dict) -> str:
    lines = ["# Accuracy (validation splits)", "", f"Command: `{doc['command']}`; {doc['machine']}", "",
             "| model | split | images | metric | value |", "|---|---|---:|---|---:|"]
    for r in doc["results"]:
        lines += _rows(r)
    return "\n".join([*lines, ""])


def _kind(version_dir: Path) -> str:
    card = version_dir / "model_card.json"
    return json.loads(card.read_text())["model"] if card.is_file() else version_dir.resolve().parent.name


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("versions", nargs="*", type=Path, help="version folders (default: newest of each model)")
    p.add_argument("--models", type=Path, default=REPO / "models_export")
    p.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "data")
    p.add_argument("--cache-dir", default=str(REPO / "cache"))
    p.add_argument("--seed", type=int, default=0, help="keypoints split seed used in training")
    p.add_argument("--out", type=Path, default=BENCH / "results")
    args = p.parse_args()

    versions = args.versions or [latest_version(args.models / m) for m in (spec.EMOTION_MODEL, spec.KEYPOINTS_MODEL)]
    if any(v is None or not has_saved_model(v) for v in versions):
        raise FileNotFoundError(f"need SavedModel version folders, got {versions} (models root {args.models})")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, folder in enumerate(versions):
            kind = _kind(folder)
            metrics = evaluate(kind, folder, str(args.data_dir / DATA_FILES[kind]), Path(tmp) / str(i),
                               args.cache_dir, args.seed)
            results.append(metrics | {"kind": kind, "model": display_path(folder, REPO)})
    doc = {"command": "python bench/accuracy.py " + " ".join(sys.argv[1:]), "machine": machine_info()["summary"],
           "results": results}
    write_results(args.out, "accuracy", doc, markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
