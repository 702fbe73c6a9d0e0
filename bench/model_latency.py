"""In-process latency of exported SavedModels per batch size (no server, no client).

    .venv/bin/python bench/model_latency.py models_export/emotion/4 models_export/emotion/5
    .venv/bin/python bench/model_latency.py models_export/keypoints/3 --batch-sizes 1 8 64

Calls each version's `serving_default` signature on random uint8 images of its input size (5 warm-up
calls, then --repeats timed calls, the versions taking turns so that a change in machine load
touches all of them alike) and reports p50/p95 per call, p50 per face and images/s, and each
version's time per face relative to the first listed version of the same model at the same batch
size. Writes bench/results/model_latency.json/.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from bench_common import display_path, write_results
from emotion_ai import spec
from machine import machine_info

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent


def time_calls(signatures: list, images: list[np.ndarray], repeats: int) -> list[list[float]]:
    """Seconds per call of each signature on its images, after 5 warm-up calls each; round-robin."""
    import tensorflow as tf

    inputs = [{spec.INPUT_KEY: tf.constant(x)} for x in images]
    for signature, x in zip(signatures, inputs, strict=True):
        for _ in range(5):
            signature(**x)
    seconds: list[list[float]] = [[] for _ in signatures]
    for _ in range(repeats):
        for i, (signature, x) in enumerate(zip(signatures, inputs, strict=True)):
            start = time.perf_counter()
            signature(**x)
            seconds[i].append(time.perf_counter() - start)
    return seconds


def markdown(doc: dict) -> str:
    lines = [
        "# In-process model latency (SavedModel signature, no server)",
        "",
        f"Command: `{doc['command']}`; {doc['machine']}",
        "",
        "| model | batch | p50 ms | p95 ms | ms per face | images/s | per face vs first of its model |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in doc["results"]:
        lines.append(f"| {r['model']} | {r['batch']} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} "
                     f"| {r['ms_per_face']:.2f} | {r['images_per_second']:.0f} | {r['relative_to_first']:.3f} "
                     f"(1/{1 / r['relative_to_first']:.1f}) |")
    return "\n".join([*lines, ""])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("versions", nargs="+", type=Path, help="version folders, e.g. models_export/emotion/5")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--out", type=Path, default=BENCH / "results")
    args = p.parse_args()

    import tensorflow as tf

    rng = np.random.default_rng(0)
    signatures = [tf.saved_model.load(str(folder)).signatures[spec.SIGNATURE_NAME] for folder in args.versions]
    sizes = [s.structured_input_signature[1][spec.INPUT_KEY].shape[1] for s in signatures]
    names = [display_path(folder, REPO) for folder in args.versions]
    results = []
    for batch in args.batch_sizes:
        images = [rng.integers(0, 256, (batch, size, size, 1), dtype=np.uint8) for size in sizes]
        first: dict[str, float] = {}  # model name → ms per face of its first listed version
        for name, folder, seconds in zip(names, args.versions, time_calls(signatures, images, args.repeats),
                                         strict=True):
            p50 = float(np.median(seconds))
            per_face = p50 * 1e3 / batch
            model = folder.resolve().parent.name
            first.setdefault(model, per_face)
            results.append({"model": name, "batch": batch, "p50_ms": p50 * 1e3,
                            "p95_ms": float(np.percentile(seconds, 95) * 1e3), "ms_per_face": per_face,
                            "images_per_second": batch / p50, "relative_to_first": per_face / first[model]})
    results.sort(key=lambda r: (names.index(r["model"]), r["batch"]))
    doc = {
        "command": "python bench/model_latency.py " + " ".join(sys.argv[1:]),
        "machine": machine_info()["summary"],
        "results": results,
    }
    write_results(args.out, "model_latency", doc, markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
