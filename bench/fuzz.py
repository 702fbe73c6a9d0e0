"""Coverage-guided fuzzing (atheris / libFuzzer) of the two parsers that take untrusted bytes.

    .venv/bin/python bench/fuzz.py --seconds 300             # each target for 300 s
    .venv/bin/python bench/fuzz.py --target rest --seconds 60

Targets:
- `rest`: a REST predict body → parse_json_object → signature_name_of → predict_tensors_from_json
  against the real signatures' input specs (uint8 images of 96×96 and 48×48). Must give tensors or a
  `ServingError`; anything else, or an input taking over --timeout seconds, is a finding.
- `image`: bytes → emotion_ai.images.decode_bytes. Must give a BGR uint8 image or `InvalidImageError`.

Each target runs in its own process (libFuzzer runs once per process), seeded with a small corpus of
valid inputs made here. Crashing inputs are written to --artifacts; every one found becomes a
regression test (tests/quality/test_fuzz_regressions.py). Writes bench/results/fuzz.json/.md.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

BENCH = Path(__file__).resolve().parent
TARGETS = ("rest", "image")
MAX_LEN = {"rest": 4096, "image": 8192}


def rest_target(data: bytes) -> None:
    import numpy as np
    from emotion_ai import spec
    from emotion_ai_serving.errors import ServingError
    from emotion_ai_serving.json_tensor import (
        InputSpec,
        parse_json_object,
        predict_tensors_from_json,
        signature_name_of,
    )

    uint8 = InputSpec("uint8", np.uint8)
    for specs in ({spec.INPUT_KEY: uint8}, {spec.INPUT_KEY: uint8, "extra": InputSpec("float", np.float32)}):
        try:
            doc = parse_json_object(data)
            signature_name_of(doc)
            predict_tensors_from_json(doc, specs)
        except ServingError:
            pass


def image_target(data: bytes) -> None:
    from emotion_ai.errors import InvalidImageError
    from emotion_ai.images import decode_bytes

    try:
        image = decode_bytes(data, max_pixels=4_000_000)
    except InvalidImageError:
        return
    if image.dtype.name != "uint8" or image.ndim != 3 or image.shape[2] != 3:
        raise AssertionError(f"decode_bytes returned {image.dtype} {image.shape}")


def seed_corpus(target: str, folder: Path) -> None:
    """A few valid inputs to start from."""
    folder.mkdir(parents=True, exist_ok=True)
    if target == "rest":
        pixel_rows = json.dumps([[[[1]] * 2] * 2])
        seeds = [
            '{"instances": [' + pixel_rows + "]}",
            '{"inputs": {"image": [' + pixel_rows + "]}}",
            '{"signature_name": "serving_default", "instances": [{"image": ' + pixel_rows + "}]}",
            '{"inputs": [[[[0]]]], "signature_name": 3}',
            '{"instances": [{"b64": "AAAA"}]}',
        ]
        for i, text in enumerate(seeds):
            (folder / f"seed{i}").write_text(text)
        return
    import cv2
    import numpy as np

    image = (np.arange(16 * 12 * 3) % 251).astype(np.uint8).reshape(16, 12, 3)
    for ext in (".png", ".jpg", ".bmp", ".webp", ".tiff"):
        ok, buf = cv2.imencode(ext, image)
        if ok:
            (folder / f"seed{ext}").write_bytes(buf.tobytes())


def run_one(target: str, seconds: int, timeout: int, artifacts: Path) -> dict:
    """Fuzz one target in a child process; returns executions, findings and the child's exit code."""
    artifacts.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus"
        seed_corpus(target, corpus)
        cmd = [sys.executable, __file__, "--child", target, str(corpus), f"-max_total_time={seconds}",
               f"-timeout={timeout}", f"-max_len={MAX_LEN[target]}", "-rss_limit_mb=4096",
               f"-artifact_prefix={artifacts}/{target}-", "-print_final_stats=1"]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 120, check=False)
    log = proc.stdout + proc.stderr
    runs = re.findall(r"stat::number_of_executed_units:\s*(\d+)", log) or re.findall(r"Done (\d+) runs", log)
    found = sorted(str(p) for p in artifacts.glob(f"{target}-*"))
    return {"target": target, "seconds": seconds, "executions": int(runs[-1]) if runs else 0,
            "findings": found, "exit_code": proc.returncode,
            "log_tail": "\n".join(log.strip().splitlines()[-15:]) if proc.returncode else ""}


def markdown(doc: dict) -> str:
    lines = ["# Fuzzing (atheris)", "", f"Command: `{doc['command']}`", "",
             "| target | seconds | executions | findings | exit code |", "|---|---:|---:|---:|---:|"]
    for r in doc["results"]:
        lines.append(f"| {r['target']} | {r['seconds']} | {r['executions']:,} | {len(r['findings'])} "
                     f"| {r['exit_code']} |")
    return "\n".join([*lines, ""])


def _child(target: str, libfuzzer_args: list[str]) -> None:
    import atheris

    with atheris.instrument_imports():
        import emotion_ai.images  # noqa: F401
        import emotion_ai_serving.json_tensor  # noqa: F401
    fn = rest_target if target == "rest" else image_target
    atheris.Setup([sys.argv[0], *libfuzzer_args], fn)
    atheris.Fuzz()


def main() -> int:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        _child(sys.argv[2], sys.argv[3:])
        return 0
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--target", choices=(*TARGETS, "all"), default="all")
    p.add_argument("--seconds", type=int, default=60, help="fuzzing time per target")
    p.add_argument("--timeout", type=int, default=10, help="seconds one input may take before it counts as a hang")
    p.add_argument("--artifacts", type=Path, default=BENCH / "results" / "fuzz-artifacts")
    p.add_argument("--out", type=Path, default=BENCH / "results")
    args = p.parse_args()

    from bench_common import write_results

    targets = TARGETS if args.target == "all" else (args.target,)
    results = [run_one(t, args.seconds, args.timeout, args.artifacts) for t in targets]
    doc = {"command": "python bench/fuzz.py " + " ".join(sys.argv[1:]), "results": results}
    write_results(args.out, "fuzz", doc, markdown)
    for r in results:
        if r["log_tail"]:
            sys.stderr.write(f"--- {r['target']} (exit {r['exit_code']})\n{r['log_tail']}\n")
    return 1 if any(r["findings"] or r["exit_code"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
