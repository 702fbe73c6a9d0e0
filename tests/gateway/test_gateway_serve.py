"""`emotion-ai gateway` for real: uvicorn in a subprocess answers HTTP and WebSocket, and stops on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import requests
from emotion_ai_serving.local_server import free_port

wsproto = pytest.importorskip("wsproto")
from wsproto import events  # noqa: E402


@pytest.fixture(scope="module")
def gateway_process(model_server):
    port = free_port()
    env = dict(os.environ, EMOTION_AI_HOST="127.0.0.1", EMOTION_AI_GATEWAY_API_KEYS="k")
    proc = subprocess.Popen(
        [sys.executable, "-m", "emotion_ai.cli", "gateway", "--port", str(port), "--grpc-port",
         str(model_server.grpc_port), "--wait", "30"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if requests.get(url + "/healthz", timeout=1).ok:
                break
        except requests.ConnectionError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"the gateway did not start:\n{proc.stdout.read().decode(errors='replace')}")
        time.sleep(0.2)
    yield proc, port
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def _ws_one_frame(port: int, frame: bytes, token: str) -> dict:
    """Open WS /v1/stream with wsproto over a plain socket, send one frame, return the first answer."""
    conn = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(conn.send(events.Request(host="127.0.0.1", target=f"/v1/stream?access_token={token}")))
        text = ""
        while True:
            conn.receive_data(sock.recv(65536))
            for event in conn.events():
                if isinstance(event, events.AcceptConnection):
                    sock.sendall(conn.send(events.BytesMessage(data=frame)))
                elif isinstance(event, events.TextMessage):
                    text += event.data
                    if event.message_finished:
                        sock.sendall(conn.send(events.CloseConnection(code=1000)))
                        return json.loads(text)
                elif isinstance(event, events.CloseConnection | events.RejectConnection):
                    raise AssertionError(f"closed: {event}")


def test_the_cli_serves_http_and_websocket_and_stops_on_sigterm(gateway_process, photos):
    proc, port = gateway_process
    url = f"http://127.0.0.1:{port}"
    assert requests.get(url + "/readyz", timeout=10).status_code == 200
    jpeg = photos.one_face_jpeg()
    denied = requests.post(url + "/v1/faces:analyze", data=jpeg, headers={"content-type": "image/jpeg"},
                           timeout=30)
    assert denied.status_code == 401 and denied.headers["content-type"] == "application/problem+json"
    r = requests.post(url + "/v1/faces:analyze", data=jpeg, timeout=30,
                      headers={"content-type": "image/jpeg", "authorization": "Bearer k"})
    assert r.status_code == 200, r.text
    assert [f["emotion"] for f in r.json()["faces"]] == ["happy"]
    assert "server" not in r.headers  # uvicorn's banner is off
    answer = _ws_one_frame(port, jpeg, "k")
    assert answer["type"] == "prediction" and len(answer["faces"]) == 1
    assert answer["faces"][0]["track_id"] is not None
    proc.send_signal(signal.SIGTERM)
    # uvicorn shuts down gracefully, then re-raises the signal (so a supervisor sees what ended it)
    assert proc.wait(timeout=30) in (0, -signal.SIGTERM)
    assert "Application shutdown complete" in proc.stdout.read().decode(errors="replace")
