"""tensorflow.serving.PredictionService and ModelService over grpcio, official messages."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
from tensorflow_serving.apis import (
    classification_pb2,
    inference_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from . import classify_regress as cr
from .errors import ServingError
from .metrics import Metrics
from .prediction import PredictionCore, Target, error_code_value, target_from_spec
from .version_watcher import VersionWatcher

log = logging.getLogger(__name__)


def _timeout(context: grpc.ServicerContext) -> float | None:
    remaining = context.time_remaining()
    return remaining if remaining is not None and remaining < 1e9 else None


class _Base:
    def __init__(self, core: PredictionCore, metrics: Metrics) -> None:
        self.core, self.metrics = core, metrics

    def _call(
        self,
        api: str | None,
        request: Any,
        context: grpc.ServicerContext,
        action: Callable[[], Any],
    ) -> Any:
        started = time.monotonic()
        model = request.model_spec.name if hasattr(request, "model_spec") else None
        code = "OK"
        try:
            return action()
        except ServingError as exc:
            code = exc.code
            context.abort(exc.grpc_code, exc.grpc_details)
        except Exception as exc:
            code = "INTERNAL"
            log.exception("unexpected gRPC error")
            context.abort(grpc.StatusCode.INTERNAL, f"{type(exc).__name__}: {exc}")
        finally:
            if api is not None and model:
                self.metrics.observe(model, api, "GRPC", code, (time.monotonic() - started) * 1e6)
        return None  # unreachable: abort raises


class PredictionServicer(_Base, prediction_service_pb2_grpc.PredictionServiceServicer):
    def Predict(self, request, context):  # noqa: N802
        return self._call(
            "Predict", request, context, lambda: self.core.predict_proto(request, _timeout(context))
        )

    def GetModelMetadata(self, request, context):  # noqa: N802
        return self._call(None, request, context, lambda: self.core.metadata_proto(request))

    def Classify(self, request, context):  # noqa: N802
        return self._call(
            "Classify",
            request,
            context,
            lambda: self.core.classify_regress_proto(
                request, cr.CLASSIFY, _timeout(context), classification_pb2.ClassificationResponse()
            ),
        )

    def Regress(self, request, context):  # noqa: N802
        return self._call(
            "Regress",
            request,
            context,
            lambda: self.core.classify_regress_proto(
                request, cr.REGRESS, _timeout(context), regression_pb2.RegressionResponse()
            ),
        )

    def MultiInference(self, request, context):  # noqa: N802
        return self._call(
            None,
            request,
            context,
            lambda: self.core.multi_inference(
                request, _timeout(context), inference_pb2.MultiInferenceResponse()
            ),
        )


class ModelServicer(_Base, model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, core: PredictionCore, metrics: Metrics, watcher: VersionWatcher) -> None:
        super().__init__(core, metrics)
        self.watcher = watcher

    def GetModelStatus(self, request, context):  # noqa: N802
        def status():
            target = target_from_spec(request.model_spec, request.HasField("model_spec"))
            return self.core.status_proto(Target(target.name, target.version))

        return self._call(None, request, context, status)

    def HandleReloadConfigRequest(self, request, context):  # noqa: N802
        response = model_management_pb2.ReloadConfigResponse()
        try:
            self.watcher.apply_config(request.config)
        except ServingError as exc:
            response.status.error_code = error_code_value(exc.code)
            response.status.error_message = exc.message
            context.set_code(exc.grpc_code)
            context.set_details(exc.grpc_details)
        return response


def build_grpc_server(
    *,
    host: str,
    port: int,
    core: PredictionCore,
    metrics: Metrics,
    watcher: VersionWatcher,
    max_request_bytes: int,
    max_threads: int,
) -> grpc.Server:
    """Server with TF Serving's message-size semantics: only our own request cap applies."""
    server = grpc.server(
        ThreadPoolExecutor(max_workers=max_threads, thread_name_prefix="grpc"),
        options=[
            ("grpc.max_receive_message_length", max_request_bytes),
            ("grpc.max_send_message_length", -1),
            ("grpc.so_reuseport", 0),
        ],
    )
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionServicer(core, metrics), server
    )
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(
        ModelServicer(core, metrics, watcher), server
    )
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise OSError(f"could not bind gRPC port {host}:{port}")
    return server
