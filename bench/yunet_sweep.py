"""YuNet's defaults from the detector benchmark: recall and false boxes per image over score thresholds, NMS
thresholds and working sizes, on the main scenes and the dark and profile sets of bench/detector_bench.py.

    .venv/bin/python bench/yunet_sweep.py                  # 200 main scenes + 100 dark + 100 profile, seed 0

One run per (nms_threshold, max_side) at the lowest score threshold, with `enhance` off (the CLAHE copy runs
only when nothing is found, which depends on the threshold); each higher threshold is that run's detections
filtered by score, which is exactly what YuNet gives at that threshold (greedy NMS only lets a better box
suppress a box). Writes bench/results/yunet/sweep.json and .md, with machine info (CPU model).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import detector_bench as db  # bench/ is on sys.path as a script
from bench_common import write_results
from emotion_ai.yunet import YuNetFaceDetector
from machine import machine_info

SCORES: tuple[float, ...] = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
NMS: tuple[float, ...] = (0.3, 0.45)
MAX_SIDES: tuple[int, ...] = (640, 1280)
#: The bars a default must meet on the main scenes: MTCNN's recall there, and at most this many false boxes.
RECALL_BAR, FALSE_BAR = 0.954, 0.02


def detections(detector: YuNetFaceDetector, scenes: Sequence[db.Scene]) -> tuple[list[list], float]:
    """Per scene (box, score) pairs, and mean ms per image (after one warm-up call)."""
    detector.detect(scenes[0].image)
    out, t = [], time.perf_counter()
    for scene in scenes:
        out.append([(d.box, d.score) for d in detector.detect(scene.image)])
    return out, (time.perf_counter() - t) * 1e3 / len(scenes)


def score_at(scenes: Sequence[db.Scene], found: list[list], threshold: float) -> dict:
    """Recall and false boxes per image of the detections scoring at least `threshold`."""
    faces = hits = false = 0
    for scene, dets in zip(scenes, found, strict=True):
        matched, false_boxes = db.match([f.box for f in scene.faces], [b for b, s in dets if s >= threshold])
        faces += len(matched)
        hits += sum(m is not None for m in matched)
        false += false_boxes
    return {"recall": round(hits / faces, 4) if faces else None, "false_boxes_per_image": round(false / len(scenes), 4)}


def markdown(doc: dict) -> str:
    lines = ["# YuNet's score threshold, NMS threshold and working size on the detector benchmark", "",
             f"Command: `{doc['command']}`  ", f"Machine: {doc['machine']['summary']}  ",
             f"Scenes: {doc['scenes']}; `enhance` off; bars on the main scenes: recall >= {RECALL_BAR}, "
             f"false boxes <= {FALSE_BAR}/image", "",
             "| nms | max_side | min_score | main recall | main false/img | dark recall | dark false/img "
             "| profile recall | profile false/img | ms/img (main) |", "|" + "---:|" * 10]
    for row in doc["rows"]:
        m, d, p = row["main"], row["dark"], row["profile"]
        lines.append(f"| {row['nms_threshold']} | {row['max_side']} | {row['min_score']} | {m['recall']:.3f} "
                     f"| {m['false_boxes_per_image']:.3f} | {d['recall']:.3f} | {d['false_boxes_per_image']:.3f} "
                     f"| {p['recall']:.3f} | {p['false_boxes_per_image']:.3f} | {row['ms_main']:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scenes", type=int, default=db.DEFAULT_SCENES)
    p.add_argument("--subset-scenes", type=int, default=db.DEFAULT_SUBSET_SCENES)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", type=Path, default=db.DATA)
    p.add_argument("--cache-dir", default=str(db.REPO / "cache"))
    p.add_argument("--out", type=Path, default=db.BENCH / "results" / "yunet")
    args = p.parse_args(argv)
    machine = machine_info()
    faces, backgrounds = db.validation_faces(args.data, args.cache_dir, 0), db.load_backgrounds()
    sets = {"main": db.make_scenes(faces, backgrounds, args.scenes, args.seed)}
    for name, offset in db.SUBSET_SEEDS.items():
        sets[name] = db.make_scenes(faces, backgrounds, args.subset_scenes, args.seed + offset, condition=name)
    rows = []
    for nms in NMS:
        for max_side in MAX_SIDES:
            detector = YuNetFaceDetector(min_score=min(SCORES), nms_threshold=nms, max_side=max_side, enhance=False)
            found, ms = {}, {}
            for name, scenes in sets.items():
                found[name], ms[name] = detections(detector, scenes)
            for threshold in SCORES:
                row = {"nms_threshold": nms, "max_side": max_side, "min_score": threshold,
                       "ms_main": round(ms["main"], 2)}
                row |= {name: score_at(scenes, found[name], threshold) for name, scenes in sets.items()}
                rows.append(row)
                print(row, flush=True)
    doc = {"command": "python bench/yunet_sweep.py " + " ".join(sys.argv[1:] if argv is None else argv),
           "machine": machine, "scenes": {name: len(s) for name, s in sets.items()}, "rows": rows}
    write_results(args.out, "sweep", doc, markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
