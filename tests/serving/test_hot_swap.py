"""Version lifecycle on the embedded server: ports open only after the initial load, a new
version is hot-swapped in under load with zero failed requests, a broken version is reported
and does not take over, removing versions falls back, batching keeps answers apart, SIGTERM
shuts down cleanly."""

from __future__ import annotations

import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import pytest
import requests
import tensorflow as tf
from emotion_ai import spec
from emotion_ai_serving.local_server import LocalServer, port_open
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from .conftest import SERVING_DIR

KP, EMO = spec.KEYPOINTS_MODEL, spec.EMOTION_MODEL
POLL_S = 0.5
#: Loading + warming a SavedModel on the shared 2-core box; the swap must land within
#: one poll interval plus this.
LOAD_ALLOWANCE_S = 15.0


def kp_request(seed: int = 0) -> predict_pb2.PredictRequest:
    size = spec.KEYPOINTS_INPUT_SIZE
    img = np.random.default_rng(seed).integers(0, 256, (1, size, size, 1), dtype=np.uint8)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = KP
    request.inputs[spec.INPUT_KEY].CopyFrom(tf.make_tensor_proto(img))
    return request


class ClientLoop:
    """Clients hammering the keypoints model over gRPC and REST, recording every outcome."""

    def __init__(self, server: LocalServer) -> None:
        self.server = server
        self.failures: list[str] = []
        self.served: list[tuple[float, int]] = []
        self.count = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._grpc_loop, args=(i,), daemon=True) for i in range(2)
        ] + [threading.Thread(target=self._rest_loop, daemon=True)]

    def __enter__(self) -> ClientLoop:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)

    def _record(self, version: int | None, failure: str | None) -> None:
        with self._lock:
            self.count += 1
            if failure:
                self.failures.append(failure)
            if version is not None:
                self.served.append((time.monotonic(), version))

    def _grpc_loop(self, seed: int) -> None:
        with grpc.insecure_channel(f"127.0.0.1:{self.server.grpc_port}") as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            request = kp_request(seed)
            while not self._stop.is_set():
                try:
                    response = stub.Predict(request, timeout=30)
                    self._record(response.model_spec.version.value, None)
                except grpc.RpcError as exc:
                    self._record(None, f"grpc {exc.code()}: {exc.details()}")

    def _rest_loop(self) -> None:
        url = f"http://127.0.0.1:{self.server.rest_port}/v1/models/{KP}:predict"
        body = {"instances": tf.make_ndarray(kp_request(9).inputs[spec.INPUT_KEY]).tolist()}
        with requests.Session() as session:
            while not self._stop.is_set():
                try:
                    resp = session.post(url, json=body, timeout=30)
                    failure = None if resp.status_code == 200 else f"rest {resp.text}"
                except requests.RequestException as exc:
                    failure = f"rest {exc}"
                self._record(None, failure)

    def wait_for_version(self, version: int, since: float, timeout: float) -> float:
        """Seconds from `since` until a response first came from `version`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                hits = [t for t, v in self.served if v == version and t >= since]
            if hits:
                return hits[0] - since
            time.sleep(0.05)
        raise AssertionError(f"version {version} not served within {timeout}s")

    def latest_version(self) -> int:
        with self._lock:
            return self.served[-1][1]


def status(server: LocalServer, model: str) -> dict[int, dict]:
    resp = requests.get(f"http://127.0.0.1:{server.rest_port}/v1/models/{model}", timeout=10)
    assert resp.status_code == 200, resp.text
    return {int(e["version"]): e for e in resp.json()["model_version_status"]}


def wait_log(server: LocalServer, text: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in server.log_path.read_text(errors="replace"):
            return
        assert server.alive(), server.log_tail()
        time.sleep(0.2)
    raise AssertionError(f"{text!r} not logged within {timeout}s:\n{server.log_tail()}")


@pytest.mark.slow
def test_version_lifecycle_under_load(tmp_path: Path, export_tree: Path) -> None:
    root = tmp_path / "models_export"
    shutil.copytree(export_tree / KP, root / KP)
    for other in set(spec.SERVED_MODELS) - {KP, EMO}:  # the rest of the ladder (emotion_accurate), ready
        shutil.copytree(export_tree / other, root / other)
    (root / EMO).mkdir(parents=True)  # no version yet: the server must not open its ports
    server = LocalServer(
        extra_args=[
            f"--model_config_file={SERVING_DIR / 'models.config'}",
            f"--models_root={root}",
            f"--file_system_poll_wait_seconds={POLL_S}",
            "--enable_batching",
            f"--batching_parameters_file={SERVING_DIR / 'batching.config'}",
            "--load_retry_interval_micros=200000",
        ],
        workdir=tmp_path,
    ).start(wait=False)
    try:
        wait_log(server, f"No versions of servable {EMO} found under base path", 90)
        assert not port_open(server.rest_port) and not port_open(server.grpc_port)
        shutil.copytree(export_tree / EMO / "1", root / EMO / "1")
        server.wait_ready()

        with ClientLoop(server) as clients:
            time.sleep(1.0)
            assert clients.latest_version() == 1
            # 1 -> 2, copied straight into place (not atomically): half-written dirs are skipped
            started = time.monotonic()
            shutil.copytree(export_tree / KP / "1", root / KP / "2")
            took = clients.wait_for_version(2, started, POLL_S + LOAD_ALLOWANCE_S)
            print(f"version 2 served {took:.2f}s after the copy started")
            time.sleep(2 * POLL_S)
            states = status(server, KP)
            assert states[2]["state"] == "AVAILABLE" and states[1]["state"] == "END"
            assert list(states) == [2, 1]

            # a broken version 3 fails to load, is reported, and version 2 keeps serving
            (root / KP / "3").mkdir()
            (root / KP / "3" / "saved_model.pb").write_bytes(b"not a SavedModel")
            deadline = time.monotonic() + 30
            while status(server, KP).get(3, {}).get("status", {}).get("error_code", "OK") == "OK":
                assert time.monotonic() < deadline, server.log_tail()
                time.sleep(POLL_S)
            broken = status(server, KP)[3]
            assert broken["state"] == "END" and broken["status"]["error_message"]
            assert status(server, KP)[2]["state"] == "AVAILABLE"
            assert clients.latest_version() == 2

            # removing 3 and 2 falls back to 1
            shutil.rmtree(root / KP / "3")
            started = time.monotonic()
            shutil.rmtree(root / KP / "2")
            clients.wait_for_version(1, started, POLL_S + LOAD_ALLOWANCE_S)
            time.sleep(2 * POLL_S)
            assert status(server, KP)[1]["state"] == "AVAILABLE"
            assert status(server, KP)[2]["state"] == "END"
        assert clients.count > 50
        assert clients.failures == [], clients.failures[:5]

        # batching must hand every concurrent caller its own answer
        with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)

            def keypoints(seed: int) -> np.ndarray:
                response = stub.Predict(kp_request(seed), timeout=30)
                return tf.make_ndarray(response.outputs[spec.KEYPOINTS_OUTPUT_KEY])

            alone = [keypoints(seed) for seed in range(8)]
            with ThreadPoolExecutor(8) as pool:
                together = list(pool.map(keypoints, range(8)))
            for a, b in zip(alone, together, strict=True):
                # batch size changes oneDNN kernels: tiny float drift, never another caller's answer
                np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-3)
    finally:
        code = server.stop()
    assert code == 0, server.log_tail()
    assert "server stopped" in server.log_tail()


@pytest.mark.slow
def test_model_config_file_is_polled_and_a_broken_edit_keeps_the_running_config(
    tmp_path: Path, export_tree: Path
) -> None:
    def config(*models: str) -> str:
        return "model_config_list {\n" + "".join(
            f'  config {{ name: "{m}" base_path: "{export_tree / m}" model_platform: "tensorflow" }}\n'
            for m in models
        ) + "}\n"

    config_file = tmp_path / "models.config"
    config_file.write_text(config(KP))
    server = LocalServer(
        extra_args=[f"--model_config_file={config_file}", "--model_config_file_poll_wait_seconds=1"],
        workdir=tmp_path,
    ).start()
    try:
        url = f"http://127.0.0.1:{server.rest_port}/v1/models/{EMO}"
        assert requests.get(url, timeout=10).status_code == 404
        config_file.write_text(config(KP, EMO))  # adding a model loads it without a restart
        deadline = time.monotonic() + 60
        while requests.get(url, timeout=10).status_code != 200 or status(server, EMO)[1]["state"] != "AVAILABLE":
            assert time.monotonic() < deadline, server.log_tail()
            time.sleep(0.2)
        config_file.write_text("model_config_list { config { name: ")  # a half-written edit
        wait_log(server, "Failed to read ModelServerConfig file", 30)
        assert status(server, EMO)[1]["state"] == "AVAILABLE" and status(server, KP)[1]["state"] == "AVAILABLE"
    finally:
        code = server.stop()
    assert code == 0, server.log_tail()
