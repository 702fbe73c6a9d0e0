"""bench/gateway_bench.py runs end to end (a seconds-long run against the session's embedded server)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def test_the_gateway_benchmark_runs_and_records_both_sides(model_server, tmp_path):
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "gateway_bench.py"), "--no-server", "--grpc-port",
         str(model_server.grpc_port), "-n", "2", "--warmup", "1", "--clients", "2", "--seconds", "1",
         "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=300, check=False, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads((tmp_path / "gateway_bench.json").read_text())
    assert doc["machine"]["cpu_model"] and [r["faces_gateway"] for r in doc["latency"]] == [[4], [6]]
    for row in doc["latency"]:
        assert row["faces_client"] == row["faces_gateway"]
        assert row["gateway"]["n"] == row["client"]["n"] == 2 and row["ratio_p50"] > 0
        for side in ("gateway", "client"):  # the stages of each side's own timings, each under its total
            stages = row["stages_p50_ms"][side]
            assert 0 < stages["detect"] < stages["total"] and 0 < stages["emotion"] < stages["total"]
    for side in ("gateway", "client"):
        assert doc["throughput"][side]["answers"] > 0 and doc["throughput"][side]["failed"] == 0
    assert "| 4 faces (astronaut crops) |" in (tmp_path / "gateway_bench.md").read_text()


@pytest.mark.slow
def test_the_load_benchmark_restarts_a_replica_and_counts_every_answer(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "gateway_load.py"), "--clients", "2", "--seconds", "6",
         "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=400, check=False, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads((tmp_path / "gateway_load.json").read_text())
    assert doc["met"] and "SIGKILLed" in doc["restart"]
    for phase in doc["phases"].values():
        assert phase["statuses"].get("200", 0) > 0 and phase["undocumented_5xx"] == 0
    if sys.platform == "linux":  # the gateway's resident memory, read from its /metrics after each step
        assert list(doc["gateway_rss_mb"]) == ["after the warm-up", "after phase 1", "after phase 2"]
        assert all(mb > 10 for mb in doc["gateway_rss_mb"].values())
