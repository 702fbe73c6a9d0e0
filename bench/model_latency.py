"""In-process latency of exported SavedModels per batch size (no server, no client).

    .venv/bin/python bench/model_latency.py models_export/emotion/4 models_export/emotion/5
    .venv/bin/python bench/model_latency.py models_export/keypoints/3 --batch-sizes 1 8 64

Calls each version's `serving_default` signature on random uint8 images of its input size (5 warm-up
calls, then --repeats timed calls) and reports p50/p95 per call and images/s. Useful to compare the
cost of test-time views or ensembles between versions. Writes bench/results/model_latency.json/.md.
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


def time_calls(signature, images: np.ndarray, repeats: int) -> list[float]:
    """Seconds per call of the signature on `images` after 5 warm-up calls."""
    import tensorflow as tf

    inputs = {spec.INPUT_KEY: tf.constant(images)}
    for _ in range(5):
        signature(**inputs)
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        signature(**inputs)
        seconds.append(time.perf_counter() - start)
    return seconds


def markdown(doc: dict) -> str:
    lines = [
        "# In-process model latency (SavedModel signature, no server)",
        "",
        f"Command: `{doc['command']}`; {doc['machine']}",
        "",
        "| model | batch | p50 ms | p95 ms | images/s |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in doc["results"]:
        lines.append(f"| {r['model']} | {r['batch']} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} "
                     f"| {r['images_per_second']:.0f} |")
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
    results = []
    for folder in args.versions:
        signature = tf.saved_model.load(str(folder)).signatures[spec.SIGNATURE_NAME]
        size = signature.structured_input_signature[1][spec.INPUT_KEY].shape[1]
        name = display_path(folder, REPO)
        for batch in args.batch_sizes:
            images = rng.integers(0, 256, (batch, size, size, 1), dtype=np.uint8)
            seconds = np.array(time_calls(signature, images, args.repeats))
            results.append({"model": name, "batch": batch, "p50_ms": float(np.median(seconds) * 1e3),
                            "p95_ms": float(np.percentile(seconds, 95) * 1e3),
                            "images_per_second": float(batch / np.median(seconds))})
    doc = {
        "command": "python bench/model_latency.py " + " ".join(sys.argv[1:]),
        "machine": machine_info()["summary"],
        "results": results,
    }
    write_results(args.out, "model_latency", doc, markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
