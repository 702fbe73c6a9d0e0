"""An int8 version needs oneDNN: the server refuses to load one without it, naming the remedy, and starts
oneDNN itself unless told otherwise."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from emotion_ai import spec
from emotion_ai_serving.errors import FAILED_PRECONDITION, ServingError
from emotion_ai_serving.servable import Servable
from tensorflow.python.util import _pywrap_util_port


@pytest.mark.skipif(_pywrap_util_port.IsMklEnabled(), reason="oneDNN is on in this process (the suite turns it off)")
def test_an_int8_version_is_refused_with_the_remedy_when_onednn_is_off(tmp_path: Path) -> None:
    (tmp_path / spec.MODEL_CARD).write_text(json.dumps({"model": "keypoints", "compute_dtype": "int8"}))
    with pytest.raises(ServingError) as refused:
        Servable(spec.KEYPOINTS_MODEL, 7, tmp_path)
    assert refused.value.code == FAILED_PRECONDITION
    assert "TF_ENABLE_ONEDNN_OPTS=1" in refused.value.message and str(tmp_path) in refused.value.message


def test_use_onednn_sets_only_what_is_unset() -> None:
    environ: dict[str, str] = {}
    spec.use_onednn(environ)
    assert environ == spec.ONEDNN_ENV == {"TF_ENABLE_ONEDNN_OPTS": "1"}
    chosen = {"TF_ENABLE_ONEDNN_OPTS": "0"}
    spec.use_onednn(chosen)
    assert chosen == {"TF_ENABLE_ONEDNN_OPTS": "0"}  # an operator's explicit choice wins


def test_compose_and_kubernetes_start_tf_serving_with_onednn() -> None:
    import yaml

    from .conftest import REPO

    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    for service in ("serving", "serving-gpu"):
        assert spec.ONEDNN_ENV.items() <= compose["services"][service]["environment"].items(), service
    manifests = yaml.safe_load_all((REPO / "deploy" / "kubernetes" / "deployment.yaml").read_text())
    containers = [c for m in manifests if m and m.get("kind") == "Deployment"
                  for c in m["spec"]["template"]["spec"]["containers"] if c["name"] == "tf-serving"]
    assert len(containers) == 1
    assert spec.ONEDNN_ENV.items() <= {e["name"]: e["value"] for e in containers[0]["env"]}.items()


def test_the_server_started_with_onednn_off_exits_naming_the_remedy() -> None:
    import os
    import subprocess
    import sys

    from .conftest import REPO

    serve = Path(sys.executable).with_name("emotion-ai-serve")
    env = dict(os.environ, TF_ENABLE_ONEDNN_OPTS="0", TF_CPP_MIN_LOG_LEVEL="2")
    base = REPO / "models_export" / "keypoints"
    run = subprocess.run([str(serve), "--model_name=keypoints", f"--model_base_path={base}", "--port=0",
                          "--rest_api_port=0", "--log_format=text"], env=env, capture_output=True, text=True,
                         timeout=300, check=False)
    assert run.returncode == 1
    assert "is an int8 model" in run.stderr and "TF_ENABLE_ONEDNN_OPTS=1" in run.stderr
