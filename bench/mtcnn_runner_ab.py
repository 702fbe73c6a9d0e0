"""The MTCNN detector of this tree against the one of an earlier commit, on the detector benchmark's scenes.

    .venv/bin/python bench/mtcnn_runner_ab.py --rev d417b0e --scenes 200

The earlier client package (`client/src/emotion_ai`, runner and detector wrapper alike) is extracted with
`git archive REV` and imported under another name; both trees' default `MtcnnFaceDetector()` take turns
scene by scene, so load changes touch both alike. Reports recall (by size and tilt), false boxes and ms
per scene for each, and how many scenes gave different boxes. Writes bench/results/mtcnn_runner_ab.json
and .md.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import tempfile
from pathlib import Path

import detector_bench as db
from bench_common import extract_at_rev, write_results
from emotion_ai import detect
from machine import machine_info

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
PACKAGE = "client/src/emotion_ai"


def package_at(rev: str, scratch: Path):
    """The `emotion_ai.detect` module as it was at git revision `rev` (its package imported as
    `emotion_ai_at_rev` from `scratch`)."""
    extract_at_rev(rev, PACKAGE, scratch).rename(scratch / "emotion_ai_at_rev")
    for name in [m for m in sys.modules if m.split(".")[0] == "emotion_ai_at_rev"]:  # a previous call's
        del sys.modules[name]
    sys.path.insert(0, str(scratch))
    try:
        return importlib.import_module("emotion_ai_at_rev.detect")
    finally:
        sys.path.remove(str(scratch))


def _share(recall: float | None) -> str:
    return "-" if recall is None else f"{recall:.2f}"  # None: no face in that bucket


def markdown(doc: dict) -> str:
    lines = ["# MTCNN detector: this tree against an earlier commit", "", f"Command: `{doc['command']}`  ",
             f"Machine: {doc['machine']}  ", f"Scenes: {doc['scenes']} (detector_bench, seed {doc['seed']}); "
             f"scenes whose boxes differ: {doc['differing_scenes']}", "",
             "| detector | recall | by face size <32 / 32-64 / 64-128 / >=128 px | by tilt <10 / 10-20 / 20-30° "
             "| false boxes / image | ms per scene (mean / p95) |", "|---|---:|---|---|---:|---:|"]
    for name, m in doc["detectors"].items():
        sizes = " / ".join(_share(v["recall"]) for v in m["recall_by_size"].values())
        tilts = " / ".join(_share(v["recall"]) for v in m["recall_by_rotation"].values())
        lines.append(f"| {name} | {m['recall']:.4f} ({m['found']}/{m['faces']}) | {sizes} | {tilts} "
                     f"| {m['false_boxes_per_image']:.3f} | {m['ms_mean']:.1f} / {m['ms_p95']:.1f} |")
    return "\n".join([*lines, ""])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rev", required=True, help="git revision whose detector is compared")
    p.add_argument("--scenes", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", type=Path, default=db.DATA)
    p.add_argument("--cache-dir", default=str(REPO / "cache"))
    p.add_argument("--out", type=Path, default=BENCH / "results")
    args = p.parse_args()
    scenes = db.make_scenes(db.validation_faces(args.data, args.cache_dir, 0), db.load_backgrounds(), args.scenes,
                            seed=args.seed)
    with tempfile.TemporaryDirectory() as scratch:
        earlier = package_at(args.rev, Path(scratch)).MtcnnFaceDetector()  # reads its ONNX files now
    current = detect.MtcnnFaceDetector()
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
           "detectors": {name: db.detection_metrics(scenes, r) for name, r in results.items()}}
    write_results(args.out, "mtcnn_runner_ab", doc, markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
