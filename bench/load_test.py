"""Sustained load: N concurrent clients (half gRPC, half REST) send the one-face 640x480 photo
through `EmotionClient.predict` for a fixed time on loopback; reports p50/p95/p99 and errors.

    .venv/bin/python bench/load_test.py                    # 60 s, 8 clients, serves models_export/
    .venv/bin/python bench/load_test.py --seconds 10 --models /path/to/export_root
    .venv/bin/python bench/load_test.py --no-server --grpc-port 8500 --rest-port 8501

Writes bench/results/load_test.json and .md; exits 1 when any request failed. The CI-sized run of
the same code is tests/quality/test_load_faults.py (EMOTION_AI_LOAD_SECONDS, default 10).
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from bench_common import add_server_args, server_endpoint, write_results
from emotion_ai import EmotionClient
from machine import machine_info
from photos import one_face_jpeg  # bench/ is on sys.path when run as a script

BENCH = Path(__file__).resolve().parent


@dataclass
class LoadResult:
    seconds: float
    clients: int
    latencies_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    faces_seen: set[int] = field(default_factory=set)

    def summary(self) -> dict:
        a = np.asarray(self.latencies_ms or [np.nan])
        return {
            "clients": self.clients,
            "seconds": round(self.seconds, 2),
            "requests": len(self.latencies_ms),
            "errors": len(self.errors),
            "first_errors": self.errors[:5],
            "requests_per_s": round(len(self.latencies_ms) / self.seconds, 2),
            "p50_ms": round(float(np.percentile(a, 50)), 2),
            "p95_ms": round(float(np.percentile(a, 95)), 2),
            "p99_ms": round(float(np.percentile(a, 99)), 2),
            "max_ms": round(float(np.max(a)), 2),
        }


def run_load(
    *,
    host: str,
    grpc_port: int,
    rest_port: int,
    image: bytes,
    seconds: float,
    clients: int = 8,
    timeout: float = 30.0,
    stop: threading.Event | None = None,
) -> LoadResult:
    """`clients` threads, each with its own EmotionClient (even: gRPC, odd: REST), predicting
    `image` until `seconds` have passed (or `stop` is set). Every exception counts as an error."""
    result = LoadResult(seconds=seconds, clients=clients)
    lock = threading.Lock()
    stop = stop or threading.Event()
    start = threading.Barrier(clients)

    def worker(i: int) -> None:
        protocol = "grpc" if i % 2 == 0 else "rest"
        with EmotionClient(
            host=host, protocol=protocol, grpc_port=grpc_port, rest_port=rest_port, timeout=timeout
        ) as client:
            start.wait()
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline and not stop.is_set():
                t = time.perf_counter()
                try:
                    pred = client.predict(image)
                except Exception as exc:  # counted, never raised: the run must finish
                    with lock:
                        result.errors.append(f"{protocol}: {type(exc).__name__}: {exc}")
                    continue
                ms = (time.perf_counter() - t) * 1e3
                with lock:
                    result.latencies_ms.append(ms)
                    result.faces_seen.add(len(pred.faces))

    t0 = time.monotonic()
    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(clients)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    result.seconds = time.monotonic() - t0
    return result


def markdown(doc: dict) -> str:
    s = doc["result"]
    return (
        f"# Load test: {s['clients']} clients for {doc['seconds']:g} s\n\n"
        f"{doc['machine']}; models: {doc['models']}; `{doc['command']}`\n\n"
        "| clients | requests | errors | req/s | p50 ms | p95 ms | p99 ms | max ms |\n"
        "|---|---|---|---|---|---|---|---|\n"
        f"| {s['clients']} | {s['requests']} | {s['errors']} | {s['requests_per_s']} "
        f"| {s['p50_ms']} | {s['p95_ms']} | {s['p99_ms']} | {s['max_ms']} |\n"
    )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_server_args(p)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--out", type=Path, default=BENCH / "results")
    args = p.parse_args()

    with server_endpoint(args) as (host, grpc_port, rest_port):
        result = run_load(
            host=host,
            grpc_port=grpc_port,
            rest_port=rest_port,
            image=one_face_jpeg(),
            seconds=args.seconds,
            clients=args.clients,
        )
    doc = {
        "command": "python bench/load_test.py " + " ".join(sys.argv[1:]),
        "machine": machine_info()["summary"],
        "models": "running server" if args.no_server else str(args.models),
        "seconds": args.seconds,
        "result": result.summary(),
    }
    write_results(args.out, "load_test", doc, markdown)
    return 1 if result.errors else 0


if __name__ == "__main__":
    sys.exit(main())
