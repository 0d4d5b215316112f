"""Prometheus metrics of one process (a registry per node, so tests can run several)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

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
        self.queue_depth = Gauge(
            "picloud_queue_depth", "Jobs waiting in the queues", ["queue"],
            registry=self.registry)
        self.projection_lag = Gauge(
            "picloud_projection_lag_events", "Events not yet projected",
            registry=self.registry)
        self.pending = Gauge(
            "picloud_ingress_pending", "Invocations this ingress waits for",
            registry=self.registry)

    def worker_result(self, script: str, outcome: str, seconds: float,
                      sandbox_ms: float = 0.0) -> None:
        self.invocations.labels(script, outcome).inc()
        self.run_seconds.labels(script).observe(seconds)
        if sandbox_ms:
            self.sandbox_seconds.labels(script).observe(sandbox_ms / 1000)

    def render(self) -> bytes:
        return generate_latest(self.registry)
