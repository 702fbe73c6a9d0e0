"""Is an ensemble teacher stronger than its members? FER-2013 PublicTest figures of each and of their mean.

    .venv/bin/python bench/teacher_ensemble.py models_export/emotion_accurate/8 runs/emotion_l1/averaged.keras

Each teacher is what `emotion-ai-train train --teacher` takes (an exported SavedModel, views and all, or
a `.keras` checkpoint), run by the same code (`emotion_ai_training.distill.teacher_output`, outputs cached
per teacher under cache/teacher/). Reported: every member alone, the mean of all, and, with three or
more, the first with each other one. Writes bench/results/teacher_ensemble.json and .md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from bench_common import display_path, write_results
from emotion_ai.spec import EMOTION_LABELS
from emotion_ai_training.data import load_task
from emotion_ai_training.distill import teacher_output
from emotion_ai_training.evaluate import emotion_report
from machine import machine_info

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
METRICS = ("accuracy", "macro_f1", "accuracy_5class", "disgust_recall")


def combinations(n: int) -> list[tuple[int, ...]]:
    """Which members are averaged: each alone, all together, and (n >= 3) the first with each other."""
    combos: list[tuple[int, ...]] = [(i,) for i in range(n)]
    if n >= 2:
        combos.append(tuple(range(n)))
    if n >= 3:
        combos += [(0, i) for i in range(1, n)]
    return combos


def markdown(doc: dict) -> str:
    lines = ["# Ensemble teachers on FER-2013 PublicTest", "", f"Command: `{doc['command']}`; {doc['machine']}",
             "", f"Images: {doc['images']}. Members: " + "; ".join(f"{k + 1} = `{t}`"
                                                            for k, t in enumerate(doc["teachers"])), "",
             "| members averaged | accuracy | macro-F1 | 5-class accuracy | disgust recall |",
             "|---|---:|---:|---:|---:|"]
    for r in doc["results"]:
        lines.append(f"| {' + '.join(str(i + 1) for i in r['members'])} | "
                     + " | ".join(f"{r[m]:.4f}" for m in METRICS) + " |")
    return "\n".join([*lines, ""])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("teachers", nargs="+", type=Path, help="SavedModel version folders or .keras checkpoints")
    p.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "fer2013.csv.gz")
    p.add_argument("--cache-dir", default=str(REPO / "cache"))
    p.add_argument("--out", type=Path, default=BENCH / "results")
    args = p.parse_args()
    data = load_task("emotion", str(args.data), cache_dir=args.cache_dir)
    images, labels = data.subset("validation")
    outputs = [teacher_output(t, "emotion", images, args.cache_dir) for t in args.teachers]
    results = []
    for members in combinations(len(outputs)):
        scores = np.mean([outputs[i] for i in members], axis=0)
        report = emotion_report(scores, labels, data.label_names, EMOTION_LABELS)
        results.append({"members": list(members), **{m: report[m] for m in METRICS}})
    doc = {"command": "python bench/teacher_ensemble.py " + " ".join(display_path(t, REPO) for t in args.teachers),
           "machine": machine_info()["summary"], "images": len(images),
           "teachers": [display_path(t, REPO) for t in args.teachers], "results": results}
    write_results(args.out, "teacher_ensemble", doc, markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
