"""`Gateway`: what the routes of one app share."""

from __future__ import annotations

from dataclasses import dataclass

from .clients import ClientPool, ConcurrencyGate
from .metrics import GatewayMetrics
from .settings import GatewaySettings


@dataclass
class Gateway:
    """What the routes of one app share (`app.state.gateway`).

    Attributes:
        settings: its settings.
        metrics: its Prometheus metrics.
        clients: its configured clients.
        gate: its concurrency limit.
        streams: WebSocket streams open now.
    """

    settings: GatewaySettings
    metrics: GatewayMetrics
    clients: ClientPool
    gate: ConcurrencyGate
    streams: int = 0
