"""Do the committed SavedModels load, and compute the same, under the pinned TF Serving image's TensorFlow?

    .venv/bin/python bench/serving_compat.py                  # every version in models_export/
    .venv/bin/python bench/serving_compat.py models_export/emotion/9 --tf-version 2.19.1

`tensorflow/serving:X` runs TensorFlow X. The version comes from docker-compose.yml's image pin (the one
place it is defined) unless --tf-version is given. A throwaway venv with `tensorflow-cpu==X` is made
under .cache/ (kept for the next run), every SavedModel's `serving_default` signature is run there and
here (the export's TensorFlow) on the same fixed uint8 inputs, and the outputs are compared: numbers
within --atol, strings equal. Exit code 1 when any model fails to load or differs. Writes
bench/results/serving_compat.json/.md.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
BATCH = 4


def pinned_tf_version() -> str:
    """The default tag of `tensorflow/serving` in docker-compose.yml."""
    match = re.search(r"image:\s*tensorflow/serving:\$\{TF_SERVING_VERSION:-([0-9.]+)\}",
                      (REPO / "docker-compose.yml").read_text())
    if match is None:
        raise ValueError("docker-compose.yml has no tensorflow/serving:${TF_SERVING_VERSION:-X} image pin")
    return match.group(1)


def run_models(folders: list[str], out: str) -> None:
    """Run each SavedModel on its fixed inputs and save the outputs (also runs inside the throwaway venv)."""
    import numpy as np
    import tensorflow as tf

    results: dict[str, np.ndarray] = {}
    errors: dict[str, str] = {}
    for folder in folders:
        try:
            signature = tf.saved_model.load(folder).signatures["serving_default"]
            (name, spec), = signature.structured_input_signature[1].items()
            size = spec.shape[1]
            pixels = np.random.default_rng(size).integers(0, 256, (BATCH, size, size, 1), dtype=np.uint8)
            for key, value in signature(**{name: tf.constant(pixels)}).items():
                results[f"{folder}::{key}"] = value.numpy()
        except Exception as exc:  # a load failure is the finding, reported per model
            errors[folder] = f"{type(exc).__name__}: {exc}"[:500]
    np.savez(out, **results)
    Path(out).with_suffix(".json").write_text(json.dumps({"tensorflow": tf.__version__, "errors": errors}))


def _venv(version: str) -> Path:
    from bench_common import throwaway_venv

    return throwaway_venv(f"tf-serving-compat-{version}", [[f"tensorflow-cpu=={version}"]],
                          "import tensorflow as tf; print(tf.__version__)", version)


def compare(here: dict, there: dict, atol: float) -> tuple[float, list[str]]:
    import numpy as np

    worst, problems = 0.0, []
    for key, a in here.items():
        if key not in there:
            problems.append(f"{key}: missing under the serving TensorFlow")
            continue
        b = there[key]
        if a.shape != b.shape or a.dtype.kind != b.dtype.kind:
            problems.append(f"{key}: {a.dtype}{a.shape} here, {b.dtype}{b.shape} there")
        elif a.dtype.kind in "fiu":
            diff = float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))) if a.size else 0.0
            worst = max(worst, diff)
            if diff > atol:
                problems.append(f"{key}: max |difference| {diff:.2e} > {atol:.0e}")
        elif not np.array_equal(a, b):
            problems.append(f"{key}: values differ")
    return worst, problems


def markdown(doc: dict) -> str:
    lines = ["# SavedModels under the TF Serving image's TensorFlow", "", f"Command: `{doc['command']}`", "",
             f"Export TensorFlow {doc['tf_here']}, serving TensorFlow {doc['tf_serving']} "
             f"(`tensorflow/serving:{doc['tf_serving']}`); tolerance {doc['atol']:.0e}.", "",
             "| model | loads | max abs difference | result |", "|---|---|---:|---|"]
    for r in doc["results"]:
        lines.append(f"| {r['model']} | {'yes' if r['loads'] else 'no'} | {r['max_abs_diff']:.1e} "
                     f"| {'ok' if r['ok'] else '; '.join(r['problems'])} |")
    return "\n".join([*lines, ""])


def main() -> int:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        run_models(sys.argv[3:], sys.argv[2])
        return 0
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("versions", nargs="*", type=Path, help="version folders (default: all in models_export/)")
    p.add_argument("--tf-version", help="TensorFlow of the serving image (default: docker-compose.yml's pin)")
    p.add_argument("--atol", type=float, default=1e-4)
    p.add_argument("--out", type=Path, default=BENCH / "results")
    args = p.parse_args()

    import numpy as np
    from bench_common import display_path, write_results
    from emotion_ai.versions import has_saved_model, version_dirs

    export = REPO / "models_export"
    models = [m for m in export.iterdir() if m.is_dir()] if export.is_dir() else []
    folders = [str(v.resolve()) for v in args.versions] or sorted(
        str(v.resolve()) for m in models for _, v in version_dirs(m) if has_saved_model(v))
    version = args.tf_version or pinned_tf_version()
    python = _venv(version)
    with tempfile.TemporaryDirectory() as tmp:
        run_models(folders, f"{tmp}/here.npz")
        subprocess.run([str(python), __file__, "--child", f"{tmp}/there.npz", *folders], check=True)
        meta_here = json.loads(Path(f"{tmp}/here.json").read_text())
        meta_there = json.loads(Path(f"{tmp}/there.json").read_text())
        with np.load(f"{tmp}/here.npz", allow_pickle=True) as z:
            here = {k: z[k] for k in z.files}
        with np.load(f"{tmp}/there.npz", allow_pickle=True) as z:
            there = {k: z[k] for k in z.files}
    results = []
    for folder in folders:
        mine = {k: v for k, v in here.items() if k.startswith(f"{folder}::")}
        theirs = {k: v for k, v in there.items() if k.startswith(f"{folder}::")}
        problems = [f"fails here: {meta_here['errors'][folder]}"] if folder in meta_here["errors"] else []
        if folder in meta_there["errors"]:
            problems.append(f"fails to load: {meta_there['errors'][folder]}")
        worst, diffs = compare(mine, theirs, args.atol)
        problems += diffs
        results.append({"model": display_path(Path(folder), REPO), "loads": folder not in meta_there["errors"],
                        "max_abs_diff": worst, "ok": not problems, "problems": problems})
    doc = {"command": "python bench/serving_compat.py " + " ".join(sys.argv[1:]), "tf_here": meta_here["tensorflow"],
           "tf_serving": meta_there["tensorflow"], "atol": args.atol, "results": results}
    write_results(args.out, "serving_compat", doc, markdown)
    return 0 if all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
