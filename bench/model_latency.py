"""In-process latency of exported SavedModels per batch size (no server, no client).

    .venv/bin/python bench/model_latency.py models_export/emotion/4 models_export/emotion/5
    .venv/bin/python bench/model_latency.py models_export/keypoints/7 --batch-sizes 1 8 64

Calls each version's `serving_default` signature (5 warm-up calls, then --repeats timed calls, the
versions taking turns so that a change in machine load touches all of them alike) and reports p50/p95
per call, p50 and mean per face and images/s, and each version's time per face relative to the first
listed version of the same model at the same batch size. The inputs are random uint8 images of each
input size, the same batch every call (`--faces random`), or real faces (`--faces validation`): a new
batch of the validation split for every call — FER-2013 PublicTest for emotion, the held-out subjects
for keypoints — the same batches for every version. Use real faces for a version whose cost depends on
its input (an emotion cascade defers only the faces its first stage is unsure of); its figure is then
the mean per face (the ratio column uses it when `--faces validation`). Writes
bench/results/model_latency.json/.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from accuracy import task_of
from bench_common import display_path, write_results
from emotion_ai import spec
from machine import machine_info, onednn_isa

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent


def time_calls(signatures: list, batches: list[list[np.ndarray]], repeats: int) -> list[list[float]]:
    """Seconds per call of each signature, call k on its batch k (cycling), after 5 warm-up calls each;
    round-robin."""
    import tensorflow as tf

    inputs = [[{spec.INPUT_KEY: tf.constant(x)} for x in own] for own in batches]
    for signature, own in zip(signatures, inputs, strict=True):
        for k in range(5):
            signature(**own[k % len(own)])
    seconds: list[list[float]] = [[] for _ in signatures]
    for k in range(repeats):
        for i, (signature, own) in enumerate(zip(signatures, inputs, strict=True)):
            x = own[k % len(own)]
            start = time.perf_counter()
            signature(**x)
            seconds[i].append(time.perf_counter() - start)
    return seconds


def validation_faces(model: str, data_dir: Path, cache_dir: str) -> np.ndarray:
    """The validation split's faces of `model`'s dataset, uint8 [N, size, size, 1]."""
    from emotion_ai_training.data import load_task
    from emotion_ai_training.dataset_files import DATA_FILES

    images = load_task(model, str(data_dir / DATA_FILES[model]), cache_dir=cache_dir).subset("validation")[0]
    return images[..., None]


def input_batches(faces: str, model: str, size: int, batch: int, count: int, rng: np.random.Generator,
                  pools: dict[str, np.ndarray]) -> list[np.ndarray]:
    """One random batch used for every call, or `count` batches of distinct validation faces."""
    if faces == "random":
        return [rng.integers(0, 256, (batch, size, size, 1), dtype=np.uint8)]
    pool = pools[model]
    picks = rng.choice(len(pool), size=min(len(pool), batch * count), replace=False)
    return [pool[picks[i:i + batch]] for i in range(0, len(picks) - batch + 1, batch)]


def markdown(doc: dict) -> str:
    lines = [
        "# In-process model latency (SavedModel signature, no server)",
        "",
        f"Command: `{doc['command']}`; {doc['machine']}; oneDNN kernels: {doc['onednn_isa']}",
        "",
        f"Inputs: {doc['faces']} faces. The ratio compares {doc['ratio_of']} ms per face.",
        "",
        "| model | batch | p50 ms | p95 ms | ms per face (p50) | ms per face (mean) | images/s | per face vs first of "
        "its model |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in doc["results"]:
        lines.append(f"| {r['model']} | {r['batch']} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} "
                     f"| {r['ms_per_face']:.2f} | {r['mean_ms_per_face']:.2f} | {r['images_per_second']:.0f} "
                     f"| {r['relative_to_first']:.3f} (1/{1 / r['relative_to_first']:.1f}) |")
    return "\n".join([*lines, ""])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("versions", nargs="+", type=Path, help="version folders, e.g. models_export/emotion/5")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--faces", choices=("random", "validation"), default="random",
                   help="random pixels, one batch for every call, or a new batch of real validation faces per call")
    p.add_argument("--data-dir", type=Path, default=None,
                   help="the data folder (default: $EMOTION_AI_DATA, else ../shared/data)")
    p.add_argument("--cache-dir", default=str(REPO / "cache"))
    p.add_argument("--out", type=Path, default=BENCH / "results")
    args = p.parse_args()

    import tensorflow as tf
    from emotion_ai_training.dataset_files import data_dir

    rng = np.random.default_rng(0)
    signatures = [tf.saved_model.load(str(folder)).signatures[spec.SIGNATURE_NAME] for folder in args.versions]
    sizes = [s.structured_input_signature[1][spec.INPUT_KEY].shape[1] for s in signatures]
    models = [task_of(folder) for folder in args.versions]  # the task: emotion_accurate/8 is an emotion model
    names = [display_path(folder, REPO) for folder in args.versions]
    pools = ({m: validation_faces(m, args.data_dir or data_dir(), args.cache_dir) for m in dict.fromkeys(models)}
             if args.faces == "validation" else {})
    ratio_key = "mean_ms_per_face" if args.faces == "validation" else "ms_per_face"
    results = []
    for batch in args.batch_sizes:
        by_model = {m: input_batches(args.faces, m, size, batch, args.repeats, rng, pools)
                    for m, size in dict(zip(models, sizes, strict=True)).items()}
        first: dict[str, float] = {}  # model name → ms per face of its first listed version
        timed = time_calls(signatures, [by_model[m] for m in models], args.repeats)
        for name, model, seconds in zip(names, models, timed, strict=True):
            p50 = float(np.median(seconds))
            row = {"model": name, "batch": batch, "p50_ms": p50 * 1e3,
                   "p95_ms": float(np.percentile(seconds, 95) * 1e3), "ms_per_face": p50 * 1e3 / batch,
                   "mean_ms_per_face": float(np.mean(seconds)) * 1e3 / batch, "images_per_second": batch / p50}
            first.setdefault(model, row[ratio_key])
            results.append(row | {"relative_to_first": row[ratio_key] / first[model]})
    results.sort(key=lambda r: (names.index(r["model"]), r["batch"]))
    doc = {
        "command": "python bench/model_latency.py " + " ".join(sys.argv[1:]),
        "machine": machine_info()["summary"],
        "onednn_isa": onednn_isa(),
        "faces": args.faces,
        "ratio_of": "mean" if args.faces == "validation" else "p50",
        "results": results,
    }
    write_results(args.out, "model_latency", doc, markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
