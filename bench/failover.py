"""Client-side load balancing and failover: several embedded servers, one killed and restarted mid-run.

    .venv/bin/python bench/failover.py                         # 3 replicas of models_export/, gRPC, 30 s
    .venv/bin/python bench/failover.py --protocol rest --seconds 20 --models /tmp/tiny-models

Starts --replicas `emotion-ai-serve` processes on loopback, points one `EmotionClient(endpoints=[...])`
at all of them and runs --workers threads of full predictions (detection, keypoints and emotion) on a
small face photo in three phases of --seconds / 3 each: all replicas up; replica 1 killed (SIGKILL, no
graceful shutdown); replica 1 started again on the same ports (the phase starts once replica 1 answers
calls again, at most 30 s after its models are AVAILABLE; the time in between also runs under load).
Reports requests, failed requests, p50 and p99 latency, how long the restarted replica took to be used
again, and each endpoint's answered and failed-over calls, and those answered after the restart.
Writes bench/results/failover.json/.md; exit code 1 when any request failed.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path

import numpy as np
from bench_common import write_results
from emotion_ai import EmotionClient
from emotion_ai.errors import EmotionAIError
from emotion_ai_serving.local_server import LocalServer

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent


def face_photo() -> np.ndarray:
    """The astronaut's head and shoulders (scikit-image), small enough that detection is cheap."""
    import cv2
    from skimage import data

    rgb = data.astronaut()[0:260, 110:330]
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)


def _seconds(value: float | None) -> str:
    return "never (within 30 s)" if value is None else f"{value:.1f} s"


def _back_in_rotation(transport, endpoint: str, before: dict, limit: float) -> float | None:
    """Seconds until the restarted endpoint answers a call again (its cooldown and gRPC's reconnect
    backoff have passed), or None after `limit` seconds."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        if transport.counts()[endpoint]["ok"] > before[endpoint]["ok"]:
            return time.monotonic() - t0
        time.sleep(0.05)
    return None


def markdown(doc: dict) -> str:
    lines = ["# Failover: client-side balancing over replicas, one killed and restarted", "",
             f"Command: `{doc['command']}`", "",
             f"{doc['replicas']} replicas, {doc['protocol']}, {doc['workers']} workers, {doc['seconds']} s: "
             f"**{doc['requests']} requests, {doc['failed']} failed**, p50 {doc['p50_ms']:.0f} ms, "
             f"p99 {doc['p99_ms']:.0f} ms. Replica 1 killed at {doc['killed_at_s']:.1f} s, "
             f"AVAILABLE again at {doc['restarted_at_s']:.1f} s, answering calls again "
             f"{_seconds(doc['back_in_rotation_s'])} later.", "",
             "| endpoint | calls answered | calls failed over | answered after the restart |",
             "|---|---:|---:|---:|"]
    for name, c in doc["endpoints"].items():
        lines.append(f"| {name} | {c['ok']} | {c['failed']} | {c['ok_after_restart']} |")
    if doc["errors"]:
        lines += ["", "Errors:", *[f"- {e}" for e in doc["errors"][:10]]]
    return "\n".join([*lines, ""])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", type=Path, default=REPO / "models_export")
    p.add_argument("--replicas", type=int, default=3)
    p.add_argument("--protocol", choices=("grpc", "rest"), default="grpc")
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--timeout", type=float, default=10.0, help="deadline of each call")
    p.add_argument("--out", type=Path, default=BENCH / "results")
    args = p.parse_args()
    if args.replicas < 2:
        p.error("--replicas must be at least 2 (one is killed)")

    servers = [LocalServer(args.models) for _ in range(args.replicas)]
    image = face_photo()
    latencies: list[float] = []
    errors: list[str] = []
    stop = threading.Event()
    try:
        for s in servers:
            s.start()
        ports = [s.grpc_port if args.protocol == "grpc" else s.rest_port for s in servers]
        endpoints = tuple(f"127.0.0.1:{port}" for port in ports)
        with EmotionClient(protocol=args.protocol, endpoints=endpoints, timeout=args.timeout) as client:
            if not client.predict(image).faces:
                raise RuntimeError("no face found in the bench photo")

            def work() -> None:
                while not stop.is_set():
                    t0 = time.perf_counter()
                    try:
                        client.predict(image)
                        latencies.append(time.perf_counter() - t0)
                    except EmotionAIError as exc:
                        errors.append(f"{type(exc).__name__}: {exc}")

            threads = [threading.Thread(target=work, daemon=True) for _ in range(args.workers)]
            start = time.monotonic()
            for t in threads:
                t.start()
            phase = args.seconds / 3
            time.sleep(phase)
            servers[1].kill()
            killed_at = time.monotonic() - start
            time.sleep(phase)
            servers[1].start()  # same ports; returns once both models are AVAILABLE
            restarted_at = time.monotonic() - start
            before = client.transport.counts()
            back = _back_in_rotation(client.transport, endpoints[1], before, limit=30.0)
            time.sleep(phase)
            stop.set()
            for t in threads:
                t.join(timeout=args.timeout + 5)
            after = client.transport.counts()
    finally:
        stop.set()
        for s in servers:
            s.close()
    ms = np.array(latencies) * 1e3
    doc = {
        "command": "python bench/failover.py " + " ".join(sys.argv[1:]),
        "replicas": args.replicas, "protocol": args.protocol, "workers": args.workers, "seconds": args.seconds,
        "requests": len(latencies) + len(errors), "failed": len(errors),
        "p50_ms": float(np.percentile(ms, 50)) if ms.size else 0.0,
        "p99_ms": float(np.percentile(ms, 99)) if ms.size else 0.0,
        "killed_at_s": killed_at, "restarted_at_s": restarted_at, "back_in_rotation_s": back,
        "endpoints": {name: after[name] | {"ok_after_restart": after[name]["ok"] - before[name]["ok"]}
                      for name in after},
        "errors": errors[:50],
    }
    write_results(args.out, "failover", doc, markdown)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
