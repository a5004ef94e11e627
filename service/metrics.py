"""The service's Prometheus metrics, on prometheus_client with one `CollectorRegistry` per app (tests
that build several apps never share counts).

Every label takes values from a bounded set, so no client can grow /metrics without limit: ``method`` is
one of `KNOWN_METHODS` or ``other``, ``route`` a route template or ``unmatched``, ``status`` an HTTP status
code or ``cancelled``, ``stage`` one of the pipeline's stage names.
"""

from __future__ import annotations

from collections.abc import Callable

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
#: HTTP methods counted under their own name; any other method a client sends is counted as "other".
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
#: The text exposition format 0.0.4, which every Prometheus reads (what generate_latest writes).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# prometheus_client adds a `<name>_created` timestamp series beside every counter and histogram; the
# service's scrapes never used them, so /metrics keeps the families it always had.
prometheus_client.disable_created_metrics()


def method_label(method: str) -> str:
    """The ``method`` label of a request: its method if it is a standard one, else "other"."""
    return method if method in KNOWN_METHODS else "other"


class ServiceMetrics:
    """The service's metrics: requests, latencies, pipeline stages, embed batches, and gauges read at scrape."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        request_labels = ("method", "route", "status")
        self.requests = Counter(
            "reid_http_requests", "HTTP requests by method, route template and status.", request_labels,
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "reid_http_request_duration_seconds", "HTTP request latency by method, route template and status.",
            request_labels, buckets=LATENCY_BUCKETS_S, registry=self.registry,
        )
        self.stage_seconds = Histogram(
            "reid_stage_duration_seconds",
            "Time in each pipeline stage per request: decode, embed (queue wait + model), search, store.",
            ("stage",), buckets=LATENCY_BUCKETS_S, registry=self.registry,
        )
        self.embed_batch_size = Histogram(
            "reid_embed_batch_size", "Tracklets per onnxruntime call.", buckets=BATCH_SIZE_BUCKETS,
            registry=self.registry,
        )
        self.embed_batch_seconds = Histogram(
            "reid_embed_batch_duration_seconds", "Seconds per onnxruntime call.", buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.search_batch_size = Histogram(
            "reid_search_batch_size", "Queries per index search call (concurrent queries share one).",
            buckets=BATCH_SIZE_BUCKETS, registry=self.registry,
        )

    def observe_request(self, method: str, route: str, status: str, seconds: float) -> None:
        labels = (method_label(method), route, status)
        self.requests.labels(*labels).inc()
        self.request_seconds.labels(*labels).observe(seconds)

    def observe_stage(self, stage: str, seconds: float) -> None:
        self.stage_seconds.labels(stage).observe(seconds)

    def observe_batch(self, size: int, seconds: float) -> None:
        self.embed_batch_size.observe(size)
        self.embed_batch_seconds.observe(seconds)

    def observe_search_batch(self, size: int) -> None:
        self.search_batch_size.observe(size)

    def add_gauge(self, name: str, help_text: str, read: Callable[[], float]) -> None:
        """A gauge whose value is ``read()`` at every scrape."""
        Gauge(name, help_text, registry=self.registry).set_function(read)

    def add_info(self, name: str, help_text: str, labels: dict[str, str]) -> None:
        """A gauge of value 1 whose labels carry facts (model version, device)."""
        Gauge(name, help_text, tuple(labels), registry=self.registry).labels(**labels).set(1)

    def render(self) -> bytes:
        """The Prometheus text exposition (version 0.0.4)."""
        return generate_latest(self.registry)
