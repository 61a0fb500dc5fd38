"""Prometheus metrics of the origin, on a registry of their own (one per app instance)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

__all__ = ["OriginMetrics"]

# Blocking reloads are released by the next part, i.e. within about one part target
# (0.2-1 s), and cut off at 3 target durations (503).
_WAIT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 6.0, 12.0, 18.0)


class OriginMetrics:
    """Requests by resource type and status, bytes, hold times, requests being held.

    ``resource`` label values: playlist, manifest, init, part, segment, static, vendor,
    time, metrics, other.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "flowcast_origin_requests",
            "HTTP requests answered by the origin",
            ("resource", "status"),
            registry=self.registry,
        )
        self.bytes = Counter(
            "flowcast_origin_response_bytes",
            "Response body bytes sent (compressed size when gzipped)",
            ("resource",),
            registry=self.registry,
        )
        self.wait = Histogram(
            "flowcast_origin_hold_seconds",
            "Time a request was held: blocking playlist reload or a part/segment not yet published",
            ("resource", "outcome"),
            buckets=_WAIT_BUCKETS,
            registry=self.registry,
        )
        self.waiting = Gauge(
            "flowcast_origin_waiting_requests",
            "Requests currently held (blocking reload, preload hint, growing segment)",
            ("resource",),
            registry=self.registry,
        )

    def observe(self, resource: str, status: int, nbytes: int) -> None:
        self.requests.labels(resource, str(status)).inc()
        if nbytes:
            self.bytes.labels(resource).inc(nbytes)

    def waiting_now(self, resource: str | None = None) -> float:
        """Current number of held requests (all resources when ``resource`` is None)."""
        total = 0.0
        for metric in self.waiting.collect():
            for sample in metric.samples:
                if resource is None or sample.labels.get("resource") == resource:
                    total += sample.value
        return total

    def exposition(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
