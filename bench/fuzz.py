"""Coverage-guided fuzzing (atheris / libFuzzer) of the parsers that take untrusted bytes.

    .venv/bin/python bench/fuzz.py --seconds 300             # each target for 300 s
    .venv/bin/python bench/fuzz.py --target rest --seconds 60

Targets:
- `rest`: a REST predict body → parse_json_object → signature_name_of → predict_tensors_from_json
  against the real signatures' input specs (uint8 images of 96×96 and 48×48). Must give tensors or a
  `ServingError`; anything else, or an input taking over --timeout seconds, is a finding.
- `image`: bytes → emotion_ai.images.decode_bytes. Must give a BGR uint8 image or `InvalidImageError`.
- `gateway`: a request to the gateway (the input's first line is its Content-Type, the rest its body) →
  emotion_ai.gateway.inputs.read_images (raw image, multipart form, JSON base64; body limit 4 KiB, at most
  3 images) → check_pixels on each image. Must give 1-3 non-empty images, each passing or refused with
  the gateway's typed `ProblemError` (400, 413 or 415) or `InvalidImageError`.

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
from functools import cache
from pathlib import Path

BENCH = Path(__file__).resolve().parent
TARGETS = ("rest", "image", "gateway")
MAX_LEN = {"rest": 4096, "image": 8192, "gateway": 8192}
#: The gateway target's limits: small, so inputs reach them.
GATEWAY_LIMIT, GATEWAY_MAX_IMAGES, GATEWAY_MAX_PIXELS = 4096, 3, 4_000_000


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


def gateway_request(data: bytes):
    """A Starlette request from a fuzz input: the first line is the Content-Type (absent without a newline),
    the rest the body; a Content-Length header with the body's true length when the header line ends in "!"."""
    from starlette.requests import Request

    header, newline, body = data.partition(b"\n")
    if not newline:
        header, body = b"", data
    headers = []
    if header.endswith(b"!"):
        header = header[:-1]
        headers.append((b"content-length", str(len(body)).encode()))
    if header:
        headers.append((b"content-type", header))
    scope = {"type": "http", "method": "POST", "path": "/v1/faces:batchAnalyze", "raw_path": b"/v1/faces:batchAnalyze",
             "query_string": b"", "headers": headers, "http_version": "1.1", "scheme": "http", "root_path": "",
             "server": ("127.0.0.1", 8000), "client": ("127.0.0.1", 50000)}
    sent = False

    async def receive() -> dict:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return Request(scope, receive)


@cache
def _event_loop():
    import asyncio

    return asyncio.new_event_loop()


def gateway_target(data: bytes) -> None:
    from emotion_ai.errors import InvalidImageError
    from emotion_ai.gateway.inputs import ImagePart, check_pixels, read_images
    from emotion_ai.gateway.problems import ProblemError

    try:
        parts = _event_loop().run_until_complete(
            read_images(gateway_request(data), limit=GATEWAY_LIMIT, max_images=GATEWAY_MAX_IMAGES))
    except ProblemError as exc:
        if exc.status not in (400, 413, 415):
            raise AssertionError(f"read_images: status {exc.status}: {exc}") from exc
        return
    if not (1 <= len(parts) <= GATEWAY_MAX_IMAGES) or not all(
            isinstance(p, ImagePart) and isinstance(p.data, bytes) and p.data for p in parts):
        raise AssertionError(f"read_images returned {parts!r:.300}")
    for part in parts:
        try:
            check_pixels(part.data, GATEWAY_MAX_PIXELS)
        except ProblemError as exc:
            if exc.status != 413:
                raise AssertionError(f"check_pixels: status {exc.status}: {exc}") from exc
        except InvalidImageError:
            pass


def _gateway_seeds() -> list[bytes]:
    import base64

    import cv2
    import numpy as np

    _, png = cv2.imencode(".png", np.zeros((4, 6, 3), np.uint8))
    png = png.tobytes()
    b64 = base64.b64encode(png).decode()
    form = (b"--fuzz\r\nContent-Disposition: form-data; name=\"images\"; filename=\"a.png\"\r\n"
            b"Content-Type: image/png\r\n\r\n" + png + b"\r\n--fuzz\r\n"
            b"Content-Disposition: form-data; name=\"note\"\r\n\r\nhello\r\n--fuzz--\r\n")
    return [b"image/png\n" + png, b"application/octet-stream!\n" + png, png,
            b"image/jpeg\n\xff\xd8\xff\xc0\x00\x11\x08\x10\x00\x10\x00\x03",
            b'application/json\n{"image": {"b64": "' + b64.encode() + b'"}}',
            b'application/json!\n{"images": [{"b64": "' + b64.encode() + b'"}, {"url": "x"}]}',
            b"multipart/form-data; boundary=fuzz\n" + form, b"multipart/form-data; boundary=fuzz!\n" + form,
            b"text/plain\nhello"]


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
    if target == "gateway":
        for i, raw in enumerate(_gateway_seeds()):
            (folder / f"seed{i}").write_bytes(raw)
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

    if target == "gateway":  # the gateway's dependencies uninstrumented (instrumenting FastAPI and pydantic is slow)
        import fastapi  # noqa: F401
        import prometheus_client  # noqa: F401
        import pydantic  # noqa: F401
        import starlette.requests
        import starlette.staticfiles
    with atheris.instrument_imports():
        import emotion_ai.images
        import emotion_ai_serving.json_tensor  # noqa: F401
        if target == "gateway":
            import emotion_ai.gateway.inputs  # noqa: F401
            import python_multipart  # noqa: F401
            import starlette.formparsers  # noqa: F401
    fn = {"rest": rest_target, "image": image_target, "gateway": gateway_target}[target]
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
