"""gRPC transport: TF Serving's PredictionService / ModelService via the client's own messages.

Methods are called by their upstream full names, so the server sees exactly what the official
`tensorflow-serving-api` stubs send, without importing TensorFlow.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import grpc
import numpy as np

from ._proto import tfs_pb2 as pb
from .errors import ModelNotFoundError, RequestTimeoutError, ServerError, ServerUnavailableError
from .tensors import dtype_name, make_tensor_proto, tensor_proto_to_numpy
from .transport import (
    ModelRef,
    RetryableError,
    RetryPolicy,
    SignatureInfo,
    TensorSpec,
    VersionStatus,
    add_served_versions,
    is_missing_model_text,
    with_retries,
)

PREDICT = "/tensorflow.serving.PredictionService/Predict"
GET_MODEL_METADATA = "/tensorflow.serving.PredictionService/GetModelMetadata"
GET_MODEL_STATUS = "/tensorflow.serving.ModelService/GetModelStatus"

#: Default cap on gRPC message size in both directions (gRPC's own default is 4 MiB).
MAX_MESSAGE_BYTES = 256 * 1024 * 1024


def model_spec(model: ModelRef, *, with_signature: bool = True) -> pb.ModelSpec:
    """ModelSpec for a model reference (version or label set only when given)."""
    s = pb.ModelSpec(name=model.name)
    if with_signature:
        s.signature_name = model.signature_name
    if model.version is not None:
        s.version.value = model.version
    elif model.version_label is not None:
        s.version_label = model.version_label
    return s


def map_rpc_error(err: grpc.RpcError, model: ModelRef) -> Exception:
    """Typed client error for a failed RPC (UNAVAILABLE is handled by the retry loop, not here)."""
    code = err.code() if hasattr(err, "code") else grpc.StatusCode.UNKNOWN
    details = (err.details() if hasattr(err, "details") else None) or str(err)
    name = code.name if code is not None else "UNKNOWN"
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return RequestTimeoutError(
            f"{model.describe()}: the request exceeded its deadline ({details})"
        )
    if code == grpc.StatusCode.NOT_FOUND or is_missing_model_text(details):
        return ModelNotFoundError(details, code=name)
    return ServerError(details, code=name)


def rpc_failure(err: grpc.RpcError, model: ModelRef, where: str) -> Exception:
    """What a failed attempt raises: the "wrong port" hint, `RetryableError` (UNAVAILABLE) or `map_rpc_error`."""
    details = err.details() or ""
    if "http1.x server" in details or "Failed parsing HTTP/2" in details:
        return ServerUnavailableError(
            f"{where}: that port speaks HTTP/1.1 (REST?), not gRPC: use protocol='rest' for "
            "this port, or TF Serving's gRPC port (--port, 8500 by default)"
        )
    if err.code() == grpc.StatusCode.UNAVAILABLE:
        return RetryableError(details or "UNAVAILABLE")
    return map_rpc_error(err, model)


def channel_options(target: str, max_message_bytes: int) -> list[tuple[str, Any]]:
    """Channel arguments of both gRPC transports (sync and `grpc.aio`)."""
    options: list[tuple[str, Any]] = [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        # Reconnect quickly once a stopped server is back (gRPC's default first backoff is 1 s).
        ("grpc.initial_reconnect_backoff_ms", 100),
        ("grpc.min_reconnect_backoff_ms", 100),
        ("grpc.max_reconnect_backoff_ms", 2000),
    ]
    if target.startswith("dns:"):  # every address the name resolves to (a headless Service), per call
        options.append(("grpc.lb_policy_name", "round_robin"))
    return options


def bind_methods(channel: Any) -> tuple[Any, Any, Any]:
    """(Predict, GetModelMetadata, GetModelStatus) callables on a `grpc` or `grpc.aio` channel."""
    return (
        channel.unary_unary(PREDICT, request_serializer=pb.PredictRequest.SerializeToString,
                            response_deserializer=pb.PredictResponse.FromString),
        channel.unary_unary(GET_MODEL_METADATA, request_serializer=pb.GetModelMetadataRequest.SerializeToString,
                            response_deserializer=pb.GetModelMetadataResponse.FromString),
        channel.unary_unary(GET_MODEL_STATUS, request_serializer=pb.GetModelStatusRequest.SerializeToString,
                            response_deserializer=pb.GetModelStatusResponse.FromString),
    )


def predict_request(model: ModelRef, inputs: dict[str, np.ndarray]) -> pb.PredictRequest:
    """PredictRequest for `model` with `inputs` as TensorProtos."""
    request = pb.PredictRequest(model_spec=model_spec(model))
    for key, value in inputs.items():
        request.inputs[key].CopyFrom(make_tensor_proto(value))
    return request


def outputs_from_reply(response: pb.PredictResponse, target: str) -> dict[str, np.ndarray]:
    """Outputs by name of a PredictResponse (ServerError if a tensor is malformed)."""
    try:
        return {key: tensor_proto_to_numpy(t) for key, t in response.outputs.items()}
    except (TypeError, ValueError) as exc:
        raise ServerError(f"malformed predict reply from {target}: {exc}") from exc


def metadata_request(model: ModelRef) -> pb.GetModelMetadataRequest:
    """GetModelMetadataRequest for the signature_def metadata of `model`."""
    return pb.GetModelMetadataRequest(
        model_spec=model_spec(model, with_signature=False), metadata_field=["signature_def"]
    )


def signatures_from_reply(response: pb.GetModelMetadataResponse) -> dict[str, SignatureInfo]:
    """Signatures by name from a GetModelMetadataResponse."""
    if "signature_def" not in response.metadata:
        raise ServerError("metadata response has no signature_def entry")
    sig_map = pb.SignatureDefMap()
    sig_map.ParseFromString(response.metadata["signature_def"].value)
    return {name: _signature_info(sd) for name, sd in sig_map.signature_def.items()}


def status_request(model: ModelRef) -> pb.GetModelStatusRequest:
    """GetModelStatusRequest for `model`."""
    return pb.GetModelStatusRequest(model_spec=model_spec(model, with_signature=False))


def versions_from_reply(response: pb.GetModelStatusResponse) -> list[VersionStatus]:
    """Version states from a GetModelStatusResponse."""
    return [
        VersionStatus(
            version=int(s.version),
            state=pb.ModelVersionStatus.State.Name(s.state),
            error_code=pb.ErrorCode.Name(s.status.error_code),
            error_message=s.status.error_message,
        )
        for s in response.model_version_status
    ]


class GrpcTransport:
    """Calls TF Serving over one shared insecure gRPC channel (thread-safe)."""

    def __init__(
        self,
        target: str,
        *,
        policy: RetryPolicy | None = None,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
    ):
        self.target = target
        self.policy = policy or RetryPolicy()
        self._channel = grpc.insecure_channel(target, options=channel_options(target, max_message_bytes))
        self._predict, self._metadata, self._status = bind_methods(self._channel)

    def _call(self, method: Callable[..., Any], request: Any, model: ModelRef, timeout: float, what: str) -> Any:
        deadline = time.monotonic() + timeout

        def attempt(remaining: float) -> Any:
            try:
                return method(request, timeout=remaining)
            except grpc.RpcError as err:
                raise rpc_failure(err, model, f"{what} {self.target}") from err

        try:
            return with_retries(
                attempt, timeout=timeout, policy=self.policy, what=f"{what} {self.target}"
            )
        except ModelNotFoundError as exc:
            add_served_versions(exc, model, lambda ref: self.status(ref, deadline - time.monotonic()))
            raise

    def predict(
        self, model: ModelRef, inputs: dict[str, np.ndarray], timeout: float
    ) -> dict[str, np.ndarray]:
        response = self._call(
            self._predict, predict_request(model, inputs), model, timeout, f"predict {model.describe()} at"
        )
        return outputs_from_reply(response, self.target)

    def metadata(self, model: ModelRef, timeout: float) -> dict[str, SignatureInfo]:
        response = self._call(
            self._metadata, metadata_request(model), model, timeout, f"metadata {model.describe()} at"
        )
        return signatures_from_reply(response)

    def status(self, model: ModelRef, timeout: float) -> list[VersionStatus]:
        response = self._call(
            self._status, status_request(model), model, timeout, f"status {model.describe()} at"
        )
        return versions_from_reply(response)

    def close(self) -> None:
        self._channel.close()


def _tensor_spec(info: pb.TensorInfo) -> TensorSpec:
    if info.tensor_shape.unknown_rank:
        shape = None
    else:
        shape = tuple(None if d.size < 0 else int(d.size) for d in info.tensor_shape.dim)
    return TensorSpec(dtype=dtype_name(info.dtype), shape=shape)


def _signature_info(sd: pb.SignatureDef) -> SignatureInfo:
    return SignatureInfo(
        inputs={k: _tensor_spec(v) for k, v in sd.inputs.items()},
        outputs={k: _tensor_spec(v) for k, v in sd.outputs.items()},
        method_name=sd.method_name,
    )
