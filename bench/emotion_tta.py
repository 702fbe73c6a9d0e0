"""Which test-time views help the emotion model: PublicTest accuracy per view set.

    .venv/bin/python bench/emotion_tta.py runs/emotion_r2/best.keras [more checkpoints ...]

Several checkpoints are averaged as an ensemble, as `emotion-ai-train export RUN RUN` does. The views
are built by `tta_views`, the function the exported graph uses (`export --flip-tta --shift-tta N`):
the image, copies shifted by ±N pixels along each axis, and the mirror image of each. The shift is
chosen on PublicTest, the split the figures are reported on, so the chosen figure is slightly
optimistic. Writes bench/results/emotion_tta.json and bench/results/emotion_tta.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from bench_common import write_results
from machine import machine_info

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent


def view_probabilities(model, images: np.ndarray, shift: int) -> np.ndarray:
    """Class probabilities [10, N, K] of the views of `images` [N, 48, 48]: the image, its 4 shifts by
    `shift` pixels, then the mirror image of each (the order of `tta_views`)."""
    from emotion_ai_training.export import tta_views

    x = images[..., None].astype(np.float32)
    return np.stack([model.predict(np.asarray(v), batch_size=512, verbose=0) for v in tta_views(x, True, shift)])


def markdown(doc: dict) -> str:
    lines = [
        "# Emotion test-time views (FER-2013 PublicTest)",
        "",
        f"Command: `{doc['command']}`; {doc['machine']}",
        "",
        f"Checkpoints: {', '.join(f'`{c}`' for c in doc['checkpoints'])} ({doc['images']} images)",
        "",
        "| views | export flags | count | accuracy |",
        "|---|---|---:|---:|",
    ]
    for r in doc["results"]:
        flags = f"`{r['flags']}`" if r["flags"] else "(none)"
        lines.append(f"| {r['views']} | {flags} | {r['count']} | {r['accuracy']:.2%} |")
    return "\n".join([*lines, ""])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoints", nargs="+", type=Path, help="Keras checkpoints (several = ensemble)")
    p.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "fer2013.csv.gz"))
    p.add_argument("--cache-dir", default=str(REPO / "cache"))
    p.add_argument("--shifts", type=int, nargs="+", default=[2, 3, 4])
    p.add_argument("--out", type=Path, default=BENCH / "results")
    args = p.parse_args()

    import emotion_ai_training.train  # noqa: F401  (registers the custom layers)
    import keras
    from emotion_ai_training.data import load_emotion

    keras.mixed_precision.set_global_policy("float32")
    images, labels = load_emotion(args.data, cache_dir=args.cache_dir).subset("validation")
    models = [keras.models.load_model(c, compile=False) for c in args.checkpoints]
    views = {s: np.mean([view_probabilities(m, images, s) for m in models], axis=0) for s in args.shifts}

    def accuracy(shift: int, chosen: list[int]) -> float:
        return float((views[shift][chosen].mean(axis=0).argmax(1) == labels).mean())

    first = args.shifts[0]
    rows = [("image", "", 1, accuracy(first, [0])), ("image + mirror", "--flip-tta", 2, accuracy(first, [0, 5]))]
    for s in args.shifts:
        rows.append((f"image + 4 shifts of {s} px", f"--shift-tta {s}", 5, accuracy(s, list(range(5)))))
        rows.append(("the same + mirrors", f"--flip-tta --shift-tta {s}", 10, accuracy(s, list(range(10)))))
    doc = {
        "command": "python bench/emotion_tta.py " + " ".join(sys.argv[1:]),
        "machine": machine_info()["summary"],
        "checkpoints": [str(c) for c in args.checkpoints],
        "images": len(labels),
        "results": [{"views": v, "flags": f, "count": n, "accuracy": a} for v, f, n, a in rows],
    }
    write_results(args.out, "emotion_tta", doc, markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
