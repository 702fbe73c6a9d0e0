"""Serving benchmark: requests/s and p50/p99 latency of a 1-face request to each model over REST
and gRPC against the embedded server (`emotion-ai-serve`), the in-process forward pass of the same
batch for comparison, and whether server-side batching helps with concurrent clients.

    .venv/bin/python bench/serving_bench.py [--models_root models_export] [--seconds 3]

Writes bench/results/serving_bench.json and bench/results/serving_bench.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import requests
import tensorflow as tf
from bench_common import write_results
from emotion_ai import spec
from emotion_ai.versions import latest_version
from emotion_ai_serving.local_server import LocalServer
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

REPO = Path(__file__).resolve().parents[1]
SERVING = REPO / "serving"


def make_clients(server: LocalServer, model: str, image: np.ndarray, protocol: str):
    """A callable sending one predict request (a fresh session/channel per client thread)."""
    if protocol == "rest":
        session = requests.Session()
        url = f"http://127.0.0.1:{server.rest_port}/v1/models/{model}:predict"
        body = json.dumps({"instances": image.tolist()})

        def call() -> None:
            resp = session.post(url, data=body, timeout=30)
            resp.raise_for_status()

        return call
    channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.inputs[spec.INPUT_KEY].CopyFrom(tf.make_tensor_proto(image))
    return lambda: stub.Predict(request, timeout=30)


def measure(factory, seconds: float, clients: int = 1, warmup: int = 3) -> dict:
    """`clients` threads call `factory()`'s callable for `seconds`; the clock starts once every thread
    has made `warmup` untimed calls, and each thread makes at least one timed call."""
    latencies: list[float] = []
    lock = threading.Lock()
    clock: dict[str, float] = {}
    ready = threading.Barrier(clients + 1, action=lambda: clock.update(start=time.monotonic()))

    def loop() -> None:
        call = factory()
        for _ in range(warmup):
            call()
        ready.wait()
        local = []
        while True:
            t0 = time.perf_counter()
            call()
            local.append(time.perf_counter() - t0)
            if time.monotonic() >= clock["start"] + seconds:
                break
        with lock:
            latencies.extend(local)

    threads = [threading.Thread(target=loop) for _ in range(clients)]
    for t in threads:
        t.start()
    ready.wait()
    started = clock["start"]
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    ms = np.asarray(latencies) * 1000
    return {
        "requests": len(latencies),
        "clients": clients,
        "rps": round(len(latencies) / elapsed, 1),
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
    }


def forward_pass(models_root: Path, model: str, image: np.ndarray, seconds: float) -> dict:
    loaded = tf.saved_model.load(str(latest_version(models_root / model)))
    fn = loaded.signatures[spec.SIGNATURE_NAME]
    inputs = {spec.INPUT_KEY: tf.constant(image)}
    for _ in range(5):
        fn(**inputs)
    times = []
    stop_at = time.monotonic() + seconds
    while time.monotonic() < stop_at:
        t0 = time.perf_counter()
        fn(**inputs)
        times.append(time.perf_counter() - t0)
    ms = np.asarray(times) * 1000
    return {
        "calls": len(times),
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models_root", default=str(REPO / "models_export"))
    parser.add_argument("--seconds", type=float, default=3.0, help="per measurement")
    parser.add_argument("--clients", type=int, default=4, help="concurrent clients, batching run")
    parser.add_argument("--out", default=str(REPO / "bench" / "results"))
    args = parser.parse_args()

    models = [spec.KEYPOINTS_MODEL, spec.EMOTION_MODEL]
    root = Path(args.models_root)
    source = str(root)
    tmp = None
    if not all(latest_version(root / m) for m in models):
        from tiny_models import make_export_tree

        tmp = tempfile.TemporaryDirectory()
        root = make_export_tree(Path(tmp.name))
        source = "tests/support/tiny_models.make_export_tree (untrained)"
    sizes = {
        spec.KEYPOINTS_MODEL: spec.KEYPOINTS_INPUT_SIZE,
        spec.EMOTION_MODEL: spec.EMOTION_INPUT_SIZE,
    }
    rng = np.random.default_rng(0)
    images = {m: rng.integers(0, 256, (1, s, s, 1), dtype=np.uint8) for m, s in sizes.items()}

    results: dict = {
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "loadavg_start": os.getloadavg(),
        },
        "models": source,
        "seconds_per_case": args.seconds,
        "single_client": [],
        "forward_pass": [],
        "batching": [],
    }
    batching_flags = ["--enable_batching", f"--batching_parameters_file={SERVING / 'batching.config'}"]
    for batching, flags in ((False, []), (True, batching_flags)):
        with LocalServer(root, extra_args=flags) as server:
            if not batching:
                for model in models:
                    for protocol in ("rest", "grpc"):
                        row = measure(
                            lambda m=model, p=protocol: make_clients(server, m, images[m], p), args.seconds
                        )
                        results["single_client"].append({"model": model, "protocol": protocol, **row})
            for clients in (1, args.clients):
                row = measure(
                    lambda: make_clients(server, spec.KEYPOINTS_MODEL, images[spec.KEYPOINTS_MODEL], "grpc"),
                    args.seconds,
                    clients,
                )
                results["batching"].append({"batching": batching, **row})
    for model in models:
        row = forward_pass(root, model, images[model], args.seconds)
        results["forward_pass"].append({"model": model, **row})
    results["machine"]["loadavg_end"] = os.getloadavg()

    write_results(Path(args.out), "serving_bench", results, markdown)
    if tmp is not None:
        tmp.cleanup()
    return 0


def markdown(r: dict) -> str:
    lines = [
        "# Serving benchmark (embedded server, 1-face request)",
        "",
        f"Machine: {r['machine']['cpus']} CPUs, load average at start "
        f"{r['machine']['loadavg_start'][0]:.2f} / end {r['machine']['loadavg_end'][0]:.2f}; "
        f"models: {r['models']}; {r['seconds_per_case']} s per case.",
        "",
        "| model | protocol | req/s | p50 ms | p99 ms |",
        "|---|---|---:|---:|---:|",
    ]
    lines += [
        f"| {x['model']} | {x['protocol']} | {x['rps']} | {x['p50_ms']} | {x['p99_ms']} |"
        for x in r["single_client"]
    ]
    lines += [
        "",
        "In-process forward pass of the same batch (tf.saved_model.load, no server):",
        "",
        "| model | p50 ms | p99 ms |",
        "|---|---:|---:|",
    ]
    lines += [f"| {x['model']} | {x['p50_ms']} | {x['p99_ms']} |" for x in r["forward_pass"]]
    lines += [
        "",
        "Server-side batching (keypoints, gRPC, serving/batching.config):",
        "",
        "| batching | clients | req/s | p50 ms | p99 ms |",
        "|---|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {'on' if x['batching'] else 'off'} | {x['clients']} | {x['rps']} | "
        f"{x['p50_ms']} | {x['p99_ms']} |"
        for x in r["batching"]
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
