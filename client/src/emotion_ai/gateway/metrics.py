"""Prometheus metrics of the gateway: requests per route and status, latencies, in-flight requests, faces."""

from __future__ import annotations

import time
from collections.abc import MutableMapping
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: Latency buckets in seconds (a photo takes tens of milliseconds; a batch or a cold model seconds).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
FACE_BUCKETS = (0, 1, 2, 3, 4, 6, 8, 12, 16, 32, 64)


class GatewayMetrics:
    """The gateway's metrics, in a registry of their own (several apps can live in one process).

    Attributes:
        registry: the registry `/metrics` exposes.
        requests: `emotion_ai_gateway_requests_total{method, route, status}`.
        latency: `emotion_ai_gateway_request_duration_seconds{method, route}`.
        in_flight: `emotion_ai_gateway_requests_in_flight`.
        faces: `emotion_ai_gateway_faces_per_image`.
        rejected: `emotion_ai_gateway_rejected_total{reason}` (concurrency full, auth).
        frames: `emotion_ai_gateway_stream_frames_total{outcome}` (analysed, dropped, failed).

    The registry also holds the process's own metrics (`process_resident_memory_bytes`, CPU seconds, open
    file descriptors; Linux), as Prometheus' default registry would.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        ns = "emotion_ai_gateway"
        self.requests = Counter(f"{ns}_requests", "HTTP requests answered", ["method", "route", "status"],
                                registry=self.registry)
        self.latency = Histogram(f"{ns}_request_duration_seconds", "Time to answer an HTTP request",
                                 ["method", "route"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.in_flight = Gauge(f"{ns}_requests_in_flight", "HTTP requests being answered", registry=self.registry)
        self.faces = Histogram(f"{ns}_faces_per_image", "Faces found per analysed image", buckets=FACE_BUCKETS,
                               registry=self.registry)
        self.rejected = Counter(f"{ns}_rejected", "Requests refused before analysis", ["reason"],
                                registry=self.registry)
        self.frames = Counter(f"{ns}_stream_frames", "WebSocket stream frames", ["outcome"], registry=self.registry)
        ProcessCollector(registry=self.registry)

    def exposition(self) -> tuple[bytes, str]:
        """The metrics in Prometheus' text format, and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class MetricsMiddleware:
    """ASGI middleware that counts and times every HTTP request by its route template (not its raw path,
    so the label set stays bounded; a path no route matches is "unmatched")."""

    def __init__(self, app: ASGIApp, metrics: GatewayMetrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        started = time.perf_counter()

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, send_status)
        finally:
            self.metrics.in_flight.dec()
            route = _route(scope)
            self.metrics.requests.labels(scope["method"], route, str(status)).inc()
            self.metrics.latency.labels(scope["method"], route).observe(time.perf_counter() - started)


def _route(scope: MutableMapping[str, Any]) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"
