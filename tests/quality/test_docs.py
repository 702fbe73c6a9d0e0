"""The READMEs' and the documentation site's fenced examples work as written.

Covers README.md, client/README.md and every page of docs/ (the MkDocs site). Every ```python block
runs, in a folder holding the files the examples name (photo.jpg, a.jpg, b.png, clip.mp4), against the
embedded server on TF Serving's default ports (8500/8501, as the examples assume).
Every `emotion-ai …` and `emotion-ai-train …` line of a ```bash block is parsed by the real CLI parser,
so a renamed or removed flag fails here. Blocks that need what the thin client does not install are
listed in SKIP with the reason.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from emotion_ai import cli as client_cli
from emotion_ai.spec import GRPC_PORT, REST_PORT

REPO = Path(__file__).resolve().parents[2]
DOCS = ("README.md", "client/README.md", *sorted(p.relative_to(REPO).as_posix() for p in (REPO / "docs").glob("*.md")))
FENCE = re.compile(r"^```(\w+)\n(.*?)^```", re.S | re.M)
#: Blocks not run, by a phrase they contain, and why.
SKIP = {"tensorflow_serving.apis": "needs the tensorflow-serving-api package, which the README says the client avoids"}
#: Placeholders of a synopsis line (not a command to run).
SYNOPSIS = re.compile(r"\[|\.\.\.|IMAGE_OR_DIR|\bIN\b")


def blocks(language: str) -> list[tuple[str, int, str]]:
    """(file, line, code) of each fenced block of `language` in the READMEs and docs/ pages."""
    out = []
    for doc in DOCS:
        text = (REPO / doc).read_text(encoding="utf-8")
        for m in FENCE.finditer(text):
            if m.group(1) == language:
                out.append((doc, text[: m.start()].count("\n") + 1, m.group(2)))
    return out


def commands(code: str) -> list[list[str]]:
    """The `emotion-ai` / `emotion-ai-train` command lines of a bash block, as argv lists (comments, env
    assignments and line continuations handled)."""
    out = []
    for line in code.replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):
            words = words[1:]
        if words and words[0] in ("emotion-ai", "emotion-ai-train") and not SYNOPSIS.search(line):
            out.append(words)
    return out


def test_the_docs_have_examples_of_both_kinds():
    assert len(blocks("python")) >= 5
    assert sum(len(commands(code)) for _, _, code in blocks("bash")) >= 20


def test_the_docs_site_pages_are_covered():
    pages = [doc for doc in DOCS if doc.startswith("docs/")]
    assert "docs/client.md" in pages and "docs/training.md" in pages
    assert any(doc.startswith("docs/") for doc, _, _ in blocks("python"))
    assert any(commands(code) for doc, _, code in blocks("bash") if doc == "docs/training.md")


@pytest.mark.parametrize(("doc", "line", "code"), blocks("bash"), ids=lambda v: v if isinstance(v, str) else str(v))
def test_cli_lines_parse(doc, line, code):
    from emotion_ai_training import cli as train_cli

    for argv in commands(code):
        parser = client_cli.build_parser() if argv[0] == "emotion-ai" else train_cli.build_parser()
        try:
            parser.parse_args(argv[1:])
        except SystemExit as exc:  # --version / --help exit 0; a usage error exits 2
            assert exc.code == 0, f"{doc}:{line}: `{shlex.join(argv)}` does not parse"


@pytest.fixture(scope="module")
def default_port_server(tmp_path_factory):
    from emotion_ai_serving.local_server import LocalServer, port_open

    if port_open(GRPC_PORT) or port_open(REST_PORT):
        if os.environ.get("CI"):
            pytest.fail(f"ports {GRPC_PORT}/{REST_PORT} are taken: the docs check needs them")
        pytest.skip(f"ports {GRPC_PORT}/{REST_PORT} are taken")
    server = LocalServer(REPO / "models_export", grpc_port=GRPC_PORT, rest_port=REST_PORT,
                         extra_args=["--file_system_poll_wait_seconds=0"]).start()
    yield server
    server.close()


@pytest.fixture(scope="module")
def example_dir(tmp_path_factory, astronaut_bgr):
    folder = tmp_path_factory.mktemp("docs")
    for name in ("photo.jpg", "a.jpg", "b.png"):
        cv2.imwrite(str(folder / name), astronaut_bgr)
    writer = cv2.VideoWriter(str(folder / "clip.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 25.0, (640, 480))
    face = cv2.resize(astronaut_bgr, (320, 320))
    for i in range(8):
        frame = np.full((480, 640, 3), 96, np.uint8)
        frame[80:400, 100 + 10 * i : 420 + 10 * i] = face
        writer.write(frame)
    writer.release()
    return folder


@pytest.fixture(scope="module")
def astronaut_bgr():
    from skimage import data

    return np.ascontiguousarray(data.astronaut()[:, :, ::-1])


@pytest.mark.slow
@pytest.mark.parametrize(("doc", "line", "code"), blocks("python"), ids=lambda v: v if isinstance(v, str) else str(v))
def test_python_examples_run(doc, line, code, default_port_server, example_dir):
    reason = next((why for phrase, why in SKIP.items() if phrase in code), None)
    if reason:
        pytest.skip(reason)
    proc = subprocess.run([sys.executable, "-c", code], cwd=example_dir, capture_output=True, text=True, timeout=300,
                          check=False)
    assert proc.returncode == 0, f"{doc}:{line} failed:\n{proc.stderr[-3000:]}"
