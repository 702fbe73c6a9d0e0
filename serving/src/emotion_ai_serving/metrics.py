"""The request metrics TF Serving exports, rendered in Prometheus text format."""

from __future__ import annotations

import threading
from collections import defaultdict

#: request_latency buckets (µs): exponential 10 * 1.8^i, 33 buckets, as in TF Serving.
LATENCY_BUCKETS_US: tuple[float, ...] = tuple(10 * 1.8**i for i in range(33))


def _labels(pairs: tuple[tuple[str, str], ...]) -> str:
    return ",".join(f'{k}="{v}"' for k, v in pairs)


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


class Metrics:
    """request_count{model_name,status} and request_latency{model_name,API,entrypoint}."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[tuple, int] = defaultdict(int)
        self._latency: dict[tuple, list[float]] = {}

    def observe(self, model: str, api: str, entrypoint: str, status: str, micros: float) -> None:
        count_key = (("model_name", model), ("status", status))
        latency_key = (("model_name", model), ("API", api), ("entrypoint", entrypoint))
        with self._lock:
            self._counts[count_key] += 1
            hist = self._latency.setdefault(latency_key, [0.0] * (len(LATENCY_BUCKETS_US) + 2))
            for i, bound in enumerate(LATENCY_BUCKETS_US):
                if micros <= bound:
                    hist[i] += 1
            hist[-2] += micros
            hist[-1] += 1

    def render(self) -> str:
        lines = ["# TYPE :tensorflow:serving:request_count counter"]
        with self._lock:
            for key, value in sorted(self._counts.items()):
                lines.append(f":tensorflow:serving:request_count{{{_labels(key)}}} {value}")
            lines.append("# TYPE :tensorflow:serving:request_latency histogram")
            for key, hist in sorted(self._latency.items()):
                base = _labels(key)
                for i, bound in enumerate(LATENCY_BUCKETS_US):
                    lines.append(
                        f':tensorflow:serving:request_latency_bucket{{{base},le="{_number(bound)}"}}'
                        f" {int(hist[i])}"
                    )
                lines.append(
                    f':tensorflow:serving:request_latency_bucket{{{base},le="+Inf"}}'
                    f" {int(hist[-1])}"
                )
                lines.append(
                    f":tensorflow:serving:request_latency_sum{{{base}}} {_number(hist[-2])}"
                )
                lines.append(f":tensorflow:serving:request_latency_count{{{base}}} {int(hist[-1])}")
        return "\n".join(lines) + "\n"
