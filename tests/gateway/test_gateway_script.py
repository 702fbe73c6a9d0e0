"""`scripts/gateway.sh`, the one command that runs the embedded model server and the gateway without Docker:
the gateway answers a photo, and SIGTERM stops both processes."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, data: bytes | None = None, content_type: str = "") -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=data, headers={"Content-Type": content_type} if data else {})
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError:
        return 0, b""


@pytest.mark.slow
def test_the_script_serves_a_photo_and_stops_both_processes_on_sigterm(photos):
    if not (REPO / ".venv" / "bin" / "emotion-ai").exists():
        pytest.skip("the script runs the repository's .venv (scripts/setup.sh)")
    ports = {"GRPC_PORT": _free_port(), "REST_PORT": _free_port(), "GATEWAY_PORT": _free_port()}
    env = dict(os.environ, **{k: str(v) for k, v in ports.items()})
    proc = subprocess.Popen(["bash", "scripts/gateway.sh"], cwd=REPO, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{ports['GATEWAY_PORT']}"
    try:
        deadline = time.monotonic() + 240
        while _get(base + "/readyz")[0] != 200:
            assert proc.poll() is None, proc.stderr.read().decode(errors="replace")[-2000:]
            assert time.monotonic() < deadline, "the gateway was not ready within 240 s"
            time.sleep(1)
        status, body = _get(base + "/v1/faces:analyze", photos.one_face_jpeg(), "image/jpeg")
        assert status == 200
        faces = json.loads(body)["faces"]
        assert len(faces) == 1 and faces[0]["emotion"] == "happy"
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
    children = subprocess.run(["pgrep", "-s", str(proc.pid)], capture_output=True, text=True, check=False)
    assert children.stdout.strip() == "", "a process of the script outlived it"
    assert _get(base + "/healthz")[0] == 0  # nothing listens any more
