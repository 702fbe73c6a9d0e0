"""The gateway's deployment files: the Dockerfile, the compose service and the Kubernetes manifests agree with
the CLI (their flags parse), run it unprivileged, probe /healthz and /readyz, and validate offline."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from emotion_ai import cli

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "deploy" / "gateway" / "Dockerfile"
K8S = REPO / "deploy" / "kubernetes" / "gateway"
KUBERNETES_VERSION = "1.33.0"  # as tests/serving/test_kubernetes.py


def _parses(argv: list[str]) -> object:
    return cli.build_parser().parse_args(argv)


def _entrypoint() -> list[str]:
    (line,) = [x for x in DOCKERFILE.read_text().splitlines() if x.startswith("ENTRYPOINT")]
    return json.loads(line.removeprefix("ENTRYPOINT"))


def test_the_dockerfile_installs_the_extra_and_runs_the_gateway_unprivileged():
    text = DOCKERFILE.read_text()
    assert "'/src/client[gateway]'" in text
    assert re.search(r"^USER 10001$", text, re.M)
    assert "EXPOSE 8000" in text and "/healthz" in text
    froms = re.findall(r"^FROM (\S+)", text, re.M)
    assert froms and all(f.startswith("python:${PYTHON_VERSION}-slim") for f in froms)
    entry = _entrypoint()
    assert entry[:2] == ["emotion-ai", "gateway"]
    args = _parses(entry[1:])
    assert (args.listen_host, args.port) == ("0.0.0.0", 8000)
    ignore = (DOCKERFILE.parent / "Dockerfile.dockerignore").read_text().splitlines()
    assert ignore[ignore.index("*") + 1 :][:3] == ["!client/pyproject.toml", "!client/README.md", "!client/src/"]


def test_docker_compose_up_starts_the_gateway_behind_a_healthy_server():
    services = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]
    gateway = services["gateway"]
    assert "profiles" not in gateway and "profiles" not in services["serving"]  # both start with `up`
    assert gateway["build"]["dockerfile"] == "deploy/gateway/Dockerfile"
    assert gateway["depends_on"]["serving"]["condition"] == "service_healthy"
    assert gateway["environment"]["EMOTION_AI_HOST"] == "serving"
    assert gateway["ports"] == ["${EMOTION_AI_BIND:-127.0.0.1}:8000:8000"]
    assert gateway["read_only"] is True and "/tmp" in gateway["tmpfs"]
    args = _parses(_entrypoint()[1:] + gateway["command"])
    assert args.wait > 0


def _render() -> list[dict]:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    docs = [d for f in kustomization["resources"] for d in yaml.safe_load_all((K8S / f).read_text()) if d]
    for doc in docs:
        doc["metadata"]["namespace"] = kustomization["namespace"]
    return docs


def test_the_kubernetes_manifests_validate_and_wire_the_probes():
    docs = _render()
    assert sorted(d["kind"] for d in docs) == ["Deployment", "HorizontalPodAutoscaler", "PodDisruptionBudget",
                                               "Service"]
    for doc in docs:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    pod = deployment["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    args = _parses(_entrypoint()[1:] + container["args"])
    assert args.endpoints == ["dns:///tf-serving-headless.emotion-ai.svc.cluster.local:8500"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert {m["mountPath"] for m in container["volumeMounts"]} == {"/tmp"}
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert pod["metadata"]["annotations"]["prometheus.io/path"] == "/metrics"
    keys = container["env"][0]
    assert keys["name"] == "EMOTION_AI_GATEWAY_API_KEYS" and keys["valueFrom"]["secretKeyRef"]["optional"] is True
    labels = pod["metadata"]["labels"]
    for doc in docs:
        selector = doc["spec"].get("selector")
        if selector:
            assert (selector.get("matchLabels") or selector).items() <= labels.items()
    (hpa,) = [d for d in docs if d["kind"] == "HorizontalPodAutoscaler"]
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]


@pytest.mark.parametrize("tool", ["kubectl", "docker-compose"])
def test_the_real_tools_accept_them(tool):
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} is not installed")
    cmd = ["kubectl", "kustomize", str(K8S)] if tool == "kubectl" else ["docker-compose", "config", "-q"]
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
