"""Prometheus metrics of the origin, on a registry of their own (one per app instance)."""

from __future__ import annotations

import bisect
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

__all__ = ["OriginMetrics"]

# Blocking reloads are released by the next part, i.e. within about one part target
# (0.2-1 s), and cut off at 3 target durations (503).
_WAIT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 6.0, 12.0, 18.0)


class _RequestCounters:
    """flowcast_origin_requests_total{resource,status} and
    flowcast_origin_response_bytes_total{resource}, read from the plain counts."""

    def __init__(self, counts: dict[tuple[str, int], list[int]]) -> None:
        self._counts = counts

    def describe(self) -> Iterator[CounterMetricFamily]:
        return iter(())  # unchecked collector: its families are only known at scrape time

    def collect(self) -> Iterator[CounterMetricFamily]:
        requests = CounterMetricFamily(
            "flowcast_origin_requests", "HTTP requests answered by the origin", labels=("resource", "status")
        )
        sent = CounterMetricFamily(
            "flowcast_origin_response_bytes", "Response body bytes sent (compressed size when gzipped)",
            labels=("resource",),
        )
        by_resource: dict[str, int] = {}
        for (resource, status), (n, nbytes) in list(self._counts.items()):
            requests.add_metric((resource, str(status)), n)
            by_resource[resource] = by_resource.get(resource, 0) + nbytes
        for resource, nbytes in by_resource.items():
            sent.add_metric((resource,), nbytes)
        yield requests
        yield sent


class PlainGauge:
    """A gauge child as a plain number (``.value += 1``): held requests come and go
    thousands of times a second, and a prometheus_client Gauge takes a lock on each."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0


class PlainHistogram:
    """A histogram child as plain bucket counts (same reason; filled by OriginMetrics.held)."""

    __slots__ = ("counts", "sum")

    def __init__(self) -> None:
        self.counts = [0] * (len(_WAIT_BUCKETS) + 1)  # the last one: +Inf
        self.sum = 0.0


class _HoldMetrics:
    """flowcast_origin_waiting_requests{resource} and flowcast_origin_hold_seconds
    {resource,outcome}, read from the plain children at scrape time."""

    def __init__(self, gauges: dict[str, PlainGauge], histograms: dict[tuple[str, str], PlainHistogram]) -> None:
        self._gauges = gauges
        self._histograms = histograms

    def describe(self) -> Iterator[object]:
        return iter(())

    def collect(self) -> Iterator[object]:
        waiting = GaugeMetricFamily(
            "flowcast_origin_waiting_requests",
            "Requests currently held (blocking reload, preload hint, growing segment)",
            labels=("resource",),
        )
        for resource, gauge in list(self._gauges.items()):
            waiting.add_metric((resource,), gauge.value)
        hold = HistogramMetricFamily(
            "flowcast_origin_hold_seconds",
            "Time a request was held: blocking playlist reload or a part/segment not yet published",
            labels=("resource", "outcome"),
        )
        for (resource, outcome), h in list(self._histograms.items()):
            running, buckets = 0, []
            for bound, n in zip((*_WAIT_BUCKETS, float("inf")), h.counts):
                running += n
                buckets.append((str(bound) if bound != float("inf") else "+Inf", running))
            hold.add_metric((resource, outcome), buckets, h.sum)
        yield waiting
        yield hold


class OriginMetrics:
    """Requests by resource type and status, bytes, hold times, requests being held.

    ``resource`` label values: playlist, manifest, init, part, segment, static, vendor,
    time, metrics, other.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        # Requests and bytes: plain counts, turned into Prometheus counters at scrape time
        # (RequestCounters): counted once per response, where a prometheus_client Counter
        # (a lock and checks per inc) was a fifth of the origin's own time per request.
        self._counts: dict[tuple[str, int], list[int]] = {}
        self._waiting_children: dict[str, PlainGauge] = {}
        self._wait_children: dict[tuple[str, str], PlainHistogram] = {}
        self.registry.register(_RequestCounters(self._counts))
        self.registry.register(_HoldMetrics(self._waiting_children, self._wait_children))

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

    def held(self, resource: str, outcome: str, seconds: float) -> None:
        """A hold ended: its time, under how it ended (served, timeout, gone, ...)."""
        h = self._wait_children.get((resource, outcome))
        if h is None:
            h = self._wait_children[(resource, outcome)] = PlainHistogram()
        h.counts[bisect.bisect_left(_WAIT_BUCKETS, seconds)] += 1
        h.sum += seconds

    def waiting_child(self, resource: str) -> PlainGauge:
        """The held-requests gauge of a resource."""
        child = self._waiting_children.get(resource)
        if child is None:
            child = self._waiting_children[resource] = PlainGauge()
        return child


    def observe(self, resource: str, status: int, nbytes: int) -> None:
        c = self._counts.get((resource, status))
        if c is None:
            c = self._counts[(resource, status)] = [0, 0]
        c[0] += 1
        c[1] += nbytes

    def observe_many(self, resource: str, status: int, count: int, nbytes: int) -> None:
        """Requests answered elsewhere (an origin worker process), added in one step."""
        c = self._counts.get((resource, status))
        if c is None:
            c = self._counts[(resource, status)] = [0, 0]
        c[0] += count
        c[1] += nbytes

    def bind_workers(self, pool: object) -> None:
        """origin.workers: how many worker processes serve, and how often one was replaced."""
        Gauge("flowcast_origin_workers", "Origin worker processes serving beside the main one",
              registry=self.registry).set_function(lambda: len(getattr(pool, "workers", {})))
        Gauge("flowcast_origin_worker_restarts", "Origin worker processes replaced since start-up",
              registry=self.registry).set_function(lambda: getattr(pool, "restarts", 0))

    def waiting_now(self, resource: str | None = None) -> float:
        """Current number of held requests (all resources when ``resource`` is None)."""
        return float(sum(g.value for r, g in list(self._waiting_children.items()) if resource in (None, r)))

    def exposition(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
