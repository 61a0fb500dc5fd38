"""Prometheus metrics of the origin, on a registry of their own (one per app instance)."""

from __future__ import annotations

from typing import Any

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
        self._children: dict[tuple[str, int], tuple[Any, Any]] = {}
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

        self.encoder_speed = Gauge(
            "flowcast_encoder_speed_ratio", "FFmpeg speed (1.0 = real time)", registry=self.registry
        )
        self.encoder_fps = Gauge("flowcast_encoder_fps", "FFmpeg output frames per second", registry=self.registry)
        self.encoder_restarts = Gauge(
            "flowcast_encoder_restarts", "Times the encoder was restarted since start-up", registry=self.registry
        )
        self.parts = Counter(
            "flowcast_parts_published", "Parts (CMAF chunks) published", ("rendition",), registry=self.registry
        )
        self.publish_lag = Histogram(
            "flowcast_part_publish_lag_seconds",
            "Wall clock from the end of a part's media time to its publication",
            ("rendition",),
            buckets=(0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0),
            registry=self.registry,
        )

    def bind_encoder(self, supervisor: object) -> None:
        """Read the supervisor's latest figures at scrape time (no polling task)."""
        self.encoder_speed.set_function(lambda: getattr(supervisor, "speed", None) or 0.0)
        self.encoder_fps.set_function(lambda: getattr(supervisor, "fps", None) or 0.0)
        self.encoder_restarts.set_function(lambda: getattr(supervisor, "restarts", 0))

    def part_published(self, rendition: str, lag_s: float) -> None:
        self.parts.labels(rendition).inc()
        self.publish_lag.labels(rendition).observe(max(lag_s, 0.0))

    def observe(self, resource: str, status: int, nbytes: int) -> None:
        # Once per response: the labelled children are looked up once, not per request.
        children = self._children.get((resource, status))
        if children is None:
            children = self._children[(resource, status)] = (
                self.requests.labels(resource, str(status)), self.bytes.labels(resource)
            )
        children[0].inc()
        if nbytes:
            children[1].inc(nbytes)

    def observe_many(self, resource: str, status: int, count: int, nbytes: int) -> None:
        """Requests answered elsewhere (an origin worker process), added in one step."""
        self.requests.labels(resource, str(status)).inc(count)
        if nbytes:
            self.bytes.labels(resource).inc(nbytes)

    def bind_workers(self, pool: object) -> None:
        """origin.workers: how many worker processes serve, and how often one was replaced."""
        Gauge("flowcast_origin_workers", "Origin worker processes serving beside the main one",
              registry=self.registry).set_function(lambda: len(getattr(pool, "workers", {})))
        Gauge("flowcast_origin_worker_restarts", "Origin worker processes replaced since start-up",
              registry=self.registry).set_function(lambda: getattr(pool, "restarts", 0))

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
