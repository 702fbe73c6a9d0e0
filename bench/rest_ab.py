"""The embedded server of this tree against the one of an earlier commit, on large REST predict requests.

    .venv/bin/python bench/rest_ab.py --rev 35ec0b8 --faces 8 --requests 40

The earlier serving package (`serving/src/emotion_ai_serving`) is extracted with `git archive REV` and put
first on the second server's PYTHONPATH; both servers load the same models and get the same request
bodies (keypoints, `--faces` random 96×96 faces in the columnar JSON form the client sends), the calls
alternating between them so that load changes touch both alike. Reports p50/p95/mean/max ms per call.
Writes bench/results/rest_ab.json and .md.
"""

from __future__ import annotations

import argparse
import http.client
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from bench_common import extract_at_rev, write_results
from emotion_ai import spec
from emotion_ai.rest_transport import predict_body
from emotion_ai.transport import ModelRef
from emotion_ai_serving.local_server import LocalServer
from machine import machine_info

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
PACKAGE = "serving/src/emotion_ai_serving"


def timed_post(port: int, body: bytes) -> float:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    start = time.perf_counter()
    conn.request("POST", f"/v1/models/{spec.KEYPOINTS_MODEL}:predict", body=body,
                 headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    response.read()
    seconds = time.perf_counter() - start
    conn.close()
    if response.status != 200:
        raise RuntimeError(f"HTTP {response.status} from port {port}")
    return seconds


def markdown(doc: dict) -> str:
    lines = [f"# REST predict, this tree against {doc['rev']}", "",
             f"Command: `{doc['command']}`; {doc['machine']}", "",
             f"Keypoints requests of {doc['faces']} faces ({doc['body_kB']} kB of JSON), {doc['requests']} per "
             "server, alternating.", "",
             "| server | p50 ms | p95 ms | mean ms | max ms |", "|---|---:|---:|---:|---:|"]
    for r in doc["results"]:
        lines.append(f"| {r['server']} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} | {r['mean_ms']:.1f} | "
                     f"{r['max_ms']:.1f} |")
    return "\n".join([*lines, ""])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rev", required=True, help="git revision whose serving package is compared")
    p.add_argument("--faces", type=int, default=8)
    p.add_argument("--requests", type=int, default=40)
    p.add_argument("--models", type=Path, default=REPO / "models_export")
    p.add_argument("--out", type=Path, default=BENCH / "results")
    args = p.parse_args()

    faces = np.random.default_rng(0).integers(0, 256, (args.faces, 96, 96, 1), dtype=np.uint8)
    body = predict_body(ModelRef(spec.KEYPOINTS_MODEL), {spec.INPUT_KEY: faces})
    seconds: dict[str, list[float]] = {"this tree": [], args.rev: []}
    with tempfile.TemporaryDirectory() as tmp:
        old_src = extract_at_rev(args.rev, PACKAGE, Path(tmp)).parent  # serving/src, the package alone
        saved = os.environ.get("PYTHONPATH")
        with LocalServer(args.models) as ours:
            os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(old_src), saved]))
            try:
                theirs = LocalServer(args.models).start()
            finally:
                os.environ.pop("PYTHONPATH") if saved is None else os.environ.update(PYTHONPATH=saved)
            try:
                for _ in range(3):  # warm-up
                    timed_post(ours.rest_port, body), timed_post(theirs.rest_port, body)
                for _ in range(args.requests):
                    seconds["this tree"].append(timed_post(ours.rest_port, body))
                    seconds[args.rev].append(timed_post(theirs.rest_port, body))
            finally:
                theirs.close()
    results = [{"server": name, "p50_ms": float(np.median(s)) * 1e3, "p95_ms": float(np.percentile(s, 95)) * 1e3,
                "mean_ms": float(np.mean(s)) * 1e3, "max_ms": float(np.max(s)) * 1e3} for name, s in seconds.items()]
    doc = {"command": "python bench/rest_ab.py " + " ".join(sys.argv[1:]), "machine": machine_info()["summary"],
           "rev": args.rev, "faces": args.faces, "requests": args.requests, "body_kB": round(len(body) / 1e3),
           "results": results}
    write_results(args.out, "rest_ab", doc, markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
