"""What both transports (gRPC and REST) share: model references, results, deadlines and retries."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

import numpy as np

from . import spec
from .errors import EmotionAIError, ModelNotFoundError, RequestTimeoutError, ServerUnavailableError

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
        """The reference for messages: "emotion", "emotion (version 9)" or "emotion (label stable)"."""
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


def ladder_refs(in_use: Mapping[str, ModelRef]) -> tuple[set[str], dict[str, ModelRef]]:
    """The models a ladder status asks about: each of `spec.SERVED_MODELS` (latest version) with the models
    `in_use` (task -> `ModelRef`, pinned versions kept) in their place, then any other model in use.

    Args:
        in_use: a client's `models`.

    Returns:
        (names of the models in use, model name -> `ModelRef` to query).
    """
    used = {ref.name: ref for ref in in_use.values()}
    refs = {name: used.get(name, ModelRef(name)) for name in spec.SERVED_MODELS}
    return set(used), refs | used


def add_served_versions(
    exc: ModelNotFoundError, model: ModelRef, status: Callable[[ModelRef], Sequence[VersionStatus]]
) -> None:
    """Name in `exc` the versions the server has AVAILABLE, when `model` asked for a version or label
    (one status call, made on this error path only; nothing is added when that call fails too).

    Args:
        exc: the error of a call for `model`.
        model: the model the call named.
        status: the transport's status call for a model reference (within the failed call's deadline).
    """
    if model.version is None and model.version_label is None:
        return
    try:
        versions = status(ModelRef(model.name))
    except ModelNotFoundError:  # not even the model's name is served
        versions = []
    except EmotionAIError as err:
        log.debug("versions of %s unknown: %s", model.name, err)
        return
    _set_available(exc, versions)


async def add_served_versions_async(
    exc: ModelNotFoundError, model: ModelRef,
    status: Callable[[ModelRef], Awaitable[Sequence[VersionStatus]]],
) -> None:
    """`add_served_versions` for the asyncio transports: `status` is their (awaitable) status call."""
    if model.version is None and model.version_label is None:
        return
    try:
        versions = await status(ModelRef(model.name))
    except ModelNotFoundError:
        versions = []
    except EmotionAIError as err:
        log.debug("versions of %s unknown: %s", model.name, err)
        return
    _set_available(exc, versions)


def _set_available(exc: ModelNotFoundError, versions: Sequence[VersionStatus]) -> None:
    exc.set_served_versions(tuple(sorted(v.version for v in versions if v.state == "AVAILABLE")))


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


class RetrySchedule:
    """When to attempt, back off or give up: the retry policy of one call, shared by `with_retries`
    and the asyncio loop (`aio_transport.with_retries_async`), which only differ in how they wait."""

    def __init__(self, *, timeout: float, policy: RetryPolicy, what: str):
        self.timeout, self.policy, self.what = timeout, policy, what
        self.deadline = time.monotonic() + timeout
        self.attempts = 0
        self.last = "no attempt made"

    def remaining(self) -> float | None:
        """Seconds left for the next attempt, or None when the deadline has passed.

        Raises `RequestTimeoutError` when it passed before the first attempt could start.
        """
        remaining = self.deadline - time.monotonic()
        if remaining > 0:
            self.attempts += 1
            return remaining
        if self.attempts == 0:
            raise RequestTimeoutError(f"{self.what}: no time left (timeout {self.timeout:g} s)")
        return None

    def backoff(self, exc: RetryableError) -> float | None:
        """Seconds to wait after the failed attempt `exc`, or None to give up (retries spent, or
        the wait would overrun the deadline)."""
        self.last = exc.reason
        if self.attempts > self.policy.retries:
            return None
        delay = min(self.policy.max_backoff, self.policy.backoff * (2 ** (self.attempts - 1)))
        if time.monotonic() + delay >= self.deadline:
            return None
        log.debug("%s: %s; retry %d in %.2f s", self.what, self.last, self.attempts, delay)
        return delay

    def give_up(self) -> ServerUnavailableError:
        return ServerUnavailableError(
            f"{self.what}: server unavailable ({self.last}); gave up after {self.attempts} attempt(s)"
        )


def with_retries(
    attempt: Callable[[float], T], *, timeout: float, policy: RetryPolicy, what: str
) -> T:
    """Call `attempt(remaining_seconds)` until it succeeds, retrying `RetryableError` failures.

    Gives up with `ServerUnavailableError` after `policy.retries` retries, or earlier when the
    next backoff would overrun the deadline; raises `RequestTimeoutError` when the deadline has
    already passed before an attempt could start.
    """
    schedule = RetrySchedule(timeout=timeout, policy=policy, what=what)
    while (remaining := schedule.remaining()) is not None:
        try:
            return attempt(remaining)
        except RetryableError as exc:
            delay = schedule.backoff(exc)
            if delay is None:
                break
            policy.sleep(delay)
    raise schedule.give_up()
