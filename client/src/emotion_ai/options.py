"""`ClientOptions`: every setting of an `EmotionClient`, validated, with its default defined once."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from . import spec
from .grpc_transport import MAX_MESSAGE_BYTES
from .images import MAX_PIXELS
from .transport import ModelRef, RetryPolicy

_HOST_PORT = re.compile(r"(\[[0-9a-fA-F:.]+\]|[^:\s\[\]]+):(\d{1,5})")

Protocol_ = Literal["grpc", "rest"]
#: The protocols a client speaks (`ClientOptions.protocol`).
PROTOCOLS: tuple[str, ...] = get_args(Protocol_)
#: The TCP port numbers a server can listen on.
PORTS = range(1, 65536)
Variant = spec.Variant
ModelOption = str | ModelRef | Mapping[str, Any]


def default_models(variant: Variant = "fast") -> dict[str, ModelRef]:
    """The served models of the export contract for a rung of the model ladder, latest version.

    Args:
        variant: "fast" (the models named "keypoints" and "emotion") or "accurate" (each task's accurate
            variant where one is served, e.g. "emotion_accurate"; its fast model where none is).

    Returns:
        "keypoints" and "emotion" -> `ModelRef` of the served model.

    Raises:
        ValueError: for an unknown variant.
    """
    return {task: ModelRef(spec.served_model(task, variant)) for task in (spec.KEYPOINTS_MODEL, spec.EMOTION_MODEL)}


def check_port(port: int, what: str = "port") -> int:
    """`port`, checked to be a TCP port number (`PORTS`).

    Args:
        port: the port number.
        what: its name in the error message.

    Returns:
        `port`.

    Raises:
        ValueError: outside 1..65535.
    """
    if port not in PORTS:
        raise ValueError(f"{what} must be in {PORTS.start}..{PORTS.stop - 1}, not {port}")
    return port


def check_host(host: str) -> str:
    """`host`, checked to be a host name or address (not empty, no spaces).

    Raises:
        ValueError: an empty host or one with white space.
    """
    if not host or any(c.isspace() for c in host):
        raise ValueError(f"host must be a host name or address, not {host!r}")
    return host


def check_endpoint(endpoint: str) -> str:
    """`endpoint`, checked to be `host:port` (a port in `PORTS`; IPv6 in brackets) or a gRPC `dns:` target.

    Raises:
        ValueError: anything else.
    """
    if endpoint.startswith("dns:"):
        return endpoint
    match = _HOST_PORT.fullmatch(endpoint)
    if match is None:
        raise ValueError(f"endpoint {endpoint!r} is not host:port (e.g. 10.0.0.5:8500, [::1]:8501)")
    check_port(int(match[2]), f"the port of endpoint {endpoint!r}")
    return endpoint


def _model_ref(value: ModelOption) -> ModelRef:
    if isinstance(value, ModelRef):
        return value
    if isinstance(value, str):
        return ModelRef(value)
    return ModelRef(**dict(value))


@dataclass
class ClientOptions:
    """Settings of an `EmotionClient` (all have defaults that match a local TF Serving).

    Attributes:
        host: server host name or address.
        protocol: "grpc" or "rest".
        grpc_port / rest_port: TF Serving's `--port` / `--rest_api_port`.
        timeout: seconds allowed for each server call, retries included (every call has a deadline).
        retries: retries after UNAVAILABLE / refused connection / HTTP 503, with backoff.
        backoff: first backoff in seconds (doubles each retry, capped at 2 s).
        variant: which rung of the model ladder answers: "fast" (default; the models "keypoints" and
            "emotion") or "accurate" (each task's accurate variant where the server has one, e.g.
            "emotion_accurate"; keypoints has none yet and stays "keypoints"). See `spec.MODEL_VARIANTS`.
        models: "keypoints" and/or "emotion" -> model name, `ModelRef` (name, version or version_label,
            signature_name) or a dict of those fields; an entry here overrides `variant` for its task
            (e.g. `models={"emotion": "emotion_accurate"}` is `variant="accurate"` spelled out).
        keypoints_crop / emotion_crop: crop geometry overrides (default: `spec.CROPS[detector.name]`,
            calibrated for each detector).
        max_pixels: refuse images larger than this many pixels.
        max_message_bytes: gRPC send/receive message limit.
        batch_images: how many images `predict_batch` sends to the models in one request (and the default of
            `emotion-ai predict --batch-images`).
        max_faces_per_request: faces per model request; a crowd (or a batch of crowds) is split
            into several bounded requests, each with its own `timeout`, instead of one that grows
            without limit and misses its deadline.
        endpoints: replicas as `host:port` of the chosen protocol (instead of host + port); with
            several, calls are spread over them round robin and fail over to the next one when one
            refuses, times out or does not serve the model yet (`balancer.BalancedTransport`). gRPC also
            takes one `dns:///name:port` target, balanced per call over every address it resolves to.
        level_faces: turn each crop so a tilted face (roll of `preprocess.LEVEL_FROM_DEGREES` or more, from
            the detector's eye landmarks) reaches the models level; measured on tilted faces: keypoints RMSE
            2.18 -> 1.99 px, emotion accuracy 0.647 -> 0.680 (README, "Detection and video").
        keep_freed_memory: let the process reuse each image's freed buffers instead of faulting them in
            again for the next image (glibc's malloc, process-wide, from the first client that asks:
            `allocator.keep_freed_memory`); 3-6 ms less per 640x480 photo on the reference CPU.
    """

    host: str = "localhost"
    protocol: Protocol_ = "grpc"
    grpc_port: int = spec.GRPC_PORT
    rest_port: int = spec.REST_PORT
    timeout: float = 10.0
    retries: int = RetryPolicy.retries
    backoff: float = RetryPolicy.backoff
    variant: Variant = "fast"
    models: Mapping[str, ModelOption] = field(default_factory=dict)
    keypoints_crop: spec.CropGeometry | None = None
    emotion_crop: spec.CropGeometry | None = None
    max_pixels: int = MAX_PIXELS
    max_message_bytes: int = MAX_MESSAGE_BYTES
    batch_images: int = 8
    max_faces_per_request: int = 32
    endpoints: tuple[str, ...] = ()
    level_faces: bool = True
    keep_freed_memory: bool = True

    def __post_init__(self) -> None:
        self.endpoints = tuple(self.endpoints)
        for endpoint in map(check_endpoint, self.endpoints):
            if endpoint.startswith("dns:") and (self.protocol != "grpc" or len(self.endpoints) != 1):
                raise ValueError(f"{endpoint!r}: a dns: target is for gRPC, as the only endpoint")
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be 'grpc' or 'rest', not {self.protocol!r}")
        check_host(self.host)
        check_port(self.grpc_port, "grpc_port")
        check_port(self.rest_port, "rest_port")
        if self.timeout <= 0:
            raise ValueError("timeout must be positive")
        if self.retries < 0:
            raise ValueError("retries must be >= 0")
        if self.max_faces_per_request < 1 or self.batch_images < 1:
            raise ValueError("max_faces_per_request and batch_images must be at least 1")
        if self.variant not in spec.VARIANTS:
            raise ValueError(f"variant must be one of {', '.join(map(repr, spec.VARIANTS))}, not {self.variant!r}")
        overrides = {}
        for key, value in dict(self.models).items():
            if key not in spec.MODEL_VARIANTS:
                raise ValueError(f"unknown model key {key!r}; use 'keypoints' and/or 'emotion'")
            overrides[key] = _model_ref(value)
        self.models = overrides

    def model_refs(self) -> dict[str, ModelRef]:
        """The model each task is sent to: `variant`'s served models (`default_models`), with the `models`
        entries in their place.

        Returns:
            "keypoints" and "emotion" -> `ModelRef`.
        """
        return default_models(self.variant) | {key: _model_ref(value) for key, value in self.models.items()}


def resolve_options(owner: str, options: ClientOptions | None, named: Mapping[str, Any],
                    more: Mapping[str, Any]) -> ClientOptions:
    """The options of a client built with `options=` *or* keyword options (never both).

    Args:
        owner: the client class's name, for the error message.
        options: the `options=` argument, if given.
        named: the client's named keyword options (host, protocol, ...); None means "not given".
        more: its other keyword options (any `ClientOptions` field), all given.

    Returns:
        `options`, or a `ClientOptions` of the keyword options (defaults for the others).

    Raises:
        TypeError: both `options` and keyword options, or a keyword that is not a `ClientOptions` field.
        ValueError: an invalid option value (see `ClientOptions`).
    """
    given = {k: v for k, v in named.items() if v is not None} | dict(more)
    if options is not None and given:
        raise TypeError(f"{owner} takes options= or keyword options, not both (got options= and "
                        f"{', '.join(sorted(given))})")
    return options if options is not None else ClientOptions(**given)
