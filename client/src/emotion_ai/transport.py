"""What both transports (gRPC and REST) share: model references, results, deadlines and retries."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

import numpy as np

from . import spec
from .errors import RequestTimeoutError, ServerUnavailableError

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class ModelRef:
    """Which served model to call: name, optional version *or* version label, and signature."""

    name: str
    version: int | None = None
    version_label: str | None = None
    signature_name: str = spec.SIGNATURE_NAME

    def __post_init__(self) -> None:
        if self.version is not None and self.version_label is not None:
            raise ValueError("give a model version or a version label, not both")
        if self.version is not None and self.version <= 0:
            raise ValueError(f"model versions are positive integers, got {self.version}")

    def describe(self) -> str:
        if self.version is not None:
            return f"{self.name} (version {self.version})"
        if self.version_label is not None:
            return f"{self.name} (label {self.version_label})"
        return self.name


@dataclass(frozen=True)
class TensorSpec:
    """dtype name (e.g. "DT_UINT8") and shape (None = unknown size; shape None = unknown rank)."""

    dtype: str
    shape: tuple[int | None, ...] | None


@dataclass(frozen=True)
class SignatureInfo:
    """Inputs and outputs of one signature, as reported by the server's metadata API."""

    inputs: dict[str, TensorSpec]
    outputs: dict[str, TensorSpec]
    method_name: str = ""


@dataclass(frozen=True)
class VersionStatus:
    """One entry of a model's status: version, state name (e.g. "AVAILABLE") and error, if any."""

    version: int
    state: str
    error_code: str = "OK"
    error_message: str = ""


def all_available(states: Mapping[str, Sequence[VersionStatus]]) -> bool:
    """Whether every model in a status() answer has a version AVAILABLE."""
    return all(any(v.state == "AVAILABLE" for v in versions) for versions in states.values())


def is_missing_model_text(message: str) -> bool:
    """TF Serving's wording when a version label or signature name does not exist (it is not a 404)."""
    return "Unrecognized servable version label" in message or (
        "signature name" in message and "not found" in message
    )


class Transport(Protocol):
    """The TF Serving calls the client makes; `timeout` is the whole call's budget in seconds."""

    def predict(
        self, model: ModelRef, inputs: dict[str, np.ndarray], timeout: float
    ) -> dict[str, np.ndarray]:
        """Run `model` on `inputs` and return its outputs by name."""
        ...

    def metadata(self, model: ModelRef, timeout: float) -> dict[str, SignatureInfo]:
        """Signature definitions of `model`, by signature name."""
        ...

    def status(self, model: ModelRef, timeout: float) -> list[VersionStatus]:
        """Version states of `model`."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...


@dataclass
class RetryPolicy:
    """Bounded retries with exponential backoff, all inside one deadline."""

    retries: int = 3
    backoff: float = 0.1
    max_backoff: float = 2.0
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)


class RetryableError(Exception):
    """One attempt found the server unreachable; the retry loop decides what follows."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def with_retries(
    attempt: Callable[[float], T], *, timeout: float, policy: RetryPolicy, what: str
) -> T:
    """Call `attempt(remaining_seconds)` until it succeeds, retrying `RetryableError` failures.

    Gives up with `ServerUnavailableError` after `policy.retries` retries, or earlier when the
    next backoff would overrun the deadline; raises `RequestTimeoutError` when the deadline has
    already passed before an attempt could start.
    """
    deadline = time.monotonic() + timeout
    last = "no attempt made"
    for n in range(policy.retries + 1):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            if n == 0:
                raise RequestTimeoutError(f"{what}: no time left (timeout {timeout:g} s)")
            break
        try:
            return attempt(remaining)
        except RetryableError as exc:
            last = exc.reason
            if n == policy.retries:
                break
            delay = min(policy.max_backoff, policy.backoff * (2**n))
            if time.monotonic() + delay >= deadline:
                break
            log.debug("%s: %s; retry %d in %.2f s", what, last, n + 1, delay)
            policy.sleep(delay)
    raise ServerUnavailableError(
        f"{what}: server unavailable ({last}); gave up after {n + 1} attempt(s)"
    )
