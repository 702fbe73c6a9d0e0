"""All product benchmarks in one command: latency, throughput and video frames/s end to end, over
gRPC and REST against the embedded server and in-process (no server) as the floor.

    .venv/bin/python bench/run_benchmarks.py            # full run (several minutes)
    .venv/bin/python bench/run_benchmarks.py --quick    # < 2 minutes, small samples
    .venv/bin/python bench/run_benchmarks.py --models DIR

* latency: `EmotionClient.predict` on a 640x480 JPEG with one face (bench/client_bench.py's image,
  skimage's astronaut) and with four faces (2x2 composition of real astronaut photo crops; the
  Haar detector must find exactly 4), p50/p95/p99;
* throughput: faces/s with 1, 8 and 64 faces per request and 1/4/8 concurrent clients; a request
  is the keypoints call and the emotion call for N real face crops, sent concurrently as the client
  does (timing loop as bench/serving_bench.py's `measure`);
* video: frames/s of `predict` on each frame of a generated 640x480 video of the astronaut moving
  across the frame, plus the `emotion-ai video` command end to end (decode, track, write JSONL);
* in-process floor: the same `EmotionClient` pipeline whose transport calls the SavedModels
  directly with TensorFlow; every figure also as a ratio to it.

Writes bench/results/benchmarks.json and .md (`--quick`: benchmarks_quick.*), with machine info and
which models were used. Without versions in models_export/ it benchmarks tiny untrained test
models (same graph contract, far fewer FLOPs) and says so in the results.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import tensorflow as tf
from bench_common import write_results
from emotion_ai import EmotionClient, spec
from emotion_ai.cli import main as emotion_ai_cli
from emotion_ai.transport import ModelRef, SignatureInfo, VersionStatus
from emotion_ai.versions import latest_version
from emotion_ai_serving.local_server import LocalServer
from machine import machine_info
from photos import four_face_jpeg, one_face_jpeg, write_astronaut_clip  # bench/ is on sys.path as a script
from serving_bench import measure
from tiny_models import make_export_tree

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
MODES = ("in-process", "grpc", "rest")
FACES_PER_REQUEST = (1, 8, 64)
CLIENTS = (1, 4, 8)


# -- the in-process floor --------------------------------------------------------------------------
class InProcessTransport:
    """The client's Transport, answered by the SavedModels' serving signatures in this process."""

    def __init__(self, models_root: Path):
        self._fns = {}
        self._keep = []
        for name in (spec.KEYPOINTS_MODEL, spec.EMOTION_MODEL):
            loaded = tf.saved_model.load(str(latest_version(models_root / name)))
            self._keep.append(loaded)
            self._fns[name] = loaded.signatures[spec.SIGNATURE_NAME]

    def predict(
        self, model: ModelRef, inputs: dict[str, np.ndarray], timeout: float
    ) -> dict[str, np.ndarray]:
        out = self._fns[model.name](**{k: tf.constant(v) for k, v in inputs.items()})
        result = {}
        for key, tensor in out.items():
            value = tensor.numpy()
            if value.dtype == object:
                value = np.char.decode(value.astype(bytes), "utf-8")
            result[key] = value
        return result

    def metadata(self, model: ModelRef, timeout: float) -> dict[str, SignatureInfo]:
        return {}

    def status(self, model: ModelRef, timeout: float) -> list[VersionStatus]:
        return [VersionStatus(1, "AVAILABLE")]

    def close(self) -> None:
        pass


class Paths:
    """Makes an EmotionClient per mode: in-process, gRPC or REST to the embedded server."""

    def __init__(self, server: LocalServer, inproc: InProcessTransport):
        self.server, self.inproc = server, inproc

    def client(self, mode: str) -> EmotionClient:
        if mode == "in-process":
            return EmotionClient(timeout=120, transport=self.inproc)
        return self.server.client(mode, timeout=120)


# -- test material ---------------------------------------------------------------------------------
def face_crops(client: EmotionClient, jpeg: bytes) -> tuple[np.ndarray, np.ndarray]:
    """The keypoints (96x96) and emotion (48x48) crops of the photo's one face, as the client
    makes them."""
    staged = client.stage(jpeg)  # the client's own decode → detect → crop stage
    assert len(staged.detections) == 1
    return staged.kp_batch, staged.em_batch


def write_video(path: Path, frames: int) -> Path:
    """A 640x480, 25 fps MP4 of a 300x300 astronaut crop moving left to right and back."""
    return write_astronaut_clip(path, frames)


# -- measurements ----------------------------------------------------------------------------------
def pct(samples: list[float]) -> dict:
    a = np.asarray(samples)
    return {
        "n": int(a.size),
        "p50_ms": round(float(np.percentile(a, 50)), 2),
        "p95_ms": round(float(np.percentile(a, 95)), 2),
        "p99_ms": round(float(np.percentile(a, 99)), 2),
        "mean_ms": round(float(a.mean()), 2),
    }


def latency(paths: Paths, mode: str, *, image: bytes, faces: int, n: int, warmup: int) -> dict:
    with paths.client(mode) as client:
        for _ in range(warmup):
            client.predict(image)
        samples = []
        for _ in range(n):
            t = time.perf_counter()
            pred = client.predict(image)
            samples.append((time.perf_counter() - t) * 1e3)
            assert len(pred.faces) == faces, f"expected {faces} faces, got {len(pred.faces)}"
    return pct(samples)


def throughput(
    paths: Paths,
    mode: str,
    *,
    crops: tuple[np.ndarray, np.ndarray],
    faces: int,
    clients: int,
    seconds: float,
    warmup: int,
) -> dict:
    kp = np.repeat(crops[0], faces, axis=0)
    em = np.repeat(crops[1], faces, axis=0)
    opened: list[tuple[EmotionClient, ThreadPoolExecutor]] = []

    def factory() -> Callable[[], None]:
        client = paths.client(mode)
        pool = ThreadPoolExecutor(1)
        opened.append((client, pool))
        kp_ref, em_ref = client.models["keypoints"], client.models["emotion"]

        def call() -> None:
            pending = pool.submit(client.transport.predict, kp_ref, {spec.INPUT_KEY: kp}, 120)
            out = client.transport.predict(em_ref, {spec.INPUT_KEY: em}, 120)
            assert out[spec.SCORES_OUTPUT_KEY].shape[0] == faces
            pending.result()

        return call

    try:
        r = measure(factory, seconds, clients, warmup)
    finally:
        for client, pool in opened:
            pool.shutdown()
            client.close()
    return r | {"faces_per_s": round(r["rps"] * faces, 1)}


def video_fps(paths: Paths, mode: str, video: Path) -> dict:
    cap = cv2.VideoCapture(str(video))
    frames, faces = 0, 0
    with paths.client(mode) as client:
        t = time.perf_counter()
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            faces += len(client.predict(frame).faces)
            frames += 1
        wall = time.perf_counter() - t
    cap.release()
    return {
        "frames": frames,
        "faces_per_frame": round(faces / max(frames, 1), 3),
        "frames_per_s": round(frames / wall, 2),
    }


def video_cli_fps(server: LocalServer, video: Path, frames: int, tmp: Path) -> dict:
    out = tmp / "timeline.jsonl"
    args = [
        "video",
        str(video),
        "--out",
        str(out),
        "--host=127.0.0.1",
        "--protocol=grpc",
        f"--grpc-port={server.grpc_port}",
        f"--rest-port={server.rest_port}",
        "--timeout=120",
    ]
    t = time.perf_counter()
    code = emotion_ai_cli(args)
    wall = time.perf_counter() - t
    rows = out.read_text().splitlines() if out.exists() else []
    return {
        "exit_code": code,
        "frames": frames,
        "rows": len(rows),
        "frames_per_s": round(frames / wall, 2),
    }


# -- report ----------------------------------------------------------------------------------------
def ratio(value: float, floor: float) -> str:
    return f"{value / floor:.2f}x" if floor else "n/a"


def markdown(doc: dict) -> str:
    lines = [
        f"# Benchmarks{' (quick mode: small samples, indicative only)' if doc['quick'] else ''}",
        "",
        f"Command: `{doc['command']}`  ",
        f"Machine: {doc['machine']['summary']}  ",
        f"Models: {doc['models']}",
        "",
        "## End-to-end latency per 640x480 image (`EmotionClient.predict`)",
        "",
        "| image | path | n | p50 ms | p95 ms | p99 ms | p50 vs in-process |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for image, rows in doc["latency"].items():
        floor = rows["in-process"]["p50_ms"]
        for mode, r in rows.items():
            lines.append(
                f"| {image} | {mode} | {r['n']} | {r['p50_ms']} | {r['p95_ms']} "
                f"| {r['p99_ms']} | {ratio(r['p50_ms'], floor)} |"
            )
    lines += [
        "",
        "## Throughput (keypoints + emotion for N face crops per request)",
        "",
        "| path | faces/request | clients | faces/s | p50 ms | p99 ms | faces/s vs in-process |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    floors = {
        (r["faces"], r["clients"]): r["faces_per_s"]
        for r in doc["throughput"]
        if r["mode"] == "in-process"
    }
    for r in doc["throughput"]:
        lines.append(
            f"| {r['mode']} | {r['faces']} | {r['clients']} | {r['faces_per_s']} "
            f"| {r['p50_ms']} | {r['p99_ms']} "
            f"| {ratio(r['faces_per_s'], floors[(r['faces'], r['clients'])])} |"
        )
    v = doc["video"]
    floor = v["in-process"]["frames_per_s"]
    lines += [
        "",
        f"## Video end to end ({v['frames']} frames, 640x480, one moving face)",
        "",
        "| path | frames/s | faces/frame | vs in-process |",
        "|---|---:|---:|---:|",
    ]
    for mode in MODES:
        r = v[mode]
        lines.append(
            f"| predict per frame, {mode} | {r['frames_per_s']} | {r['faces_per_frame']} "
            f"| {ratio(r['frames_per_s'], floor)} |"
        )
    c = v["cli"]
    lines.append(
        f"| `emotion-ai video` (gRPC, tracking + JSONL) | {c['frames_per_s']} "
        f"| {c['rows'] / max(c['frames'], 1):.3f} | {ratio(c['frames_per_s'], floor)} |"
    )
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", type=Path, default=REPO / "models_export")
    p.add_argument("--quick", action="store_true", help="small samples (< 2 minutes)")
    p.add_argument("--out", type=Path, default=BENCH / "results")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    n, warmup, seconds, frames = (15, 3, 0.5, 30) if args.quick else (100, 10, 5.0, 150)

    machine = machine_info()
    tmp = Path(tempfile.mkdtemp(prefix="emotion-ai-bench-"))
    models = args.models
    have = all(latest_version(models / m) for m in (spec.KEYPOINTS_MODEL, spec.EMOTION_MODEL))
    if have:
        cards = {
            m: json.loads((latest_version(models / m) / "model_card.json").read_text())
            for m in (spec.KEYPOINTS_MODEL, spec.EMOTION_MODEL)
            if (latest_version(models / m) / "model_card.json").exists()
        }
        described = (
            f"{models} ("
            + ", ".join(
                f"{m} v{latest_version(models / m).name}"
                + (f": {cards[m]['note']}" if "note" in cards.get(m, {}) else "")
                for m in (spec.KEYPOINTS_MODEL, spec.EMOTION_MODEL)
            )
            + ")"
        )
    else:
        models = make_export_tree(tmp / "models")
        described = (
            f"tiny untrained test models (tests/support/tiny_models.make_export_tree); "
            f"{args.models} has no versions yet"
        )
    print(f"models: {described}", flush=True)

    one, four = one_face_jpeg(), four_face_jpeg()
    video = write_video(tmp / "astronaut.mp4", frames)
    inproc = InProcessTransport(models)
    started = time.monotonic()
    with LocalServer(models) as server:
        paths = Paths(server, inproc)
        lat: dict = {"1 face": {}, "4 faces": {}}
        for label, image, k in (("1 face", one, 1), ("4 faces", four, 4)):
            for mode in MODES:
                lat[label][mode] = latency(paths, mode, image=image, faces=k, n=n, warmup=warmup)
                print(f"latency {label} {mode}: {lat[label][mode]}", flush=True)
        with paths.client("in-process") as c:
            crops = face_crops(c, one)
        thr = []
        for faces in FACES_PER_REQUEST:
            for clients in CLIENTS:
                for mode in MODES:
                    r = throughput(
                        paths,
                        mode,
                        crops=crops,
                        faces=faces,
                        clients=clients,
                        seconds=seconds,
                        warmup=1 if args.quick else 2,
                    )
                    thr.append({"mode": mode, "faces": faces, "clients": clients} | r)
                    print(
                        f"throughput {mode} {faces} faces x {clients} clients: "
                        f"{r['faces_per_s']} faces/s",
                        flush=True,
                    )
        vid: dict = {"frames": frames}
        for mode in MODES:
            vid[mode] = video_fps(paths, mode, video)
        vid["cli"] = video_cli_fps(server, video, frames, tmp)
        print(f"video: {vid}", flush=True)
    doc = {
        "command": "python bench/run_benchmarks.py " + " ".join(sys.argv[1:]),
        "quick": args.quick,
        "machine": machine,
        "models": described,
        "seconds_total": round(time.monotonic() - started, 1),
        "latency": lat,
        "throughput": thr,
        "video": vid,
    }
    stem = "benchmarks_quick" if args.quick else "benchmarks"
    args.out.mkdir(parents=True, exist_ok=True)
    write_results(args.out, stem, doc, markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
