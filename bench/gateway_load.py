"""Load on the gateway: concurrent HTTP clients for a while, with and without a model-server restart.

    .venv/bin/python bench/gateway_load.py                     # 16 clients, 60 s per phase
    .venv/bin/python bench/gateway_load.py --clients 4 --seconds 10

Starts two `emotion-ai-serve` replicas of the committed models on loopback and `emotion-ai gateway` (uvicorn)
in front of both (`--endpoint` twice: client-side balancing and failover, as on Kubernetes), then runs
--clients threads, each posting the 4-face photo to `POST /v1/faces:analyze` back to back (a `requests`
session per thread, 60 s timeout; a 503 is retried after its Retry-After), in two phases of --seconds each:
(1) nothing restarted; (2) replica 1 killed (SIGKILL) a third of the way in and started again on the same
ports. Counts every answer by status. The bar: no 5xx other than the documented 503 (the concurrency
limit's back-pressure, or no model server) and no failed connection, in either phase. The gateway's resident
memory (`process_resident_memory_bytes` from its /metrics) after the warm-up and after each phase shows whether
it stays bounded. Writes bench/results/gateway/gateway_load.json/.md (`--out` elsewhere).
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import requests
from bench_common import write_results
from gateway_support import gateway

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent


def run_phase(url: str, body: bytes, clients: int, seconds: float,
              during: Callable[[threading.Event], None] | None = None) -> dict:
    """Answers by status, latencies of the 200s and problems seen, for `clients` threads over `seconds`;
    `during(stop_event)` runs alongside (the restart)."""
    stop = threading.Event()
    lock = threading.Lock()
    statuses: collections.Counter[str] = collections.Counter()
    ok_ms: list[float] = []
    problems: collections.Counter[str] = collections.Counter()

    def worker() -> None:
        session = requests.Session()
        while not stop.is_set():
            t = time.perf_counter()
            try:
                reply = session.post(url + "/v1/faces:analyze", data=body, timeout=60,
                                     headers={"Content-Type": "image/jpeg"})
                code = str(reply.status_code)
            except requests.RequestException as exc:
                code, reply = f"error {type(exc).__name__}", None
            ms = (time.perf_counter() - t) * 1e3
            with lock:
                statuses[code] += 1
                if code == "200":
                    ok_ms.append(ms)
                elif reply is not None and reply.headers.get("content-type", "").startswith("application/problem"):
                    problems[f"{code} {reply.json().get('type', '').rsplit('/', 1)[-1]}"] += 1
            if code == "503" and reply is not None:
                stop.wait(float(reply.headers.get("Retry-After", "1")))

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(clients)]
    started = time.monotonic()
    for t in threads:
        t.start()
    side = threading.Thread(target=during, args=(stop,), daemon=True) if during else None
    if side:
        side.start()
    stop.wait(seconds)
    stop.set()
    for t in threads:
        t.join(timeout=90)
    if side:
        side.join(timeout=120)
    wall = time.monotonic() - started
    ok_ms.sort()
    return {"seconds": round(wall, 1), "statuses": dict(statuses), "problems": dict(problems),
            "ok_per_s": round(len(ok_ms) / wall, 2),
            "p50_ms": round(ok_ms[len(ok_ms) // 2], 1) if ok_ms else None,
            "p99_ms": round(ok_ms[min(len(ok_ms) - 1, int(len(ok_ms) * 0.99))], 1) if ok_ms else None,
            "undocumented_5xx": sum(n for c, n in statuses.items() if c.startswith("5") and c != "503")
            + sum(n for c, n in statuses.items() if c.startswith("error"))}


def resident_mb(url: str) -> float | None:
    """The gateway's resident memory in MB, from its Prometheus metrics (None where the platform has none)."""
    for line in requests.get(url + "/metrics", timeout=10).text.splitlines():
        if line.startswith("process_resident_memory_bytes "):
            return round(float(line.split()[1]) / 2**20, 1)
    return None


def markdown(doc: dict) -> str:
    """The phases as a markdown table."""
    lines = ["# Gateway under load, with and without a model-server restart", "",
             f"Command: `{doc['command']}`  ", f"Machine: {doc['machine']['summary']}  ",
             f"Setup: {doc['setup']}  ", f"Restart: {doc['restart']}", "",
             "| phase | answers by status | problems (status type) | 200/s | p50 / p99 ms (200s) "
             "| undocumented 5xx or errors |",
             "|---|---|---|---:|---:|---:|"]
    for name, p in doc["phases"].items():
        statuses = ", ".join(f"{c}: {n}" for c, n in sorted(p["statuses"].items()))
        problems = ", ".join(f"{c}: {n}" for c, n in sorted(p["problems"].items())) or "-"
        lines.append(f"| {name} | {statuses} | {problems} | {p['ok_per_s']} | {p['p50_ms']} / {p['p99_ms']} | "
                     f"{p['undocumented_5xx']} |")
    rss = doc.get("gateway_rss_mb", {})
    if rss:
        lines += ["", "Gateway resident memory (MB): " + ", ".join(f"{k} {v}" for k, v in rss.items()) + "."]
    lines += ["", f"Bar (no 5xx but the documented 503, no failed connection, in either phase): "
              f"**{'met' if doc['met'] else 'NOT met'}**."]
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--seconds", type=float, default=60.0, help="length of each phase")
    p.add_argument("--max-concurrency", type=int, default=0,
                   help="the gateway's --max-concurrency (default: its own, 8; beyond it, clients get 503)")
    p.add_argument("--models", type=Path, default=REPO / "models_export")
    p.add_argument("--out", type=Path, default=BENCH / "results" / "gateway")
    args = p.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    import photos
    from emotion_ai_serving.local_server import LocalServer
    from machine import machine_info

    machine = machine_info()
    body = photos.four_face_jpeg()
    restart: dict = {}
    with LocalServer(args.models) as one, LocalServer(args.models) as two:
        flags = ["--endpoint", f"127.0.0.1:{one.grpc_port}", "--endpoint", f"127.0.0.1:{two.grpc_port}"]
        if args.max_concurrency:
            flags += ["--max-concurrency", str(args.max_concurrency)]
        with gateway(one.grpc_port, *flags) as url:
            for _ in range(3):
                requests.post(url + "/v1/faces:analyze", data=body, timeout=60, headers={"Content-Type": "image/jpeg"})
            rss = {"after the warm-up": resident_mb(url)}

            def bounce(stop: threading.Event) -> None:
                if stop.wait(args.seconds / 3):
                    return
                t = time.monotonic()
                one.kill()
                restart["killed_at_s"] = round(args.seconds / 3, 1)
                one.start()  # same ports; waits until its models are AVAILABLE
                restart["back_after_s"] = round(time.monotonic() - t, 1)

            phases = {"1: nothing restarted": run_phase(url, body, args.clients, args.seconds)}
            rss["after phase 1"] = resident_mb(url)
            phases["2: replica 1 killed and restarted"] = run_phase(url, body, args.clients, args.seconds, bounce)
            rss["after phase 2"] = resident_mb(url)
    doc = {
        "command": "python bench/gateway_load.py " + " ".join(sys.argv[1:]), "machine": machine,
        "setup": f"{args.clients} clients, the 4-face JPEG, {args.seconds:g} s per phase; two emotion-ai-serve "
                 "replicas of models_export/ behind one `emotion-ai gateway` (--max-concurrency "
                 f"{args.max_concurrency or 'default, 8'})",
        "restart": (f"replica 1 SIGKILLed {restart.get('killed_at_s')} s into phase 2 and AVAILABLE again "
                    f"{restart.get('back_after_s')} s later" if restart else "did not happen"),
        "phases": phases,
        "gateway_rss_mb": rss,
        "met": all(p["undocumented_5xx"] == 0 for p in phases.values()),
    }
    write_results(args.out, "gateway_load", doc, markdown)
    return 0 if doc["met"] else 1


if __name__ == "__main__":
    sys.exit(main())
