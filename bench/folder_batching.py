"""How many images' faces `emotion-ai predict DIR` should send in one request (`--batch-images N`).

    .venv/bin/python bench/folder_batching.py                      # N = 1 2 4 8, 200 photos
    .venv/bin/python bench/folder_batching.py --sizes 1 4 --photos 80

The folder of bench/vs_fer.py (the 4 photos with 1, 4, 6 and 12 faces in turn, mirrored, brightened and
scaled: 200 JPEGs), `emotion-ai predict DIR --json --batch-images N` over gRPC to the embedded server with
the committed models, end to end (process start included). Two rounds, the sizes in turn and then in
reverse order; each size's figure is the better of its two. Checks that every size finds the same faces per
file. Writes bench/results/folder_batching/folder_batching.json and .md (`--out` elsewhere).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from bench_common import add_server_args, server_endpoint, write_results

BENCH = Path(__file__).resolve().parent


def markdown(doc: dict) -> str:
    """The result table and context as markdown."""
    base = doc["runs"][0]["photos_per_s"]
    lines = ["# Folder throughput by images per request (`emotion-ai predict DIR --batch-images N`)", "",
             f"Command: `{doc['command']}`  ", f"Machine: {doc['machine']['summary']}  ",
             f"Folder: {doc['photos']} JPEGs, {doc['faces']} faces; models: {doc['models']}; load average "
             f"{doc['load_avg']['start']} at start, {doc['load_avg']['end']} at the end.", "",
             "| --batch-images | photos/s (best of 2) | both runs | vs 1 | same faces as N=1 | exit |",
             "|---:|---:|---|---:|---|---|"]
    for r in doc["runs"]:
        lines.append(f"| {r['size']} | {r['photos_per_s']:.1f} | {' / '.join(f'{x:.1f}' for x in r['both'])} | "
                     f"{r['photos_per_s'] / base:.2f}x | {'yes' if r['same_faces'] else 'NO'} | {r['exit_codes']} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_server_args(p)
    p.add_argument("--sizes", type=int, nargs="+", default=[1, 2, 4, 8], help="--batch-images values")
    p.add_argument("--photos", type=int, default=200, help="JPEGs in the folder")
    p.add_argument("--out", type=Path, default=BENCH / "results" / "folder_batching")
    args = p.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    import photos
    from emotion_ai import EmotionClient
    from machine import machine_info
    from vs_fer import PHOTOS, described_models, our_cli_folder, write_folder

    machine = machine_info()
    tmp = Path(tempfile.mkdtemp(prefix="emotion-ai-folder-"))
    try:
        jpegs = [getattr(photos, builder)() for _, builder, _ in PHOTOS]
        paths = write_folder(tmp / "folder", jpegs, args.photos)
        with server_endpoint(args) as (host, grpc_port, _):
            with EmotionClient(host, protocol="grpc", grpc_port=grpc_port, timeout=120) as client:
                client.wait_until_available(60)
                models = described_models(client, None if args.no_server else args.models)
            runs: dict[int, list[dict]] = {n: [] for n in args.sizes}
            for order in (args.sizes, list(reversed(args.sizes))):
                for n in order:
                    run = our_cli_folder(host, grpc_port, tmp / "folder", paths, ["--batch-images", str(n)])
                    print(f"--batch-images {n}: {run['photos_per_s']} photos/s", file=sys.stderr, flush=True)
                    runs[n].append(run)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    reference = runs[args.sizes[0]][0]["faces"]
    doc = {
        "command": "python bench/folder_batching.py " + " ".join(sys.argv[1:]),
        "machine": machine, "photos": args.photos, "faces": sum(reference), "models": models,
        "load_avg": {"start": (machine["load_avg_at_start"] or [None])[0], "end": round(os.getloadavg()[0], 2)},
        "runs": [{"size": n, "photos_per_s": max(r["photos_per_s"] for r in rs),
                  "both": [r["photos_per_s"] for r in rs], "exit_codes": [r["exit_code"] for r in rs],
                  "same_faces": all(r["faces"] == reference for r in rs), "problems": rs[0]["problems"][:5]}
                 for n, rs in runs.items()],
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    write_results(args.out, "folder_batching", doc, markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
