"""Time per photo of each rung of the model ladder: a full prediction (YuNet, both models over gRPC to the
embedded server, JPEG decode included) with the fast models and with the accurate ones.

    .venv/bin/python bench/ladder_photos.py --out bench/results/int8          # serves models_export/
    .venv/bin/python bench/ladder_photos.py --no-server --grpc-port 8500 -n 50

The photos are the ones `bench/vs_fer.py` uses (`photos.py`: 4, 6 and 12 real faces, 640x480). The variants
take turns call by call, so both see the same machine load; p50 of `-n` calls per photo and variant after
`--warmup` calls. Writes ladder_photos.json and .md, with the machine (CPU model and flags).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from bench_common import add_server_args, server_endpoint, write_results
from emotion_ai import ClientOptions, EmotionClient
from emotion_ai.spec import VARIANTS
from machine import machine_info
from photos import four_face_jpeg, six_face_jpeg, twelve_face_jpeg

PHOTOS = {"4 faces": four_face_jpeg, "6 faces": six_face_jpeg, "12 faces": twelve_face_jpeg}


def measure(clients: dict[str, EmotionClient], jpeg: bytes, n: int, warmup: int) -> dict[str, dict]:
    """p50 / p95 ms, faces found and served versions per variant, the variants alternating call by call."""
    for client in clients.values():
        for _ in range(warmup):
            client.predict(jpeg)
    samples: dict[str, list[float]] = {v: [] for v in clients}
    last = {}
    for _ in range(n):
        for variant, client in clients.items():
            t = time.perf_counter()
            last[variant] = client.predict(jpeg)
            samples[variant].append((time.perf_counter() - t) * 1e3)
    return {v: {"p50_ms": round(statistics.median(s), 1), "p95_ms": round(sorted(s)[int(0.95 * (len(s) - 1))], 1),
                "faces": len(last[v].faces), "models": dict(last[v].models)}
            for v, s in samples.items()}


def markdown(doc: dict) -> str:
    variants = list(doc["variants"])
    lines = ["# Time per photo of each model-ladder rung", "", f"Command: `{doc['command']}`  ",
             f"Machine: {doc['machine']['summary']}  ",
             f"Models: {'; '.join(f'{v}: {m}' for v, m in doc['variants'].items())}", "",
             "p50 (p95) ms per full prediction over gRPC to the embedded server, JPEG decode included; "
             f"{doc['n']} calls per photo and variant, the variants alternating.", "",
             "| photo | " + " | ".join(variants) + " | faces found |", "|---|" + "---:|" * len(variants) + "---|"]
    for photo, row in doc["photos"].items():
        cells = [f"{row[v]['p50_ms']} ({row[v]['p95_ms']})" for v in variants]
        lines.append(f"| {photo} | " + " | ".join(cells) + " | " + " / ".join(str(row[v]["faces"]) for v in variants)
                     + " |")
    return "\n".join([*lines, ""])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_server_args(p)
    p.add_argument("-n", type=int, default=20, help="timed calls per photo and variant")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--out", type=Path, default=Path("bench/results"))
    args = p.parse_args()
    machine = machine_info()
    with server_endpoint(args) as (host, grpc_port, _):
        clients = {v: EmotionClient(options=ClientOptions(host=host, protocol="grpc", grpc_port=grpc_port, timeout=60,
                                                          variant=v)) for v in VARIANTS}
        try:
            photos = {name: measure(clients, make(), args.n, args.warmup) for name, make in PHOTOS.items()}
        finally:
            for client in clients.values():
                client.close()
    first = next(iter(photos.values()))
    doc = {"command": "python bench/ladder_photos.py " + " ".join(sys.argv[1:]), "machine": machine,
           "n": args.n, "variants": {v: ", ".join(first[v]["models"].values()) for v in VARIANTS}, "photos": photos}
    write_results(args.out, "ladder_photos", doc, markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
