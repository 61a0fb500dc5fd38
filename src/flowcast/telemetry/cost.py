"""Cost per viewer-minute and per transcode hour, with anomaly alerts (sans-I/O maths).

Acceptance criterion (reference/schema.md): "Cost per viewer-minute and per transcode hour
tracked; anomaly alerts on them." Inputs use the schema's infra names (`egress_gb`,
`transcode_hours`); viewer-minutes come from QoE play time (`viewer_minutes` on the store),
egress from the origin access log (`egress_gb` on the store) or the CDN bill.

Anomalies: an exponentially weighted mean and variance per metric; a sample more than
`k` standard deviations above the mean (after `warmup` samples) fires, and resolves when
a sample is back under. One-sided: a cost that falls is not an incident.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from flowcast.telemetry.store import Store, _range


@dataclass(frozen=True)
class Prices:
    egress_per_gb: float = 0.085  # USD, first-tier CDN egress list price order of magnitude
    transcode_per_hour: float = 0.50  # USD per instance-hour of the transcoding fleet
    fixed_per_hour: float = 0.0  # origin, store, monitoring: spread over the period

    def __post_init__(self) -> None:
        for name in ("egress_per_gb", "transcode_per_hour", "fixed_per_hour"):
            if getattr(self, name) < 0:
                raise ValueError(f"Prices.{name} must not be negative")


@dataclass(frozen=True)
class CostSample:
    """Usage over one period (e.g. an hour)."""

    period_h: float
    viewer_minutes: float
    egress_gb: float
    transcode_hours: float


@dataclass(frozen=True)
class CostFigures:
    total: float
    per_viewer_minute: float | None
    per_transcode_hour: float | None


def cost(sample: CostSample, prices: Prices) -> CostFigures:
    total = (
        sample.egress_gb * prices.egress_per_gb
        + sample.transcode_hours * prices.transcode_per_hour
        + sample.period_h * prices.fixed_per_hour
    )
    return CostFigures(
        total=total,
        per_viewer_minute=total / sample.viewer_minutes if sample.viewer_minutes > 0 else None,
        per_transcode_hour=total / sample.transcode_hours if sample.transcode_hours > 0 else None,
    )


@dataclass(frozen=True)
class CostAnomaly:
    metric: str
    state: Literal["firing", "resolved"]
    t: float
    value: float
    mean: float
    std: float


class AnomalyDetector:
    """EWMA z-score detector for one metric, fed (t, value); returns transitions."""

    def __init__(self, metric: str, alpha: float = 0.1, k: float = 4.0, warmup: int = 12) -> None:
        if not 0 < alpha <= 1:
            raise ValueError("alpha must be in (0, 1]")
        self.metric, self.alpha, self.k, self.warmup = metric, alpha, k, warmup
        self.n = 0
        self.mean = 0.0
        self.var = 0.0
        self.firing = False

    def update(self, t: float, value: float) -> list[CostAnomaly]:
        out: list[CostAnomaly] = []
        std = math.sqrt(self.var)
        if self.n >= self.warmup:
            # Floor the deviation at 1 % of the mean: a perfectly flat history would
            # otherwise alert on rounding noise.
            anomalous = value > self.mean + self.k * max(std, 0.01 * abs(self.mean))
            if anomalous != self.firing:
                self.firing = anomalous
                out.append(CostAnomaly(self.metric, "firing" if anomalous else "resolved", t, value, self.mean, std))
            if anomalous:
                return out  # keep the baseline clean of the anomaly itself
        if self.n == 0:
            self.mean = value
        else:
            d = value - self.mean
            self.mean += self.alpha * d
            self.var = (1 - self.alpha) * (self.var + self.alpha * d * d)
        self.n += 1
        return out


def viewer_minutes(store: Store, start: float, end: float) -> float:
    """Consented play time in [start, end), in minutes."""
    where, params = _range(start, end)
    row = store.query(
        f"SELECT sumIf(play_time_ms, type IN ('heartbeat', 'session_end')) AS ms "
        f"FROM {store.t('player_events')} FINAL {where}",
        params,
    )[0]
    return float(row["ms"] or 0) / 60_000.0


def egress_gb(store: Store, start: float, end: float) -> float:
    """Bytes served by the origin in [start, end), in GB (1e9 bytes, as CDNs bill)."""
    where, params = _range(start, end)
    row = store.query(f"SELECT sum(bytes) AS b FROM {store.t('origin_requests')} {where}", params)[0]
    return float(row["b"] or 0) / 1e9
