"""End-to-end client latency per 640x480 one-face image over gRPC and REST (p50/p95, stage shares).

    .venv/bin/python bench/client_bench.py             # serves models_export/ with emotion-ai-serve
    .venv/bin/python bench/client_bench.py --models DIR -n 200
    .venv/bin/python bench/client_bench.py --no-server --grpc-port 8500 --rest-port 8501

Each request is the JPEG bytes of skimage's astronaut photo placed on a 640x480 canvas (one face),
sent through `EmotionClient.predict`: decode, Haar detection, crops, then the keypoints and emotion
requests in parallel. Shares: detect, preprocess (crops + resize), network+inference (wall time of
the two concurrent model calls and merging = total - decode - detect - preprocess), decode.
Writes bench/results/client_bench.json and .md.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
from bench_common import add_server_args, server_endpoint, write_results
from emotion_ai import EmotionClient
from photos import one_face_jpeg

REPO = Path(__file__).resolve().parents[1]


def run(
    *, protocol: str, host: str, grpc_port: int, rest_port: int, image: bytes, n: int, warmup: int
) -> dict:
    with EmotionClient(
        host=host, protocol=protocol, grpc_port=grpc_port, rest_port=rest_port, timeout=30
    ) as c:
        for _ in range(warmup):
            c.predict(image)
        rows = []
        for _ in range(n):
            t = time.perf_counter()
            pred = c.predict(image)
            wall = (time.perf_counter() - t) * 1e3
            assert len(pred.faces) == 1, "benchmark image must give exactly one face"
            tm = pred.timings_ms
            net = tm["total"] - tm["decode"] - tm["detect"] - tm["preprocess"]
            rows.append([wall, tm["decode"], tm["detect"], tm["preprocess"], net])
    a = np.array(rows)
    total = a[:, 0]
    means = a.mean(axis=0)
    return {
        "protocol": protocol,
        "n": n,
        "p50_ms": round(float(np.percentile(total, 50)), 2),
        "p95_ms": round(float(np.percentile(total, 95)), 2),
        "mean_ms": round(float(means[0]), 2),
        "stage_mean_ms": {
            k: round(float(v), 3)
            for k, v in zip(
                ("decode", "detect", "preprocess", "network_inference"), means[1:], strict=True
            )
        },
        "stage_share": {
            k: round(float(v / means[1:].sum()), 3)
            for k, v in zip(
                ("decode", "detect", "preprocess", "network_inference"), means[1:], strict=True
            )
        },
    }


def markdown(doc: dict) -> str:
    lines = [
        "# Client end-to-end latency (640x480 JPEG, one face)",
        "",
        f"{doc['machine']}; models: {doc['models']}; {doc['n']} requests per protocol after "
        f"{doc['warmup']} warm-up; `{doc['command']}`",
        "",
        "| protocol | p50 ms | p95 ms | decode | detect | preprocess | network+inference |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in doc["results"]:
        s = r["stage_share"]
        lines.append(
            f"| {r['protocol']} | {r['p50_ms']} | {r['p95_ms']} | {s['decode']:.0%} "
            f"| {s['detect']:.0%} | {s['preprocess']:.0%} | {s['network_inference']:.0%} |"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_server_args(p)
    p.add_argument("-n", type=int, default=100, help="timed requests per protocol")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = p.parse_args()

    image = one_face_jpeg()
    with server_endpoint(args) as (host, grpc_port, rest_port):
        results = [
            run(
                protocol=pr,
                host=host,
                grpc_port=grpc_port,
                rest_port=rest_port,
                image=image,
                n=args.n,
                warmup=args.warmup,
            )
            for pr in ("grpc", "rest")
        ]
    doc = {
        "command": "python bench/client_bench.py " + " ".join(sys.argv[1:]),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, py{platform.python_version()}",
        "models": "running server" if args.no_server else str(args.models),
        "n": args.n,
        "warmup": args.warmup,
        "results": results,
    }
    write_results(args.out, "client_bench", doc, markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
