"""Load and faults against real `emotion-ai-serve` processes.

* 8 concurrent clients (4 gRPC, 4 REST) for EMOTION_AI_LOAD_SECONDS (default 10; the 60 s run is
  `python bench/load_test.py`, the same code) -> 0 errors, p99 reported.
* server SIGKILLed mid-run -> every in-flight/next call raises ServerUnavailableError within the
  client's deadline; the same client instances recover once the server is back on the same ports.
* a new emotion version copied into the model dir under load -> 0 failed requests, version 2
  becomes AVAILABLE and version 1 is unloaded.
"""

from __future__ import annotations

import os
import shutil
import threading
import time

import pytest
from emotion_ai import spec
from emotion_ai.errors import EmotionAIError, ServerUnavailableError
from emotion_ai_serving.local_server import LocalServer

from .conftest import make_models
from .quality_support import bench_module

run_load = bench_module("load_test").run_load
one_face_jpeg = bench_module("photos").one_face_jpeg

LOAD_SECONDS = float(os.environ.get("EMOTION_AI_LOAD_SECONDS", "10"))
CLIENT_TIMEOUT = 4.0


@pytest.fixture(scope="module")
def photo() -> bytes:
    return one_face_jpeg()


@pytest.fixture(scope="module")
def fault_server(tmp_path_factory: pytest.TempPathFactory):
    """A server of its own (its model dir gets a new version; it gets killed), polling the
    model dir every 0.5 s. Yields (server, staged version-2 export root)."""
    root = make_models(tmp_path_factory.mktemp("fault_models"))
    staged = make_models(tmp_path_factory.mktemp("staged_v2"), versions=(2,), seed=7)
    proc = LocalServer(
        root,
        extra_args=["--file_system_poll_wait_seconds=0.5"],
        host=None,
        workdir=tmp_path_factory.mktemp("fault_server"),
    ).start()
    try:
        yield proc, staged
    finally:
        proc.stop()


def test_eight_clients_zero_errors(server, photo, record_property, capsys):
    result = run_load(
        host="127.0.0.1",
        grpc_port=server.grpc_port,
        rest_port=server.rest_port,
        image=photo,
        seconds=LOAD_SECONDS,
        clients=8,
    )
    summary = result.summary()
    for key in ("requests", "errors", "p50_ms", "p95_ms", "p99_ms", "requests_per_s"):
        record_property(key, summary[key])
    with capsys.disabled():
        print(
            f"\n[load] 8 clients x {LOAD_SECONDS:g} s: {summary['requests']} requests, "
            f"{summary['errors']} errors, p50 {summary['p50_ms']} ms, p99 {summary['p99_ms']} ms"
        )
    assert result.errors == []
    assert summary["requests"] >= 8
    assert result.faces_seen == {1}, "the photo has exactly one face"
    assert server.alive()


def _status(proc: LocalServer) -> dict[int, str]:
    with proc.client("rest", timeout=5, retries=0) as c:
        return {v.version: v.state for v in c.status()["emotion"]}


def test_new_version_under_load_zero_failures(fault_server, photo):
    proc, staged = fault_server
    stop = threading.Event()
    box: dict = {}

    def load() -> None:
        box["result"] = run_load(
            host="127.0.0.1",
            grpc_port=proc.grpc_port,
            rest_port=proc.rest_port,
            image=photo,
            seconds=120,
            clients=4,
            stop=stop,
        )

    runner = threading.Thread(target=load)
    runner.start()
    try:
        time.sleep(1.0)
        # copied straight in (not mv'd): the server must wait for a complete version dir
        shutil.copytree(
            staged / spec.EMOTION_MODEL / "2", proc.models_root / spec.EMOTION_MODEL / "2"
        )
        deadline = time.monotonic() + 90
        while _status(proc).get(2) != "AVAILABLE":
            assert time.monotonic() < deadline, (
                f"version 2 not loaded: {_status(proc)}\n{proc.log_tail()}"
            )
            time.sleep(0.5)
        time.sleep(2.0)  # keep the load on while version 1 is unloaded
    finally:
        stop.set()
        runner.join(timeout=60)
    result = box["result"]
    assert result.errors == [], result.errors[:5]
    assert len(result.latencies_ms) >= 4
    deadline = time.monotonic() + 30
    while _status(proc).get(1) not in ("END", None):
        assert time.monotonic() < deadline, _status(proc)
        time.sleep(0.5)


def test_server_killed_then_restarted_on_same_ports(fault_server, photo):
    proc, _ = fault_server
    clients = [
        proc.client(p, timeout=CLIENT_TIMEOUT, retries=3) for p in ("grpc", "rest", "grpc", "rest")
    ]
    try:
        for c in clients:
            assert len(c.predict(photo).faces) == 1
        outcomes: list[tuple[str, float]] = []
        lock = threading.Lock()
        killed = threading.Event()

        def hammer(c) -> None:
            while True:
                t = time.monotonic()
                try:
                    c.predict(photo)
                    kind = "ok"
                except ServerUnavailableError:
                    kind = "unavailable"
                except EmotionAIError as exc:
                    kind = f"other {type(exc).__name__}: {exc}"
                with lock:
                    outcomes.append((kind, time.monotonic() - t))
                if killed.is_set() and kind != "ok":
                    return

        threads = [threading.Thread(target=hammer, args=(c,)) for c in clients]
        for th in threads:
            th.start()
        time.sleep(1.0)
        proc.kill()
        killed.set()
        for th in threads:
            th.join(timeout=CLIENT_TIMEOUT * 3)
            assert not th.is_alive(), "a client call outlived its deadline"
        failures = [o for o in outcomes if o[0] != "ok"]
        assert failures, "no call saw the server down"
        assert {kind for kind, _ in failures} == {"unavailable"}, failures
        assert max(sec for _, sec in failures) <= CLIENT_TIMEOUT + 1.0, failures
        # the server is down now: a fresh call fails fast and typed
        t = time.monotonic()
        with pytest.raises(ServerUnavailableError):
            clients[0].predict(photo)
        assert time.monotonic() - t <= CLIENT_TIMEOUT + 1.0

        proc.start()  # same ports
        for c in clients:  # the same client objects, no reconnect by the caller
            deadline = time.monotonic() + 30
            while True:
                try:
                    assert len(c.predict(photo).faces) == 1
                    break
                except ServerUnavailableError:
                    assert time.monotonic() < deadline, "client did not recover"
                    time.sleep(0.5)
    finally:
        for c in clients:
            c.close()
