"""What the gateway costs: `POST /v1/faces:analyze` vs `EmotionClient.predict` on the same JPEG bytes, one run.

    .venv/bin/python bench/gateway_bench.py                     # -> bench/results/gateway/gateway_bench.{json,md}
    .venv/bin/python bench/gateway_bench.py --quick             # fewer calls, shorter throughput runs
    .venv/bin/python bench/gateway_bench.py -n 60 --clients 8 --seconds 30 --out DIR

The embedded server (the committed models) and `emotion-ai gateway` (uvicorn, a subprocess) on loopback; the
gateway reaches the models over gRPC exactly as the in-process client does, with the same defaults.

* latency: for the 4- and 6-face photos of bench/photos.py (640x480 JPEG), `-n` calls per side after a warm-up,
  alternating call by call: the gateway (`requests`, one keep-alive session, `Content-Type: image/jpeg`, JSON
  back and parsed) and `EmotionClient(protocol="grpc").predict(jpeg_bytes)` in this process. p50 and p95 of the
  wall time per call; the ratio gateway p50 / client p50. Bar: <= 1.15x on each photo, with the same faces found.
* throughput: `--clients` threads (8) for `--seconds` each, every thread with its own keep-alive session posting
  the two photos in turn; photos/s = answers / wall time (non-200 answers counted apart). For scale, the same
  with `--clients` threads each calling its own `EmotionClient.predict` in this process.

Stamped with the CPU model and flags (machine.py); the CPU is shared by this process, the gateway and the model
server, so on a small machine throughput is bound by the CPU, not by the gateway.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import threading
import time
from pathlib import Path

import numpy as np
import requests
from bench_common import add_server_args, server_endpoint, write_results

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
#: (label, bench/photos.py builder, faces in it)
PHOTOS = (("4 faces (astronaut crops)", "four_face_jpeg", 4), ("6 faces (astronauts on rocket)", "six_face_jpeg", 6))
BAR = 1.15


def _stats(ms: list[float]) -> dict:
    a = np.array(ms)
    return {"n": len(ms), "p50_ms": round(float(np.percentile(a, 50)), 1),
            "p95_ms": round(float(np.percentile(a, 95)), 1), "mean_ms": round(float(a.mean()), 1)}


def latency(url: str, client, jpeg: bytes, faces: int, n: int, warmup: int) -> dict:
    """p50/p95 of the gateway and the in-process client on `jpeg`, calls alternating."""
    session = requests.Session()
    headers = {"Content-Type": "image/jpeg", "Accept": "application/json"}

    pipeline: dict[str, list[float]] = {"gateway": [], "client": []}  # timings_ms.total: decode to merge
    stages: dict[str, list[dict]] = {"gateway": [], "client": []}

    def via_gateway() -> int:
        r = session.post(url + "/v1/faces:analyze", data=jpeg, headers=headers, timeout=60)
        r.raise_for_status()
        doc = r.json()
        pipeline["gateway"].append(doc["timings_ms"]["total"])
        stages["gateway"].append(doc["timings_ms"])
        return len(doc["faces"])

    def direct() -> int:
        prediction = client.predict(jpeg)
        pipeline["client"].append(prediction.timings_ms["total"])
        stages["client"].append(prediction.timings_ms)
        return len(prediction.faces)

    for _ in range(warmup):
        via_gateway()
        direct()
    for values in (*pipeline.values(), *stages.values()):
        values.clear()
    times: dict[str, list[float]] = {"gateway": [], "client": []}
    found: dict[str, set[int]] = {"gateway": set(), "client": set()}
    for i in range(n):
        order = (("gateway", via_gateway), ("client", direct))
        if i % 2:
            order = order[::-1]
        for side, call in order:
            t = time.perf_counter()
            found[side].add(call())
            times[side].append((time.perf_counter() - t) * 1e3)
    session.close()
    g, c = _stats(times["gateway"]), _stats(times["client"])
    ratio = g["p50_ms"] / c["p50_ms"]
    same = found["gateway"] == found["client"] == {faces}
    return {"gateway": g, "client": c, "ratio_p50": round(ratio, 3),
            "overhead_p50_ms": round(g["p50_ms"] - c["p50_ms"], 1),
            "pipeline_p50_ms": {side: round(float(np.median(v)), 1) for side, v in pipeline.items()},
            "stages_p50_ms": {side: {k: round(float(np.median([t[k] for t in v])), 1) for k in v[0]}
                              for side, v in stages.items()},
            "faces_gateway": sorted(found["gateway"]), "faces_client": sorted(found["client"]),
            "bar_met": bool(ratio <= BAR and same)}


def throughput(make_call, jpegs: list[bytes], clients: int, seconds: float) -> dict:
    """`clients` threads, each with its own `make_call()` -> call(jpeg) -> ok, for `seconds`; photos/s."""
    ok = [0] * clients
    failed = [0] * clients
    start = threading.Barrier(clients + 1)
    stop = threading.Event()

    def work(k: int) -> None:
        call, close = make_call()
        try:
            start.wait()
            i = k
            while not stop.is_set():
                if call(jpegs[i % len(jpegs)]):
                    ok[k] += 1
                else:
                    failed[k] += 1
                i += 1
        finally:
            close()

    threads = [threading.Thread(target=work, args=(k,), daemon=True) for k in range(clients)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join(timeout=120)
    wall = time.perf_counter() - t0  # to the last answer of calls started before the stop
    return {"clients": clients, "seconds": round(wall, 2), "answers": sum(ok), "failed": sum(failed),
            "photos_per_s": round(sum(ok) / wall, 2)}


def markdown(doc: dict) -> str:
    quick = " (quick)" if doc["quick"] else ""
    lines = [f"# Gateway overhead: `POST /v1/faces:analyze` vs `EmotionClient.predict`{quick}", "",
             f"Command: `{doc['command']}`  ", f"Machine: {doc['machine']['summary']}  ",
             f"Models: {doc['models']}; gateway `{doc['gateway_command']}` (uvicorn) on loopback, gRPC to the embedded "
             "server; the client in-process, same defaults  ",
             f"Load average {doc['load_avg']['start']} at start, {doc['load_avg']['end']} at the end.", "",
             f"## Latency ({doc['latency'][0]['gateway']['n']} calls per side after {doc['warmup']} warm-up, "
             "alternating call by call)", "",
             "| photo (640x480 JPEG) | gateway p50 | client p50 | ratio | overhead | gateway p95 | client p95 "
             f"| pipeline p50 gateway / client | faces | bar <= {BAR}x |",
             "|---|---:|---:|---:|---:|---:|---:|---|---|---|"]
    for r in doc["latency"]:
        g, c = r["gateway"], r["client"]
        lines.append(f"| {r['photo']} | {g['p50_ms']} ms | {c['p50_ms']} ms | {r['ratio_p50']:.2f}x | "
                     f"{r['overhead_p50_ms']:+.1f} ms | {g['p95_ms']} ms | {c['p95_ms']} ms | "
                     f"{r['pipeline_p50_ms']['gateway']} / {r['pipeline_p50_ms']['client']} ms | "
                     f"{'/'.join(map(str, r['faces_gateway']))} / {'/'.join(map(str, r['faces_client']))} | "
                     f"{'met' if r['bar_met'] else 'NOT met'} |")
    stages = list(doc["latency"][0]["stages_p50_ms"]["client"])
    lines += ["", "Pipeline stages, p50 ms (`timings_ms`), gateway / client: the gateway's own client runs the same "
              "code in another process.", "", "| photo | " + " | ".join(stages) + " |",
              "|---|" + "---:|" * len(stages)]
    for r in doc["latency"]:
        g, c = r["stages_p50_ms"]["gateway"], r["stages_p50_ms"]["client"]
        lines.append(f"| {r['photo']} | " + " | ".join(f"{g[k]} / {c[k]}" for k in stages) + " |")
    t = doc["throughput"]
    lines += ["", f"## Throughput ({t['gateway']['clients']} concurrent clients, the two photos in turn)", "",
              "| side | photos/s | answers | failed | seconds |", "|---|---:|---:|---:|---:|"]
    for side, label in (("gateway", "gateway, HTTP (`requests`, a session per thread)"),
                        ("client", "`EmotionClient.predict`, a client per thread (in-process)")):
        s = t[side]
        lines.append(f"| {label} | {s['photos_per_s']} | {s['answers']} | {s['failed']} | {s['seconds']} |")
    lines += ["", "Wall time per call, as the caller sees it. Pipeline: the answer's own `timings_ms.total` (decode "
              "to merge, inside the gateway's or this process's client), so wall minus pipeline is the transport: "
              "HTTP and JSON for the gateway, nothing for the in-process client.", "",
              f"Bar (gateway p50 <= {BAR}x the client's on every photo, same faces): "
              f"**{'met' if doc['bar_met'] else 'not met'}**."]
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_server_args(p)
    p.add_argument("-n", type=int, default=0, help="timed calls per side per photo (default 40, --quick 10)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--clients", type=int, default=8, help="concurrent clients for the throughput runs")
    p.add_argument("--seconds", type=float, default=0, help="length of each throughput run (default 20, --quick 5)")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", type=Path, default=BENCH / "results" / "gateway")
    args = p.parse_args()
    n = args.n or (10 if args.quick else 40)
    seconds = args.seconds or (5.0 if args.quick else 20.0)

    import gateway_support
    import photos
    from emotion_ai import EmotionClient
    from emotion_ai.versions import latest_version
    from machine import machine_info

    machine = machine_info()
    print(machine["summary"], file=sys.stderr)
    jpegs = [getattr(photos, builder)() for _, builder, _ in PHOTOS]
    gateway_flags = ["--max-concurrency", str(max(8, args.clients))]
    with server_endpoint(args) as (host, grpc_port, _), gateway_support.gateway(grpc_port, *gateway_flags) as url:
        with EmotionClient(host=host, grpc_port=grpc_port, protocol="grpc", timeout=60) as client:
            rows = []
            for (label, _, faces), jpeg in zip(PHOTOS, jpegs, strict=True):
                print(f"latency: {label}", file=sys.stderr)
                rows.append({"photo": label, **latency(url, client, jpeg, faces, n, args.warmup)})

        def http_call():
            session = requests.Session()

            def call(jpeg: bytes) -> bool:
                r = session.post(url + "/v1/faces:analyze", data=jpeg, timeout=120,
                                 headers={"Content-Type": "image/jpeg", "Accept": "application/json"})
                if r.status_code == 200:
                    r.json()
                return r.status_code == 200
            return call, session.close

        def client_call():
            c = EmotionClient(host=host, grpc_port=grpc_port, protocol="grpc", timeout=120)
            return (lambda jpeg: bool(c.predict(jpeg).faces)), c.close

        print(f"throughput: {args.clients} HTTP clients, {seconds:.0f} s", file=sys.stderr)
        tput = {"gateway": throughput(http_call, jpegs, args.clients, seconds)}
        print(f"throughput: {args.clients} in-process clients, {seconds:.0f} s", file=sys.stderr)
        tput["client"] = throughput(client_call, jpegs, args.clients, seconds)
    models_root = args.models if not args.no_server else None
    models = (f"{models_root.name} (keypoints v{latest_version(models_root / 'keypoints').name}, "
              f"emotion v{latest_version(models_root / 'emotion').name})" if models_root
              else f"server at {host}:{grpc_port}")
    doc = {"command": shlex.join(["python", "bench/gateway_bench.py", *sys.argv[1:]]), "quick": args.quick,
           "machine": machine, "models": models, "warmup": args.warmup,
           "gateway_command": shlex.join(["emotion-ai", "gateway", "--grpc-port", "PORT", *gateway_flags]),
           "load_avg": {"start": machine["load_avg_at_start"][0] if machine["load_avg_at_start"] else None,
                        "end": round(os.getloadavg()[0], 2)},
           "latency": rows, "throughput": tput, "bar": BAR, "bar_met": all(r["bar_met"] for r in rows)}
    write_results(args.out, "gateway_bench", doc, markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
