"""serving/*.config parse as the protos TF Serving reads; docker-compose.yml validates; base paths
resolve the same way for the container and the embedded server."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml
from emotion_ai import spec
from emotion_ai.transport import ModelRef
from emotion_ai.versions import latest_version
from emotion_ai_serving.config import (
    ServerOptions,
    model_entries,
    read_batching_settings,
    read_model_server_config,
    read_monitoring_settings,
)
from emotion_ai_serving.errors import ServingError
from emotion_ai_serving.local_server import LocalServer

from .conftest import COMPOSE_FILE, REPO, SERVING_DIR, compose_image_and_flags


def test_models_config_serves_the_model_ladder_from_models_export():
    config = read_model_server_config(SERVING_DIR / "models.config")
    names = [c.name for c in config.model_config_list.config]
    assert names == list(spec.SERVED_MODELS) == [spec.KEYPOINTS_MODEL, spec.EMOTION_MODEL, "emotion_accurate"]
    assert all(c.model_platform == "tensorflow" for c in config.model_config_list.config)
    assert all(not c.version_labels for c in config.model_config_list.config)
    entries = model_entries(config, ServerOptions(models_root=str(REPO / "models_export")))
    assert [e.base_path for e in entries] == [(REPO / "models_export" / n).resolve() for n in names]
    assert all(e.policy == "latest" and e.num_versions == 1 for e in entries)
    as_is = model_entries(config, ServerOptions())
    assert [str(e.base_path) for e in as_is] == [f"/models/{n}" for n in names]


def test_batching_and_monitoring_configs():
    batching = read_batching_settings(SERVING_DIR / "batching.config")
    assert batching.num_batch_threads == 2  # = cores on the reference machine
    assert batching.max_batch_size == 32
    assert 0 < batching.batch_timeout_micros <= 10_000
    monitoring = read_monitoring_settings(SERVING_DIR / "monitoring.config")
    assert monitoring.prometheus_enabled
    assert monitoring.prometheus_path == "/monitoring/prometheus/metrics"


def test_config_validation_errors(tmp_path: Path):
    bad = tmp_path / "bad.config"
    bad.write_text("model_config_list { config { name: 'x' bogus: 1 } }")
    with pytest.raises(ServingError, match="Error parsing text-format"):
        read_model_server_config(bad)
    relative = tmp_path / "relative.config"
    relative.write_text(
        "model_config_list { config { name: 'x' base_path: 'models/x' "
        "model_platform: 'tensorflow' } }"
    )
    with pytest.raises(ServingError, match="to have an absolute path"):
        model_entries(read_model_server_config(relative), ServerOptions())
    dup = tmp_path / "dup.config"
    dup.write_text(
        "model_config_list { config { name: 'x' base_path: '/a' model_platform: 'tensorflow' }"
        " config { name: 'x' base_path: '/b' model_platform: 'tensorflow' } }"
    )
    with pytest.raises(ServingError, match="Illegal to list model x multiple times"):
        model_entries(read_model_server_config(dup), ServerOptions())


def test_compose_pins_image_and_passes_the_issue_flags():
    image, flags = compose_image_and_flags()
    assert image.startswith("tensorflow/serving:2.") and image.split(":")[1][0].isdigit()
    names = {f.split("=")[0] for f in flags}
    assert {
        "--model_config_file",
        "--enable_batching",
        "--batching_parameters_file",
        "--monitoring_config_file",
        "--enable_model_warmup",
        "--file_system_poll_wait_seconds",
    } <= names
    service = yaml.safe_load(COMPOSE_FILE.read_text())["services"]["serving"]
    assert "./models_export:/models:ro" in service["volumes"]
    probe = service["healthcheck"]["test"]
    assert probe[:3] == ["CMD", "bash", "-c"]
    assert "curl" not in probe[3] and "/dev/tcp" in probe[3] and "AVAILABLE" in probe[3]


def _compose_command() -> list[str] | None:
    """A compose validator that really works here: `docker-compose`, or `docker compose` when the docker
    CLI has the compose plugin (a docker CLI without it answers "unknown command"), else None."""
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True, timeout=30,
                               check=False)
        if probe.returncode == 0:
            return ["docker", "compose"]
    return None


def test_docker_compose_config_validates():
    cmd = _compose_command()
    if cmd is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI must validate docker-compose.yml: .ci/run installs docker-compose (Debian package)")
        pytest.skip("no compose validator: neither docker-compose nor a docker CLI with the compose plugin "
                    "(apt-get install docker-compose)")
    result = subprocess.run([*cmd, "config"], cwd=REPO, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    rendered = yaml.safe_load(result.stdout)
    service = rendered["services"]["serving"]
    assert service["image"].startswith("tensorflow/serving:2.")
    published = {str(p.get("target") if isinstance(p, dict) else p.split(":")[-1].split("/")[0])
                 for p in service["ports"]}
    assert {"8500", "8501"} <= published
    # `docker compose up` starts both (no profile; docker-compose 1.x renders profiled services too)
    assert not any(rendered["services"][name].get("profiles") for name in ("serving", "gateway"))
    gpu = subprocess.run([*cmd, "--profile", "gpu", "config", "--services"], check=False, cwd=REPO,
                         capture_output=True, text=True, timeout=60)
    assert gpu.returncode == 0 and "serving-gpu" in gpu.stdout.split()


def test_compose_healthcheck_probe_works_against_a_server(serving):
    """The healthcheck's bash /dev/tcp probe, run here against the server under test."""
    if shutil.which("bash") is None:
        pytest.skip("bash not available")
    host, port = serving.rest_url.removeprefix("http://").split(":")
    probe = (
        f"for m in {' '.join(spec.SERVED_MODELS)}; do "
        f"exec 3<>/dev/tcp/{host}/{port} && "
        "printf 'GET /v1/models/%s HTTP/1.0\\r\\n\\r\\n' \"$m\" >&3 && "
        "grep -q '\"AVAILABLE\"' <&3 || exit 1; done"
    )
    assert subprocess.run(["bash", "-c", probe], timeout=30, check=False).returncode == 0
    assert probe.split("exec")[1].split("&&")[1] in COMPOSE_FILE.read_text().replace("$$m", "$m")


def test_embedded_server_on_models_config_serves_the_committed_ladder(tmp_path: Path):
    """`emotion-ai-serve --model_config_file=serving/models.config --models_root=models_export` (README,
    scripts/demo.sh) serves keypoints, emotion (fast) and emotion_accurate, each answering a predict."""
    models = REPO / "models_export"
    if not all(latest_version(models / m, saved_model=True) for m in spec.SERVED_MODELS):
        pytest.skip(f"models_export lacks one of {spec.SERVED_MODELS}")
    server = LocalServer(extra_args=[f"--model_config_file={SERVING_DIR / 'models.config'}", f"--models_root={models}",
                                     "--file_system_poll_wait_seconds=0"], workdir=tmp_path)
    with server, server.client("rest", timeout=60) as client:
        for name in spec.SERVED_MODELS:
            ref = ModelRef(name)
            newest = int(latest_version(models / name).name)  # latest { num_versions: 1 }
            assert [(s.version, s.state) for s in client.transport.status(ref, 60)] == [(newest, "AVAILABLE")]
            size = spec.KEYPOINTS_INPUT_SIZE if name.startswith(spec.KEYPOINTS_MODEL) else spec.EMOTION_INPUT_SIZE
            outputs = client.transport.predict(ref, {spec.INPUT_KEY: np.zeros((2, size, size, 1), np.uint8)}, 60)
            assert all(len(v) == 2 for v in outputs.values()), name
