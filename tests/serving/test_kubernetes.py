"""deploy/kubernetes: every manifest validates against the Kubernetes API schemas (offline, pinned
version), the config copies match serving/*.config, the image and flags match docker-compose.yml, and
the readiness probe works against a real server."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import kubernetes_validate  # a test requirement (requirements-dev.txt): missing is a broken setup, not a skip
import pytest
import yaml
from emotion_ai import spec

from .conftest import REPO, compose_image_and_flags

K8S = REPO / "deploy" / "kubernetes"
KUBERNETES_VERSION = "1.33.0"  # the API version the manifests are validated against (README "Scaling out")
CLUSTER_SCOPED = {"Namespace"}


def render() -> list[dict]:
    """The resources `kubectl apply -k deploy/kubernetes` creates (the kustomize features used here)."""
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    docs = [d for f in kustomization["resources"] for d in yaml.safe_load_all((K8S / f).read_text()) if d]
    for generator in kustomization.get("configMapGenerator", []):
        data = {Path(f).name: (K8S / f).read_text() for f in generator["files"]}
        docs.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": generator["name"]},
                     "data": data})
    for doc in docs:
        if doc["kind"] not in CLUSTER_SCOPED:
            doc["metadata"]["namespace"] = kustomization["namespace"]
    return docs


def by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def test_every_manifest_validates_against_the_pinned_kubernetes_api():
    docs = render()
    assert sorted(d["kind"] for d in docs) == sorted(
        ["Namespace", "Deployment", "Service", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget",
         "ConfigMap"])
    for doc in docs:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    broken = by_kind(render(), "Deployment")[0]
    broken["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "8500"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_config_copies_match_serving_configs():
    for name in ("models.config", "batching.config", "monitoring.config"):
        assert (K8S / "config" / name).read_bytes() == (REPO / "serving" / name).read_bytes(), (
            f"deploy/kubernetes/config/{name} differs from serving/{name}: run scripts/sync_kubernetes_config.sh")


def test_deployment_matches_compose_and_wires_services_hpa_and_pdb():
    docs = render()
    (deployment,) = by_kind(docs, "Deployment")
    pod = deployment["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    image, compose_flags = compose_image_and_flags()
    assert container["image"] == image
    names = {f.split("=")[0] for f in container["args"]}
    assert {f.split("=")[0] for f in compose_flags} - {"--file_system_poll_wait_seconds"} <= names
    assert {p["containerPort"] for p in container["ports"]} == {8500, 8501}
    assert container["resources"]["requests"]["cpu"] and container["resources"]["limits"]["memory"]
    labels = pod["metadata"]["labels"]
    assert pod["metadata"]["annotations"]["prometheus.io/path"] == "/monitoring/prometheus/metrics"
    for service in by_kind(docs, "Service"):
        assert service["spec"]["selector"].items() <= labels.items()
        assert {p["port"] for p in service["spec"]["ports"]} == {8500, 8501}
    assert [s["spec"].get("clusterIP") for s in by_kind(docs, "Service")] == [None, "None"]
    (hpa,) = by_kind(docs, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert hpa["spec"]["minReplicas"] >= 2
    (pdb,) = by_kind(docs, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes["config"]["configMap"]["name"] == by_kind(docs, "ConfigMap")[0]["metadata"]["name"]
    init = pod["spec"]["initContainers"][0]
    assert {m["mountPath"] for m in init["volumeMounts"]} == {"/models"}
    assert "models_export" in (K8S / "models.Dockerfile").read_text()


def test_readiness_probe_works_against_a_server(serving):
    if shutil.which("bash") is None:
        pytest.skip("bash not available")
    (deployment,) = by_kind(render(), "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    command = container["readinessProbe"]["exec"]["command"]
    assert command == container["startupProbe"]["exec"]["command"]
    host, port = serving.rest_url.removeprefix("http://").split(":")
    script = command[2].replace("127.0.0.1/8501", f"{host}/{port}")
    assert script != command[2]
    assert subprocess.run(["bash", "-c", script], timeout=30, check=False).returncode == 0
    served = " ".join(spec.SERVED_MODELS)
    assert f"for m in {served}; do" in script  # every model of serving/models.config must be AVAILABLE
    missing = script.replace(served, "keypoints no_such_model")
    assert subprocess.run(["bash", "-c", missing], timeout=30, check=False).returncode != 0
