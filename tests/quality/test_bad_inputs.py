"""Bad-input corpus (generated in tmp, nothing committed) through the library and the CLI,
against a real `emotion-ai-serve` subprocess.

Library: every case gives `InvalidImageError` with one readable sentence, or a Prediction
(faces found where the picture has one). CLI: one `emotion-ai: skipped <file>: <reason>` line
per bad file, no traceback, the good files still printed, exit codes 0 / 1 / 2 as documented.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from emotion_ai import EmotionClient
from emotion_ai.errors import InvalidImageError
from emotion_ai_serving.local_server import LocalServer, free_port

CASE_NAMES = [
    "empty", "text_as_jpg", "truncated_jpeg", "truncated_png", "corrupt_jpeg_header",
    "one_pixel", "png16", "rgba_png", "grayscale", "cmyk_jpeg", "png_bomb_header", "png_bomb",
    "jpeg_bomb_header", "animated_gif", "directory", "missing", "non_utf8_name_ok",
    "non_utf8_name_bad", "good_jpeg",
]  # fmt: skip


def emotion_ai_exe() -> str:
    import sys

    exe = Path(sys.executable).with_name("emotion-ai")
    assert exe.exists(), "emotion-ai CLI is not installed (pip install -e client)"
    return str(exe)


def run_cli(args: list[str | Path], timeout: float = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run(
        [emotion_ai_exe(), *map(os.fsencode, args)],
        capture_output=True,
        timeout=timeout,
        env=env,
        check=False,
    )


def server_args(server: LocalServer, protocol: str = "grpc") -> list[str]:
    return [
        "--host=127.0.0.1",
        f"--protocol={protocol}",
        f"--grpc-port={server.grpc_port}",
        f"--rest-port={server.rest_port}",
        "--timeout=30",
    ]


@pytest.fixture(scope="module")
def clients(server: LocalServer):
    with server.client("grpc", timeout=30) as g, server.client("rest", timeout=30) as r:
        yield {"grpc": g, "rest": r}


def test_corpus_is_complete(corpus):
    assert sorted(corpus) == sorted(CASE_NAMES)
    # the non-UTF-8 names really are not decodable as UTF-8
    for name in ("non_utf8_name_ok", "non_utf8_name_bad"):
        raw = os.fsencode(corpus[name][1].name)
        with pytest.raises(UnicodeDecodeError):
            raw.decode("utf-8")


@pytest.mark.parametrize("protocol", ["grpc", "rest"])
@pytest.mark.parametrize("name", CASE_NAMES)
def test_library_handles_input(name: str, protocol: str, corpus, clients):
    case, path = corpus[name]
    client: EmotionClient = clients[protocol]
    if case.outcome == "error":
        with pytest.raises(InvalidImageError) as info:
            client.predict(path)
        message = str(info.value)
        assert "\n" not in message and "Traceback" not in message
        assert str(path) in message, f"the message must name the file: {message!r}"
        # and as bytes: the same error (no path, so no name in the message)
        if path.is_file():
            with pytest.raises(InvalidImageError):
                client.predict(path.read_bytes())
        return
    pred = client.predict(path)
    assert pred.source == str(path)
    if case.outcome == "faces":
        assert len(pred.faces) == 1, f"{name}: the astronaut's face must be found"
        face = pred.faces[0]
        assert len(face.keypoints) == 15 and abs(sum(face.scores.values()) - 1.0) < 1e-3
    else:
        assert pred.faces == []
    json.loads(pred.to_json())  # serialisable, surrogate-escaped names included


def test_library_batch_keeps_going(corpus, clients):
    names = ["good_jpeg", "empty", "png_bomb", "grayscale", "missing", "cmyk_jpeg"]
    results = clients["grpc"].predict_batch([corpus[n][1] for n in names], errors="return")
    kinds = [type(r).__name__ for r in results]
    assert kinds == [
        "Prediction", "InvalidImageError", "InvalidImageError",
        "Prediction", "InvalidImageError", "Prediction",
    ]  # fmt: skip
    assert all(len(r.faces) == 1 for r in results if not isinstance(r, Exception))


def _stderr_lines(proc: subprocess.CompletedProcess) -> list[str]:
    return proc.stderr.decode("utf-8", "surrogateescape").splitlines()


@pytest.mark.parametrize("protocol", ["grpc", "rest"])
def test_cli_mixed_run(protocol: str, corpus, server):
    paths = [corpus[n][1] for n in CASE_NAMES if n != "directory"]
    proc = run_cli(["predict", *paths, "--json", *server_args(server, protocol)])
    err = _stderr_lines(proc)
    assert proc.returncode == 1, err
    assert not any("Traceback" in line for line in err), "\n".join(err)
    printed = [json.loads(line) for line in proc.stdout.splitlines()]
    ok = [n for n in CASE_NAMES if corpus[n][0].outcome != "error"]
    found = [doc for doc in printed if "error" not in doc]
    assert [p["image"] for p in found] == [os.fsdecode(os.fsencode(corpus[n][1])) for n in ok]
    for n, doc in zip(ok, found, strict=True):
        assert len(doc["faces"]) == (1 if corpus[n][0].outcome == "faces" else 0), n
    bad = [n for n in CASE_NAMES if corpus[n][0].outcome == "error" and n != "directory"]
    failed = [doc for doc in printed if "error" in doc]  # each unreadable file is an error record too
    assert [doc["image"] for doc in failed] == [os.fsdecode(os.fsencode(corpus[n][1])) for n in bad]
    skipped = [line for line in err if line.startswith("emotion-ai: skipped ")]
    assert len(skipped) == len(bad), "\n".join(err)
    for n in bad:
        shown = os.fsdecode(os.fsencode(corpus[n][1])).encode("utf-8", "backslashreplace")
        hits = [line for line in skipped if shown.decode() in line]
        assert len(hits) == 1, f"{n}: expected one message naming the file in\n" + "\n".join(err)


def test_cli_directory_argument_is_expanded_and_dir_entries_skipped(corpus, server):
    folder = corpus["good_jpeg"][1].parent
    proc = run_cli(["predict", folder, "--json", *server_args(server)])
    assert proc.returncode == 1  # the folder holds bad images too
    names = {Path(json.loads(line)["image"]).name for line in proc.stdout.splitlines()}
    assert "good.jpg" in names and "folder.jpg" not in names
    # a directory named like an image, given alone: nothing to do, reported, not a crash
    proc = run_cli(["predict", corpus["directory"][1], "--json", *server_args(server)])
    assert proc.returncode == 1 and proc.stdout == b""
    assert _stderr_lines(proc) == ["emotion-ai: no image files to process"]


def test_cli_all_good_exits_zero(corpus, server):
    paths = [corpus[n][1] for n in ("good_jpeg", "png16", "cmyk_jpeg", "one_pixel")]
    proc = run_cli(["predict", *paths, "--json", *server_args(server)])
    assert proc.returncode == 0, proc.stderr
    assert [len(json.loads(x)["faces"]) for x in proc.stdout.splitlines()] == [1, 1, 1, 0]
    assert proc.stderr == b""


def test_cli_usage_errors_exit_two(corpus):
    assert run_cli([]).returncode == 2
    assert run_cli(["predict"]).returncode == 2
    assert run_cli(["predict", corpus["good_jpeg"][1], "--protocol=carrier-pigeon"]).returncode == 2


def test_cli_server_down_exits_two_with_one_message(corpus):
    port = free_port()  # nothing listens there
    proc = run_cli(
        ["predict", corpus["good_jpeg"][1], "--json", f"--grpc-port={port}",
         "--host=127.0.0.1", "--timeout=3"]
    )  # fmt: skip
    err = _stderr_lines(proc)
    assert proc.returncode == 2, err
    assert len(err) == 1 and err[0].startswith("emotion-ai: error: "), err
    assert "unavailable" in err[0].lower()


def test_cli_csv_with_non_utf8_name(corpus, server, tmp_path):
    paths = [corpus["non_utf8_name_ok"][1], corpus["good_jpeg"][1]]
    out = tmp_path / "faces.csv"
    proc = run_cli(["predict", *paths, "--csv", out, *server_args(server)])
    assert b"Traceback" not in proc.stderr, proc.stderr.decode(errors="replace")
    assert proc.returncode == 0
    assert len(out.read_text(encoding="utf-8", errors="surrogateescape").splitlines()) == 3


def test_cli_annotate_with_non_utf8_name(corpus, server, tmp_path):
    out = tmp_path / "annotated"
    proc = run_cli(
        ["predict", corpus["non_utf8_name_ok"][1], "--annotate", out, *server_args(server)]
    )
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    assert len(list(out.iterdir())) == 1


def test_cli_truncated_png_gives_exactly_one_line(corpus, server):
    proc = run_cli(["predict", corpus["truncated_png"][1], *server_args(server)])
    assert proc.returncode == 1
    assert len(_stderr_lines(proc)) == 1, _stderr_lines(proc)
