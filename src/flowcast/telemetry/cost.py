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
from collections import deque
from dataclasses import asdict, dataclass
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

    def as_dict(self) -> dict[str, object]:
        """The webhook body (slo.WebhookSink posts `as_dict()`)."""
        return {"kind": "cost_anomaly", **asdict(self)}


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


# --- live cost tracking (flowcast up) ---------------------------------------------------
def egress_gb_by_region(store: Store, start: float, end: float) -> dict[str, float]:
    """Origin egress in [start, end) in GB per viewer region: each request's region is
    its CMCD session's (sessions table); requests without a known session map to ""."""
    where, params = _range(start, end)
    rows = store.query(
        f"""SELECT s.region AS region, sum(o.bytes) AS b
FROM (SELECT session_id, bytes FROM {store.t('origin_requests')} {where}) AS o
LEFT JOIN (SELECT session_id, max(region) AS region FROM {store.t('sessions')} GROUP BY session_id) AS s
  ON o.session_id = s.session_id
GROUP BY region""",
        params,
    )
    return {str(r["region"] or ""): float(r["b"] or 0) / 1e9 for r in rows}


def egress_cost(by_region: dict[str, float], price_per_gb: dict[str, float]) -> float:
    """USD for GB per region at per-region prices (`"default"` for any other region)."""
    default = price_per_gb["default"]
    return sum(gb * price_per_gb.get(region, default) for region, gb in by_region.items())


class BaselineAnomalyDetector:
    """Fires when a value exceeds `factor` x the mean of the trailing `window` normal
    samples (after `warmup` of them); resolves when a value is back under. Anomalous
    samples stay out of the baseline, so a long incident does not become the norm."""

    def __init__(self, metric: str, factor: float = 3.0, window: int = 30, warmup: int = 5) -> None:
        if factor <= 1.0:
            raise ValueError("factor must be > 1")
        if not 1 <= warmup <= window:
            raise ValueError("warmup must be between 1 and window")
        self.metric, self.factor, self.warmup = metric, factor, warmup
        self._window: deque[float] = deque(maxlen=window)
        self.firing = False

    @property
    def baseline(self) -> float | None:
        return sum(self._window) / len(self._window) if len(self._window) >= self.warmup else None

    def update(self, t: float, value: float) -> list[CostAnomaly]:
        base = self.baseline
        anomalous = base is not None and value > self.factor * base
        out = []
        if anomalous != self.firing:
            self.firing = anomalous
            out.append(CostAnomaly(self.metric, "firing" if anomalous else "resolved", t, value, base or 0.0, 0.0))
        if not anomalous:
            self._window.append(value)
        return out


@dataclass(frozen=True)
class CostTick:
    """One period's figures, as exposed in /metrics."""

    t: float
    period_s: float
    viewer_minutes: float
    egress_gb: float
    egress_cost: float
    transcode_hours: float
    total: float
    per_viewer_minute: float | None
    per_transcode_hour: float | None


class CostMonitor:
    """Computes cost per viewer-minute and per transcode hour over each period from the
    store, and feeds the anomaly detector (call `tick(now)` every period; I/O: store reads)."""

    def __init__(
        self,
        store: Store,
        *,
        egress_price_per_gb: dict[str, float],
        transcode_price_per_hour: float,
        encoders: int = 1,
        detector: BaselineAnomalyDetector | None = None,
    ) -> None:
        if "default" not in egress_price_per_gb:
            raise ValueError("egress_price_per_gb needs a 'default' price")
        self.store = store
        self.prices = dict(egress_price_per_gb)
        self.transcode_price = transcode_price_per_hour
        self.encoders = encoders
        self.detector = detector or BaselineAnomalyDetector("cost_per_viewer_minute")
        self.last_t: float | None = None
        self.last: CostTick | None = None

    def tick(self, now: float, start: float | None = None) -> tuple[CostTick, list[CostAnomaly]]:
        start = start if start is not None else (self.last_t if self.last_t is not None else now - 60.0)
        self.last_t = now
        period_h = max(now - start, 0.0) / 3600.0
        vm = viewer_minutes(self.store, start, now)
        by_region = egress_gb_by_region(self.store, start, now)
        ecost = egress_cost(by_region, self.prices)
        th = period_h * self.encoders
        total = ecost + th * self.transcode_price
        tick = CostTick(
            t=now, period_s=now - start, viewer_minutes=vm, egress_gb=sum(by_region.values()), egress_cost=ecost,
            transcode_hours=th, total=total,
            per_viewer_minute=total / vm if vm > 0 else None,
            per_transcode_hour=total / th if th > 0 else None,
        )
        self.last = tick
        alerts = self.detector.update(now, tick.per_viewer_minute) if tick.per_viewer_minute is not None else []
        return tick, alerts
