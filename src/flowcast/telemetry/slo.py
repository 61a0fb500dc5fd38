"""SLOs, error budgets and multiwindow multi-burn-rate alerts (standards.md section 6).

Sans-I/O: `BurnRateEvaluator.evaluate(t, counts)` takes (good, total) counts per window at
time t and returns alert transitions; `SlidingCounts` turns a stream of per-bucket counts
into those per-window counts. Where the counts come from (qoe.sli_counts on the store, or
a live stream) and where alerts go (LogSink, WebhookSink) stays at the edge.

Alert rule (Google SRE Workbook, 30-day SLO): a pair of windows fires when the error rate
over BOTH the long and the short window exceeds burn_rate x (1 - objective). The short
window makes the alert reset soon after the burn stops.
"""

from __future__ import annotations

import json
import logging
import urllib.request
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Final, Literal

import yaml

Sli = Literal["startup", "rebuffer", "latency", "playback_success"]
Severity = Literal["page", "ticket"]
SLIS: Final = ("startup", "rebuffer", "latency", "playback_success")

MINUTE: Final = 60
HOUR: Final = 3600
DAY: Final = 86400
BUDGET_WINDOW_S: Final = 30 * DAY


class SloError(ValueError):
    """An SLO file or definition that cannot be used; the message names the field."""


@dataclass(frozen=True)
class Slo:
    """A ratio SLO: `objective` of events are good over a 30-day window.

    SLIs (what "good" means, counted by qoe.sli_counts):
    - startup: a startup with startup_time_ms <= threshold_ms (of all startups);
    - latency: a latency sample with latency_ms < threshold_ms, for `protocol` only;
    - rebuffer: a millisecond played, not rebuffering (good = play_time_ms, total =
      play_time_ms + rebuffer_ms), so objective 0.995 <=> rebuffer ratio <= 0.5 %;
    - playback_success: a session without an error event.
    """

    name: str
    sli: Sli
    objective: float
    threshold_ms: float | None = None
    protocol: str | None = None
    window_s: int = BUDGET_WINDOW_S

    def __post_init__(self) -> None:
        if self.sli not in SLIS:
            raise SloError(f"{self.name}.sli: must be one of {', '.join(SLIS)}")
        if not 0.0 < self.objective < 1.0:
            raise SloError(f"{self.name}.objective: must be between 0 and 1 (exclusive)")
        if self.sli in ("startup", "latency") and (self.threshold_ms is None or self.threshold_ms <= 0):
            raise SloError(f"{self.name}.threshold_ms: required for sli {self.sli}")
        if self.sli == "latency" and not self.protocol:
            raise SloError(f"{self.name}.protocol: required for sli latency")

    @property
    def error_budget(self) -> float:
        """Allowed bad fraction (1 - objective)."""
        return 1.0 - self.objective


@dataclass(frozen=True)
class BurnRateRule:
    severity: Severity
    long_window_s: int
    short_window_s: int
    burn_rate: float

    @property
    def name(self) -> str:
        return f"{self.severity}:{_dur(self.long_window_s)}/{_dur(self.short_window_s)}@{self.burn_rate:g}x"


# standards.md section 6: 2 % of a 30-day budget in 1 h, 5 % in 6 h, 10 % in 3 days.
DEFAULT_RULES: Final = (
    BurnRateRule("page", 1 * HOUR, 5 * MINUTE, 14.4),
    BurnRateRule("page", 6 * HOUR, 30 * MINUTE, 6.0),
    BurnRateRule("ticket", 3 * DAY, 6 * HOUR, 1.0),
)

# The acceptance criteria (reference/schema.md) as SLOs.
DEFAULT_SLOS: Final = (
    Slo("startup_p95_2s", "startup", 0.95, threshold_ms=2000.0),
    Slo("rebuffer_ratio_0.5pct", "rebuffer", 0.995),
    Slo("ll_hls_latency_p95_3s", "latency", 0.95, threshold_ms=3000.0, protocol="ll-hls"),
    Slo("webrtc_latency_p95_500ms", "latency", 0.95, threshold_ms=500.0, protocol="webrtc"),
    Slo("playback_success_99.5pct", "playback_success", 0.995),
)


def _dur(s: int) -> str:
    for unit, n in (("d", DAY), ("h", HOUR), ("m", MINUTE)):
        if s % n == 0:
            return f"{s // n}{unit}"
    return f"{s}s"


def load_slos(text: str | None) -> tuple[tuple[Slo, ...], tuple[BurnRateRule, ...]]:
    """SLOs and alert rules from YAML; absent keys fall back to the defaults.

    ```yaml
    slos:
      - {name: startup_p95_2s, sli: startup, objective: 0.95, threshold_ms: 2000}
    alerts:   # optional; standards.md section 6 by default
      - {severity: page, long_window_s: 3600, short_window_s: 300, burn_rate: 14.4}
    ```
    """
    doc = yaml.safe_load(text) if text else None
    if doc is None:
        return DEFAULT_SLOS, DEFAULT_RULES
    if not isinstance(doc, dict):
        raise SloError("(top level): must be a mapping")
    extra = set(doc) - {"slos", "alerts"}
    if extra:
        raise SloError(f"{sorted(extra)[0]}: unknown key")
    slos = DEFAULT_SLOS
    if "slos" in doc:
        slos = tuple(_slo(i, d) for i, d in enumerate(_list(doc["slos"], "slos")))
        names = [s.name for s in slos]
        if len(set(names)) != len(names):
            raise SloError("slos: names must be unique")
    rules = DEFAULT_RULES
    if "alerts" in doc:
        rules = tuple(_rule(i, d) for i, d in enumerate(_list(doc["alerts"], "alerts")))
    return slos, rules


def _list(v: object, where: str) -> list[dict]:
    if not isinstance(v, list) or not all(isinstance(x, dict) for x in v):
        raise SloError(f"{where}: must be a list of mappings")
    return v


def _slo(i: int, d: dict) -> Slo:
    allowed = {"name", "sli", "objective", "threshold_ms", "protocol", "window_days"}
    extra = set(d) - allowed
    if extra:
        raise SloError(f"slos[{i}].{sorted(extra)[0]}: unknown key")
    for key in ("name", "sli", "objective"):
        if key not in d:
            raise SloError(f"slos[{i}].{key}: required")
    try:
        return Slo(
            name=str(d["name"]),
            sli=d["sli"],
            objective=float(d["objective"]),
            threshold_ms=float(d["threshold_ms"]) if d.get("threshold_ms") is not None else None,
            protocol=d.get("protocol"),
            window_s=int(d.get("window_days", 30)) * DAY,
        )
    except (TypeError, ValueError) as exc:
        raise SloError(f"slos[{i}]: {exc}") from None


def _rule(i: int, d: dict) -> BurnRateRule:
    if set(d) != {"severity", "long_window_s", "short_window_s", "burn_rate"}:
        raise SloError(f"alerts[{i}]: needs exactly severity, long_window_s, short_window_s, burn_rate")
    if d["severity"] not in ("page", "ticket"):
        raise SloError(f"alerts[{i}].severity: must be page or ticket")
    if not 0 < int(d["short_window_s"]) < int(d["long_window_s"]):
        raise SloError(f"alerts[{i}]: short_window_s must be positive and shorter than long_window_s")
    return BurnRateRule(d["severity"], int(d["long_window_s"]), int(d["short_window_s"]), float(d["burn_rate"]))


@dataclass(frozen=True)
class Budget:
    """Error budget over the SLO window from (good, total) counted over that window."""

    slo: str
    good: int
    total: int
    allowed_bad: float  # budget in events: (1 - objective) x total
    bad: int
    remaining: float  # fraction of the budget left, 1.0 = untouched, < 0 = overspent


def error_budget(slo: Slo, good: float, total: float) -> Budget:
    bad = total - good
    allowed = slo.error_budget * total
    remaining = 1.0 - (bad / allowed) if allowed > 0 else 1.0
    return Budget(slo.name, int(good), int(total), allowed, int(bad), remaining)


def burn_rate(slo: Slo, good: float, total: float) -> float:
    """How fast the budget burns: bad fraction / allowed bad fraction (1.0 = exactly on budget)."""
    if total <= 0:
        return 0.0
    return ((total - good) / total) / slo.error_budget


@dataclass(frozen=True)
class AlertTransition:
    slo: str
    rule: str
    severity: Severity
    state: Literal["firing", "resolved"]
    t: float
    long_burn: float
    short_burn: float

    def as_dict(self) -> dict:
        return asdict(self)


class BurnRateEvaluator:
    """Alert state for one SLO and its rules; feed it counts, get transitions back."""

    def __init__(self, slo: Slo, rules: Iterable[BurnRateRule] = DEFAULT_RULES) -> None:
        self.slo = slo
        self.rules = tuple(rules)
        self.firing: dict[str, bool] = {r.name: False for r in self.rules}

    @property
    def windows(self) -> tuple[int, ...]:
        """Every window length (seconds) `evaluate` needs counts for."""
        return tuple(sorted({w for r in self.rules for w in (r.long_window_s, r.short_window_s)}))

    def evaluate(self, t: float, counts: Mapping[int, tuple[float, float]]) -> list[AlertTransition]:
        """`counts[window_s] = (good, total)` over [t - window_s, t). A window with no
        events does not burn (nothing was served badly)."""
        out = []
        for rule in self.rules:
            lg, lt = counts[rule.long_window_s]
            sg, st = counts[rule.short_window_s]
            lb, sb = burn_rate(self.slo, lg, lt), burn_rate(self.slo, sg, st)
            # Compare error rates as the standard states it: rate > burn_rate x (1 - SLO).
            # The 1e-9 slack keeps "exactly on the threshold" from firing on float noise
            # (1 - 0.995 is 0.0050000000000000044 in binary floating point).
            threshold = rule.burn_rate * self.slo.error_budget * (1 + 1e-9)
            fire = (
                lt > 0 and st > 0 and (lt - lg) / lt > threshold and (st - sg) / st > threshold
            )
            if fire != self.firing[rule.name]:
                self.firing[rule.name] = fire
                out.append(
                    AlertTransition(
                        self.slo.name, rule.name, rule.severity, "firing" if fire else "resolved", t, lb, sb
                    )
                )
        return out


class SlidingCounts:
    """(good, total) per window from per-bucket counts, for a live stream (sans-I/O).

    Buckets are `bucket_s` wide; `add(t, good, total)` accounts events at time t,
    `counts(t, windows)` sums the buckets in [t - w, t). Memory: longest window / bucket.
    """

    def __init__(self, bucket_s: int = MINUTE, horizon_s: int = 3 * DAY) -> None:
        self.bucket_s = bucket_s
        self.horizon_s = horizon_s
        self._buckets: deque[list[float]] = deque()  # [start, good, total]

    def add(self, t: float, good: float, total: float) -> None:
        start = t - (t % self.bucket_s)
        if self._buckets and self._buckets[-1][0] == start:
            b = self._buckets[-1]
            b[1] += good
            b[2] += total
        elif self._buckets and self._buckets[-1][0] > start:
            raise ValueError("SlidingCounts.add: times must not go backwards by a bucket")
        else:
            self._buckets.append([start, good, total])
        while self._buckets and self._buckets[0][0] < start - self.horizon_s:
            self._buckets.popleft()

    def counts(self, t: float, windows: Iterable[int]) -> dict[int, tuple[float, float]]:
        out = {}
        for w in windows:
            g = n = 0.0
            lo = t - w
            for start, good, total in reversed(self._buckets):
                if start < lo:
                    break
                if start < t:
                    g += good
                    n += total
            out[w] = (g, n)
        return out


# --- sinks (the I/O edge) ----------------------------------------------------------------
class LogSink:
    def __init__(self, logger: logging.Logger | None = None) -> None:
        self.logger = logger or logging.getLogger("flowcast.telemetry.alerts")

    def send(self, alert: AlertTransition) -> None:
        level = logging.ERROR if alert.severity == "page" and alert.state == "firing" else logging.WARNING
        self.logger.log(
            level,
            "SLO %s %s %s (burn %.1fx long, %.1fx short)",
            alert.slo,
            alert.rule,
            alert.state,
            alert.long_burn,
            alert.short_burn,
        )


class WebhookSink:
    """POSTs each transition as JSON (Alertmanager-style receivers, Slack proxies, etc.)."""

    def __init__(self, url: str, timeout: float = 5.0) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError("webhook url must be http(s)")
        self.url = url
        self.timeout = timeout

    def send(self, alert: AlertTransition) -> None:
        req = urllib.request.Request(
            self.url,
            data=json.dumps(alert.as_dict()).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(req, timeout=self.timeout) as resp:
            resp.read()
