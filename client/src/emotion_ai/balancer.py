"""Client-side load balancing and failover over several TF Serving replicas.

`BalancedTransport` holds one transport per endpoint and sends each call to the next healthy one
(round robin). An endpoint that refuses, times out or does not (yet) serve the model is skipped for a
cooldown that doubles while it keeps failing (a restarted server is tried again once it has passed),
and the call moves on to the next endpoint inside the same deadline: every TF Serving call the client
makes is idempotent, so repeating it elsewhere is safe. Per-endpoint counts are kept for monitoring.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import ModelNotFoundError, RequestTimeoutError, ServerUnavailableError
from .transport import ModelRef, RetryPolicy, SignatureInfo, Transport, VersionStatus

if TYPE_CHECKING:
    from .options import ClientOptions

log = logging.getLogger(__name__)

#: Failures that say "this replica cannot answer now", so another one should be tried.
FAILOVER_ERRORS = (ServerUnavailableError, RequestTimeoutError, ModelNotFoundError)


@dataclass
class EndpointStats:
    """What one endpoint did: calls answered, calls failed over, and when it may be tried again."""

    name: str
    ok: int = 0
    failed: int = 0
    down_until: float = 0.0
    cooldown: float = 0.0


class EndpointRotation:
    """Which endpoint to try next, health marks and failover decisions (thread-safe); the calls
    themselves are made by `BalancedTransport` (sync) or `aio_transport.AsyncBalancedTransport`."""

    def __init__(self, transports: Sequence[Any], names: Sequence[str], *, policy: RetryPolicy | None = None,
                 cooldown: float = 0.25, max_cooldown: float = 2.0, clock: Callable[[], float] = time.monotonic):
        if not transports or len(transports) != len(names):
            raise ValueError(f"{type(self).__name__} needs one name per transport, and at least one")
        self.transports = list(transports)
        self.stats = [EndpointStats(n) for n in names]
        self.base_cooldown, self.max_cooldown, self.clock = cooldown, max_cooldown, clock
        self.policy = policy or RetryPolicy()
        self._next = 0
        self._lock = threading.Lock()

    def counts(self) -> dict[str, dict[str, int]]:
        """Answered and failed-over calls per endpoint."""
        with self._lock:
            return {s.name: {"ok": s.ok, "failed": s.failed} for s in self.stats}

    def _order(self) -> list[int]:
        """Endpoints to try: the healthy ones rotated one step per call (so they share the load
        evenly while others are down), then those cooling down, soonest back first."""
        with self._lock:
            k = self._next
            self._next += 1
            now = self.clock()
            healthy = [i for i, s in enumerate(self.stats) if s.down_until <= now]
            resting = sorted((i for i, s in enumerate(self.stats) if s.down_until > now),
                             key=lambda i: self.stats[i].down_until)
        if healthy:
            k %= len(healthy)
            healthy = healthy[k:] + healthy[:k]
        return healthy + resting

    def _mark(self, i: int, ok: bool) -> None:
        with self._lock:
            s = self.stats[i]
            if ok:
                s.ok += 1
                s.cooldown, s.down_until = 0.0, 0.0
                return
            s.failed += 1
            s.cooldown = min(self.max_cooldown, max(self.base_cooldown, 2 * s.cooldown))
            s.down_until = self.clock() + s.cooldown

    def _plan(self, deadline: float) -> Iterator[tuple[int, float]]:
        """One round: (endpoint index, time budget) for each endpoint to try, while time is left."""
        order = self._order()
        for n, i in enumerate(order):
            remaining = deadline - self.clock()
            if remaining <= 0:
                return
            # Leave time for the endpoints after this one: a replica that hangs must not eat the deadline.
            yield i, (remaining if n == len(order) - 1 else remaining / 2)

    def _failed(self, i: int, method: str, exc: Exception, errors: list[Exception]) -> None:
        self._mark(i, ok=False)
        errors.append(exc)
        log.debug("%s on %s failed (%s); trying the next endpoint", method, self.stats[i].name, exc)

    def _backoff(self, round_: int, deadline: float) -> float | None:
        """Seconds to wait after round `round_` failed everywhere, or None to give up."""
        delay = min(self.policy.max_backoff, self.policy.backoff * (2**round_))
        if round_ == self.policy.retries or self.clock() + delay >= deadline:
            return None
        return delay

    def _failure(self, method: str, errors: list[Exception], timeout: float) -> Exception:
        """The error of a call no endpoint could answer."""
        not_found = [e for e in errors if isinstance(e, ModelNotFoundError)]
        if not_found and len(not_found) == len(errors):
            return not_found[-1]
        if not errors:
            return RequestTimeoutError(f"{method}: no time left for any endpoint (timeout {timeout:g} s)")
        names = ", ".join(dict.fromkeys(s.name for s in self.stats))
        return ServerUnavailableError(f"{method}: no endpoint could answer ({names}); last: {errors[-1]}")


class BalancedTransport(EndpointRotation):
    """Round robin over endpoints with failover inside each call's deadline (thread-safe)."""

    transports: list[Transport]

    def _call(self, method: str, *args: Any, timeout: float) -> Any:
        """Try every endpoint once per round; after a round where all failed, back off and go again
        (policy.retries more rounds at most), all inside the deadline."""
        deadline = self.clock() + timeout
        errors: list[Exception] = []
        for round_ in range(self.policy.retries + 1):
            for i, budget in self._plan(deadline):
                try:
                    result = getattr(self.transports[i], method)(*args, timeout=budget)
                except FAILOVER_ERRORS as exc:
                    self._failed(i, method, exc, errors)
                    continue
                self._mark(i, ok=True)
                return result
            delay = self._backoff(round_, deadline)
            if delay is None:
                break
            self.policy.sleep(delay)
        raise self._failure(method, errors, timeout)

    def predict(self, model: ModelRef, inputs: dict[str, np.ndarray], timeout: float) -> dict[str, np.ndarray]:
        return self._call("predict", model, inputs, timeout=timeout)

    def metadata(self, model: ModelRef, timeout: float) -> dict[str, SignatureInfo]:
        return self._call("metadata", model, timeout=timeout)

    def status(self, model: ModelRef, timeout: float) -> list[VersionStatus]:
        return self._call("status", model, timeout=timeout)

    def close(self) -> None:
        for t in self.transports:
            t.close()


def transport_for(options: ClientOptions, grpc_cls: Any, rest_cls: Any, balanced_cls: Any) -> Any:
    """The transport `options` asks for, built from the given classes (sync or asyncio ones): one endpoint
    (`host` and the protocol's port, or the only `endpoints` entry), or several behind `balanced_cls`."""

    def one(endpoint: str, policy: RetryPolicy) -> Any:
        if options.protocol == "grpc":
            return grpc_cls(endpoint, policy=policy, max_message_bytes=options.max_message_bytes)
        host, port = endpoint.rsplit(":", 1)
        return rest_cls(host.strip("[]"), int(port), policy=policy)

    policy = RetryPolicy(retries=options.retries, backoff=options.backoff)
    if len(options.endpoints) > 1:
        single = RetryPolicy(retries=0)  # the balancer retries, on the other endpoints first
        return balanced_cls([one(e, single) for e in options.endpoints], options.endpoints, policy=policy)
    default = f"{options.host}:{options.grpc_port if options.protocol == 'grpc' else options.rest_port}"
    return one((options.endpoints or (default,))[0], policy)
