"""Prometheus metrics (a registry per node, so tests can run several).

When ``picloud up`` runs its worker in child processes it sets ``PROMETHEUS_MULTIPROC_DIR``
(prometheus_client's multiprocess mode) before this module is imported: every process then
keeps its values in files there and ``/metrics`` adds up those of all of them.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

BUCKETS = (0.002, 0.004, 0.006, 0.008, 0.01, 0.015, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.invocations = Counter(
            "picloud_invocations", "Invocations by script and outcome",
            ["script", "outcome"], registry=self.registry)
        self.latency = Histogram(
            "picloud_invocation_seconds", "End-to-end latency of synchronous invocations",
            ["script"], buckets=BUCKETS, registry=self.registry)
        self.run_seconds = Histogram(
            "picloud_worker_run_seconds", "Worker time per invocation (sandbox + recording)",
            ["script"], buckets=BUCKETS, registry=self.registry)
        self.sandbox_seconds = Histogram(
            "picloud_sandbox_seconds", "Time in the wasm sandbox per invocation",
            ["script"], buckets=BUCKETS, registry=self.registry)
        # Set by the process that answers /metrics: its latest value is the value.
        self.queue_depth = Gauge(
            "picloud_queue_depth", "Jobs waiting in the queues", ["queue"],
            registry=self.registry, multiprocess_mode="mostrecent")
        self.projection_lag = Gauge(
            "picloud_projection_lag_events", "Events not yet projected",
            registry=self.registry, multiprocess_mode="mostrecent")
        self.pending = Gauge(
            "picloud_ingress_pending", "Invocations this ingress waits for",
            registry=self.registry, multiprocess_mode="mostrecent")
        self._queues: set[str] = set()

    def set_queue_depths(self, depths: dict[str, int]) -> None:
        """A queue seen before and now empty reads 0 (labels cannot be removed in
        multiprocess mode)."""
        for queue in self._queues - depths.keys():
            self.queue_depth.labels(queue).set(0)
        for queue, n in depths.items():
            self.queue_depth.labels(queue).set(n)
        self._queues |= depths.keys()

    def worker_result(self, script: str, outcome: str, seconds: float,
                      sandbox_ms: float = 0.0) -> None:
        self.invocations.labels(script, outcome).inc()
        self.run_seconds.labels(script).observe(seconds)
        if sandbox_ms:
            self.sandbox_seconds.labels(script).observe(sandbox_ms / 1000)

    def render(self) -> bytes:
        path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        if not path:
            return generate_latest(self.registry)
        merged = CollectorRegistry()
        multiprocess.MultiProcessCollector(merged, path)
        return generate_latest(merged)
