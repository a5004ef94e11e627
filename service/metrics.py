"""A small thread-safe Prometheus text-format registry (counters, histograms, gauges with labels).

Kept in-house because the service needs four metric families and the exposition format is simple; one
registry per app, so tests that build several apps never share counts.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence

LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _format_labels(names: Sequence[str], values: Sequence[str], extra: str = "") -> str:
    parts = [f'{name}="{_escape(str(value))}"' for name, value in zip(names, values, strict=True)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _format_number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


class _Metric:
    kind = ""

    def __init__(self, name: str, help_text: str, label_names: Sequence[str] = ()):
        self.name = name
        self.help_text = help_text
        self.label_names = tuple(label_names)
        self._lock = threading.Lock()

    def _key(self, labels: dict[str, str]) -> tuple[str, ...]:
        if set(labels) != set(self.label_names):
            raise ValueError(f"{self.name} takes labels {self.label_names}, got {sorted(labels)}")
        return tuple(str(labels[name]) for name in self.label_names)

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {self.help_text}", f"# TYPE {self.name} {self.kind}"]


class Counter(_Metric):
    kind = "counter"

    def __init__(self, name: str, help_text: str, label_names: Sequence[str] = ()):
        super().__init__(name, help_text, label_names)
        self._values: dict[tuple[str, ...], float] = {}

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        key = self._key(labels)
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def value(self, **labels: str) -> float:
        with self._lock:
            return self._values.get(self._key(labels), 0.0)

    def render(self) -> list[str]:
        with self._lock:
            items = sorted(self._values.items())
        return self.header() + [
            f"{self.name}{_format_labels(self.label_names, key)} {_format_number(value)}" for key, value in items
        ]


class Histogram(_Metric):
    kind = "histogram"

    def __init__(self, name: str, help_text: str, label_names: Sequence[str] = (), buckets=LATENCY_BUCKETS_S):
        super().__init__(name, help_text, label_names)
        self.buckets = tuple(sorted(buckets))
        self._series: dict[tuple[str, ...], list[float]] = {}  # bucket counts..., count, sum

    def observe(self, value: float, **labels: str) -> None:
        key = self._key(labels)
        with self._lock:
            series = self._series.setdefault(key, [0.0] * (len(self.buckets) + 2))
            for position, bound in enumerate(self.buckets):
                if value <= bound:
                    series[position] += 1
            series[-2] += 1
            series[-1] += value

    def count(self, **labels: str) -> int:
        with self._lock:
            series = self._series.get(self._key(labels))
        return int(series[-2]) if series else 0

    def total(self, **labels: str) -> float:
        with self._lock:
            series = self._series.get(self._key(labels))
        return series[-1] if series else 0.0

    def render(self) -> list[str]:
        lines = self.header()
        with self._lock:
            items = sorted((key, list(series)) for key, series in self._series.items())
        for key, series in items:
            for bound, cumulative in zip(self.buckets, series, strict=False):
                le = f'le="{_format_number(bound)}"'
                labels = _format_labels(self.label_names, key, le)
                lines.append(f"{self.name}_bucket{labels} {_format_number(cumulative)}")
            inf = 'le="+Inf"'
            lines.append(f"{self.name}_bucket{_format_labels(self.label_names, key, inf)} {_format_number(series[-2])}")
            lines.append(f"{self.name}_count{_format_labels(self.label_names, key)} {_format_number(series[-2])}")
            lines.append(f"{self.name}_sum{_format_labels(self.label_names, key)} {_format_number(series[-1])}")
        return lines


class Gauge(_Metric):
    """A value read when the metrics are scraped."""

    kind = "gauge"

    def __init__(self, name: str, help_text: str, read: Callable[[], float], labels: dict[str, str] | None = None):
        super().__init__(name, help_text, tuple(labels or {}))
        self.read = read
        self.labels = dict(labels or {})

    def render(self) -> list[str]:
        value = self.read()
        labels = _format_labels(self.label_names, [self.labels[name] for name in self.label_names])
        return self.header() + [f"{self.name}{labels} {_format_number(value)}"]


class ServiceMetrics:
    """The service's metrics: requests, latencies, pipeline stages, embed batches and gallery size."""

    def __init__(self):
        self.requests = Counter(
            "reid_http_requests_total",
            "HTTP requests by method, route template and status.",
            ("method", "route", "status"),
        )
        self.request_seconds = Histogram(
            "reid_http_request_duration_seconds", "HTTP request latency by method, route template and status.",
            ("method", "route", "status"),
        )
        self.stage_seconds = Histogram(
            "reid_stage_duration_seconds",
            "Time in each pipeline stage per request: decode, embed (queue wait + model), search, store.",
            ("stage",),
        )
        self.embed_batch_size = Histogram(
            "reid_embed_batch_size", "Tracklets per onnxruntime call.", (), buckets=BATCH_SIZE_BUCKETS
        )
        self.embed_batch_seconds = Histogram("reid_embed_batch_duration_seconds", "Seconds per onnxruntime call.")
        self._gauges: list[Gauge] = []

    def add_gauge(self, gauge: Gauge) -> None:
        self._gauges.append(gauge)

    def observe_stage(self, stage: str, seconds: float) -> None:
        self.stage_seconds.observe(seconds, stage=stage)

    def observe_batch(self, size: int, seconds: float) -> None:
        self.embed_batch_size.observe(size)
        self.embed_batch_seconds.observe(seconds)

    def render(self) -> str:
        """The Prometheus text exposition (version 0.0.4)."""
        lines: list[str] = []
        for metric in (self.requests, self.request_seconds, self.stage_seconds, self.embed_batch_size,
                       self.embed_batch_seconds, *self._gauges):
            lines.extend(metric.render())
        return "\n".join(lines) + "\n"
