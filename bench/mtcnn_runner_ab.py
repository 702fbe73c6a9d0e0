"""The MTCNN runner of this tree against the one of an earlier commit, on the detector benchmark's scenes.

    .venv/bin/python bench/mtcnn_runner_ab.py --rev f7e15f1 --scenes 200

The earlier `client/src/emotion_ai/mtcnn.py` is read with `git show REV:...` and put under the default
`MtcnnFaceDetector` settings in place of the current runner; the two detectors take turns scene by
scene, so load changes touch both alike. Reports recall, false boxes and ms per scene for each, and how
many scenes gave different boxes. Writes bench/results/mtcnn_runner_ab.json and .md.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
from pathlib import Path

import detector_bench as db
from bench_common import write_results
from emotion_ai import detect
from machine import machine_info

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
RUNNER = "client/src/emotion_ai/mtcnn.py"


def runner_at(rev: str, scratch: Path):
    """The `emotion_ai.mtcnn` module as it was at git revision `rev`."""
    source = subprocess.run(["git", "show", f"{rev}:{RUNNER}"], cwd=REPO, check=True, capture_output=True,
                            text=True).stdout
    path = scratch / "mtcnn_at_rev.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("emotion_ai.mtcnn_at_rev", path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def markdown(doc: dict) -> str:
    lines = ["# MTCNN runner: this tree against an earlier commit", "", f"Command: `{doc['command']}`  ",
             f"Machine: {doc['machine']}  ", f"Scenes: {doc['scenes']} (detector_bench, seed {doc['seed']}); "
             f"scenes whose boxes differ: {doc['differing_scenes']}", "",
             "| runner | recall | false boxes / image | ms per scene (mean) |", "|---|---:|---:|---:|"]
    for name, m in doc["runners"].items():
        lines.append(f"| {name} | {m['recall']:.4f} ({m['found']}/{m['faces']}) | {m['false_boxes_per_image']:.3f} "
                     f"| {m['ms_mean']:.1f} |")
    return "\n".join([*lines, ""])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rev", required=True, help="git revision whose runner is compared")
    p.add_argument("--scenes", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", type=Path, default=db.DATA)
    p.add_argument("--cache-dir", default=str(REPO / "cache"))
    p.add_argument("--out", type=Path, default=BENCH / "results")
    args = p.parse_args()
    scenes = db.make_scenes(db.validation_faces(args.data, args.cache_dir, 0), db.load_backgrounds(), args.scenes,
                            seed=args.seed)
    current, earlier = detect.MtcnnFaceDetector(), detect.MtcnnFaceDetector()
    with tempfile.TemporaryDirectory() as scratch:
        earlier._net = runner_at(args.rev, Path(scratch)).Mtcnn()
    detectors = {f"at {args.rev}": earlier, "this tree": current}
    results: dict[str, list[db.SceneResult]] = {name: [] for name in detectors}
    for d in detectors.values():
        d.detect(scenes[0].image)  # warm-up
    for scene in scenes:
        for name, d in detectors.items():
            results[name].append(db.detect_scene(d, scene))
    a, b = results.values()
    doc = {"command": "python bench/mtcnn_runner_ab.py " + " ".join(sys.argv[1:]), "machine": machine_info()["summary"],
           "scenes": len(scenes), "seed": args.seed,
           "differing_scenes": sum(x.boxes != y.boxes for x, y in zip(a, b, strict=True)),
           "runners": {name: db.detection_metrics(scenes, r) for name, r in results.items()}}
    write_results(args.out, "mtcnn_runner_ab", doc, markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
