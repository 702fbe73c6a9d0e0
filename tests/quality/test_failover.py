"""Client-side balancing and failover: unit behaviour of BalancedTransport, and bench/failover.py
(three embedded servers on loopback, one killed and restarted mid-run) with zero failed requests."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from emotion_ai import EmotionClient
from emotion_ai.balancer import BalancedTransport
from emotion_ai.errors import ModelNotFoundError, ServerError, ServerUnavailableError
from emotion_ai.transport import ModelRef, RetryPolicy

REPO = Path(__file__).resolve().parents[2]
MODEL = ModelRef("emotion")


class Replica:
    """A transport that answers with its name, or raises what it is told to."""

    def __init__(self, name: str):
        self.name, self.error, self.calls = name, None, 0

    def predict(self, model, inputs, timeout):
        self.calls += 1
        if self.error is not None:
            raise self.error
        return {"who": np.array([self.name])}

    def close(self):
        pass


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _balanced(n: int = 3):
    replicas = [Replica(f"r{i}") for i in range(n)]
    clock = Clock()
    policy = RetryPolicy(retries=1, backoff=0.01, sleep=lambda s: None)
    return replicas, clock, BalancedTransport(replicas, [r.name for r in replicas], policy=policy, clock=clock)


def _who(t) -> str:
    return str(t.predict(MODEL, {}, timeout=5.0)["who"][0])


def test_round_robin_spreads_calls_and_skips_a_down_replica_evenly():
    replicas, clock, t = _balanced()
    assert [_who(t) for _ in range(6)] == ["r0", "r1", "r2", "r0", "r1", "r2"]
    replicas[1].error = ServerUnavailableError("refused")
    answers = [_who(t) for _ in range(8)]
    assert "r1" not in answers and answers.count("r0") == answers.count("r2") == 4
    assert t.counts()["r1"]["failed"] == 1  # tried once, then left alone during its cooldown
    replicas[1].error = None
    clock.now += 60  # past the cooldown: tried again, and back in the rotation
    assert "r1" in {_who(t) for _ in range(3)}


def test_every_replica_down_is_one_typed_error_and_real_errors_are_not_retried():
    replicas, _, t = _balanced()
    for r in replicas:
        r.error = ServerUnavailableError("refused")
    with pytest.raises(ServerUnavailableError, match="no endpoint could answer"):
        _who(t)
    assert [r.calls for r in replicas] == [2, 2, 2]  # two rounds (retries=1), each replica once per round
    for r in replicas:
        r.error, r.calls = ModelNotFoundError("Servable not found"), 0
    with pytest.raises(ModelNotFoundError):
        _who(t)
    replicas[0].error = replicas[1].error = replicas[2].error = ServerError("bad input", code="INVALID_ARGUMENT")
    with pytest.raises(ServerError, match="bad input"):
        _who(t)
    assert sum(r.calls for r in replicas) == 2 * 3 + 1  # the invalid request went to one replica only


def test_client_endpoint_validation():
    with pytest.raises(ValueError, match="not host:port"):
        EmotionClient(endpoints=("localhost",))
    with pytest.raises(ValueError, match="dns: target is for gRPC"):
        EmotionClient(protocol="rest", endpoints=("dns:///serving:8501",))
    client = EmotionClient(protocol="rest", endpoints=("127.0.0.1:9", "[::1]:9"))
    try:
        assert isinstance(client.transport, BalancedTransport)
        assert list(client.transport.counts()) == ["127.0.0.1:9", "[::1]:9"]
    finally:
        client.close()


@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["grpc", "rest"])
def test_failover_bench_kills_and_restarts_a_replica_without_a_failed_request(tmp_path, protocol):
    from emotion_ai_serving.local_server import serve_executable

    if serve_executable() is None:
        pytest.skip("emotion-ai-serve is not installed")
    from ..support.tiny_models import make_export_tree

    models = make_export_tree(tmp_path / "models")
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "failover.py"), "--models", str(models), "--protocol", protocol,
         "--seconds", "6", "--workers", "3", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=600, check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    doc = json.loads((tmp_path / "failover.json").read_text())
    assert doc["failed"] == 0 and doc["requests"] > 50
    counts = list(doc["endpoints"].values())
    assert all(c["ok"] > 0 for c in counts)  # the load was spread over all three
    assert counts[1]["failed"] > 0  # the killed replica was failed over ...
    assert counts[1]["ok_after_restart"] > 0 and doc["back_in_rotation_s"] is not None  # ... and used again
    assert counts[0]["ok_after_restart"] > 0 and counts[2]["ok_after_restart"] > 0
    assert 0 < doc["p50_ms"] <= doc["p99_ms"]
