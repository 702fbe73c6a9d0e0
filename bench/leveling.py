"""Does leveling tilted faces by the detector's eye landmarks help the emotion model? Rotated PublicTest copies.

    .venv/bin/python bench/leveling.py                      # 600 PublicTest faces, tilted ±(10-30)°, emotion v-latest
    .venv/bin/python bench/leveling.py --faces 3589 --models DIR

Each FER-2013 PublicTest face (48x48) is edge-padded by half its size, enlarged 4x and tilted by an angle
drawn in ±[10°, 30°]; the default MTCNN detector finds it and the emotion crop is cut with the client's
geometry once upright and once turned level by the landmarks' roll (`preprocess.level_angle`), then the
served emotion model (in-process) classifies both. Reports accuracy of each on the faces found, and the
untilted accuracy of the same faces as the ceiling. (Keypoints: `bench/detector_bench.py` reports RMSE
with and without leveling on its composite scenes.) Writes bench/results/leveling.json and .md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np
from bench_common import display_path, write_results  # bench/ is on sys.path as a script
from emotion_ai import detect, spec
from emotion_ai.preprocess import level_angle, model_inputs
from emotion_ai.versions import latest_version
from emotion_ai_training.data import load_emotion
from machine import machine_info

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
DATA = REPO.parent / "shared" / "data" / "fer2013.csv.gz"
TILT = (10.0, 30.0)  # |angle| range, degrees
ENLARGE = 4


def tilted_scene(face: np.ndarray, angle: float) -> np.ndarray:
    """A BGR image of one 48-px face, padded with its own edges, enlarged and tilted by `angle` degrees."""
    pad = face.shape[0] // 2
    big = cv2.resize(cv2.copyMakeBorder(face, pad, pad, pad, pad, cv2.BORDER_REPLICATE), None, fx=ENLARGE,
                     fy=ENLARGE, interpolation=cv2.INTER_CUBIC)
    h, w = big.shape
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    return cv2.cvtColor(cv2.warpAffine(big, m, (w, h), borderMode=cv2.BORDER_REPLICATE), cv2.COLOR_GRAY2BGR)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--faces", type=int, default=600)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--models", type=Path, default=REPO / "models_export")
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--out", type=Path, default=BENCH / "results")
    args = p.parse_args(argv)
    from emotion_ai.transport import ModelRef
    from run_benchmarks import InProcessTransport  # imports TensorFlow

    data = load_emotion(str(args.data), cache_dir=str(REPO / "cache"))
    test = np.flatnonzero(data.split == "validation")
    rng = np.random.default_rng(args.seed)
    picked = rng.choice(test, min(args.faces, len(test)), replace=False)
    detector = detect.make_detector()
    geometry = detect.crops_for(detector).emotion
    transport = InProcessTransport(args.models)
    ref = ModelRef(spec.EMOTION_MODEL)

    def classify(batch: np.ndarray) -> np.ndarray:
        out = transport.predict(ref, {spec.INPUT_KEY: batch}, 600)
        return np.argmax(out[spec.SCORES_OUTPUT_KEY], axis=1)

    upright, level, labels, found = [], [], [], 0
    for i in picked:
        angle = float(rng.uniform(*TILT) * rng.choice([-1, 1]))
        scene = tilted_scene(data.images[i], angle)
        faces = sorted(detector.detect(scene), key=lambda d: -d.score)
        if not faces:
            continue
        found += 1
        gray = cv2.cvtColor(scene, cv2.COLOR_BGR2GRAY)
        a, _ = model_inputs(gray, [faces[0].box], geometry, spec.EMOTION_INPUT_SIZE)
        b, _ = model_inputs(gray, [faces[0].box], geometry, spec.EMOTION_INPUT_SIZE, [level_angle(faces[0].landmarks)])
        upright.append(a[0])
        level.append(b[0])
        labels.append(int(data.labels[i]))
    y = np.array(labels)
    untilted = np.array([data.images[i] for i in picked])[..., None]
    doc = {
        "command": "python bench/leveling.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": machine_info(),
        "model": display_path(latest_version(args.models / spec.EMOTION_MODEL), REPO),
        "faces": len(picked), "found": found, "tilt_degrees": list(TILT),
        "accuracy_upright_crop": round(float((classify(np.stack(upright)) == y).mean()), 4),
        "accuracy_level_crop": round(float((classify(np.stack(level)) == y).mean()), 4),
        "accuracy_untilted_originals": round(float((classify(untilted) == np.array(data.labels[picked])).mean()), 4),
    }
    write_results(args.out, "leveling", doc, markdown)
    return 0


def markdown(doc: dict) -> str:
    return "\n".join([
        "# Leveling tilted faces for the emotion model", "",
        f"Command: `{doc['command']}`  ", f"Machine: {doc['machine']['summary']}  ",
        f"Model: {doc['model']}; {doc['faces']} PublicTest faces tilted ±{doc['tilt_degrees'][0]:g}–"
        f"{doc['tilt_degrees'][1]:g}°, found by MTCNN: {doc['found']}", "",
        "| crop | accuracy |", "|---|---:|",
        f"| upright box crop | {doc['accuracy_upright_crop']:.4f} |",
        f"| turned level by the eye landmarks | {doc['accuracy_level_crop']:.4f} |",
        f"| the untilted 48-px originals (ceiling) | {doc['accuracy_untilted_originals']:.4f} |", ""])


if __name__ == "__main__":
    sys.exit(main())
