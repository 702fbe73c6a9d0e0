"""What folding batch norm into the convolutions at export buys: time per face, folded vs not, one run.

    .venv/bin/python bench/batchnorm_folding.py
    .venv/bin/python bench/batchnorm_folding.py --archs emotion_large keypoints_small --batch-sizes 1 8

Builds each named architecture (`emotion-ai-train model-info`), gives every batch norm non-trivial
statistics (seeded; timing does not depend on the weights), exports it twice with float16 storage as
`emotion-ai-train export` does — batch norms folded (the default) and not — and times both
SavedModels taking turns call by call (bench/model_latency.py's `time_calls`). Also reports the largest
difference between the two graphs' outputs on the same images. Writes bench/results/batchnorm_folding.*.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
from bench_common import write_results
from emotion_ai import spec
from machine import machine_info
from model_latency import time_calls

BENCH = Path(__file__).resolve().parent
DEFAULT_ARCHS = ("emotion_large", "emotion_small", "keypoints_small", "keypoints")


def _randomise_batch_norms(model, seed: int) -> None:
    import keras

    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, variance = layer.get_weights()
            layer.set_weights([rng.uniform(0.2, 0.6, gamma.shape), rng.normal(0, 0.1, beta.shape),
                               rng.normal(0, 0.2, mean.shape), rng.uniform(0.5, 2.0, variance.shape)])


def _export_both(arch: str, folder: Path) -> tuple[Path, Path]:
    """(not folded, folded) SavedModels of one architecture with the same weights."""
    import keras
    from emotion_ai_training.export import export_model
    from emotion_ai_training.models import ARCHITECTURES, build_emotion_model, build_keypoints_model

    keras.mixed_precision.set_global_policy("float32")
    task, cfg = ARCHITECTURES[arch]
    keras.utils.set_random_seed(0)
    model = build_emotion_model(len(spec.EMOTION_LABELS), cfg) if task == "emotion" else build_keypoints_model(cfg)
    _randomise_batch_norms(model, seed=0)
    labels = spec.EMOTION_LABELS if task == "emotion" else None
    return tuple(export_model(model, task, folder / arch / name, version=1, labels=labels,  # type: ignore[return-value]
                              weights_dtype="float16", fold_batch_norms=fold)
                 for name, fold in (("plain", False), ("folded", True)))


def markdown(doc: dict) -> str:
    lines = [
        "# Batch norm folded into the convolutions at export (float16 storage, in-process)",
        "",
        f"Command: `{doc['command']}`; {doc['machine']}",
        "",
        "| architecture | batch | not folded, ms per face | folded, ms per face | folded / not "
        "| largest output difference |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in doc["results"]:
        lines.append(f"| {r['arch']} | {r['batch']} | {r['plain_ms_per_face']:.2f} | {r['folded_ms_per_face']:.2f} "
                     f"| {r['ratio']:.3f} | {r['max_abs_difference']:.1e} |")
    return "\n".join([*lines, ""])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--archs", nargs="+", default=list(DEFAULT_ARCHS))
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    p.add_argument("--repeats", type=int, default=60)
    p.add_argument("--out", type=Path, default=BENCH / "results")
    args = p.parse_args()

    import tensorflow as tf

    rng = np.random.default_rng(1)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for arch in args.archs:
            plain, folded = (tf.saved_model.load(str(f)).signatures[spec.SIGNATURE_NAME]
                             for f in _export_both(arch, Path(tmp)))
            size = plain.structured_input_signature[1][spec.INPUT_KEY].shape[1]
            key = (spec.SCORES_OUTPUT_KEY if spec.SCORES_OUTPUT_KEY in plain.structured_outputs
                   else spec.KEYPOINTS_OUTPUT_KEY)
            for batch in args.batch_sizes:
                images = rng.integers(0, 256, (batch, size, size, 1), dtype=np.uint8)
                x = tf.constant(images)
                difference = float(np.abs(plain(**{spec.INPUT_KEY: x})[key].numpy()
                                          - folded(**{spec.INPUT_KEY: x})[key].numpy()).max())
                seconds = time_calls([plain, folded], [images, images], args.repeats)
                plain_ms, folded_ms = (float(np.median(s)) * 1e3 / batch for s in seconds)
                results.append({"arch": arch, "batch": batch, "plain_ms_per_face": plain_ms,
                                "folded_ms_per_face": folded_ms, "ratio": folded_ms / plain_ms,
                                "max_abs_difference": difference})
                print(f"{arch} batch {batch}: {plain_ms:.2f} → {folded_ms:.2f} ms per face "
                      f"(×{folded_ms / plain_ms:.3f}), outputs differ by ≤ {difference:.1e}", flush=True)
    doc = {"command": "python bench/batchnorm_folding.py " + " ".join(sys.argv[1:]),
           "machine": machine_info()["summary"], "results": results}
    write_results(args.out, "batchnorm_folding", doc, markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
