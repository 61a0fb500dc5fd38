"""QoE telemetry on the origin: the collector endpoint, access events, reports, erasure.

Routes (JSON; errors are `{"error": ..., "field": ...}` with the collector's status):
- ``POST /qoe/v1/events``: a beacon batch (collector.py wire format) -> 202.
- ``POST /qoe/v1/consent``: a consent decision, recorded as proof (LGPD Art. 8 par. 2):
  ``{"session_id", "action": "grant" | "decline" | "withdraw", "banner_version",
  "banner_hash" (SHA-256 hex of the text shown), "language", "purposes", "user_id"?}``
  -> 201 (the session id may be "" for a decline: no id exists before opting in).
  ``withdraw`` also erases the session's data and refuses further events (and
  CMCD-tagged requests) for it -> 200; sent with only ``session_id`` and ``action`` (as
  analytics.js does), the withdrawal is recorded with the banner facts of the grant.
- ``GET /qoe/v1/consent/<session id>``: the session's recorded decisions (admin).
- ``GET /qoe/v1/report?since=1h&by=cdn``: QoE aggregates (qoe.py).
- ``GET /qoe/v1/sessions?since=1h``, ``GET /qoe/v1/sessions/<id>``: recent sessions; one
  session's player events and origin requests on one timeline.
- ``GET /qoe/v1/timeseries?since=15m&step=10``: the dashboard's series.
- ``DELETE /qoe/v1/users/<user hash>``: LGPD Art. 18 VI erasure.
The read and erasure routes are admin routes: a bearer token when one is configured,
else loopback clients only.

The media path never waits on chDB: access events and accepted batches are appended to
in-memory lists (a tuple each) and a flush task writes them every `flush_interval_s` in a
single worker thread, which also runs every read (chDB holds one session per process).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import re
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Final, TypeVar
from urllib.parse import parse_qs

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from flowcast.telemetry.cmcd import origin_request
from flowcast.telemetry.collector import Batch, Collector, CollectorError
from flowcast.telemetry.cost import BaselineAnomalyDetector, CostAnomaly, CostMonitor, CostTick
from flowcast.telemetry.prom import sli_increments
from flowcast.telemetry.qoe import GROUP_FIELDS, anonymous_counts, qoe_aggregates, sli_counts, turn_relay
from flowcast.telemetry.slo import DEFAULT_RULES, DEFAULT_SLOS, AlertTransition, BurnRateEvaluator, BurnRateRule, LogSink, Slo
from flowcast.telemetry.schema import hash_user_id
from flowcast.telemetry.store import ConsentProof, Store
from flowcast.telemetry.timeline import delete_session, recent_sessions, session_timeline, timeseries

log = logging.getLogger(__name__)

T = TypeVar("T")

PREFIX: Final = "/qoe/v1/"
_SINCE = re.compile(r"^(\d{1,6})(s|m|h|d)$")
_UNITS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_MAX_SINCE_S: Final = 400 * 86400
CONSENT_LANGUAGES: Final = ("en", "pt-BR")
# The purposes the banner asks for (consent.js): QoE measurement only (Art. 8 par. 4:
# generic consent is void, so an unknown purpose is refused rather than stored).
CONSENT_PURPOSES: Final = ("qoe_analytics",)
CMCD_HEADERS: Final = ("cmcd-request", "cmcd-object", "cmcd-status", "cmcd-session")
_JSON_HEADERS: Final = [
    ("content-type", "application/json"),
    ("cache-control", "no-store"),
    ("access-control-allow-origin", "*"),
]


class BadQuery(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def parse_since(text: str) -> float:
    """``30s``, ``15m``, ``1h``, ``7d`` -> seconds (at most 400 days)."""
    m = _SINCE.match(text)
    if not m:
        raise BadQuery("since", "must look like 30s, 15m, 1h or 7d")
    s = int(m.group(1)) * _UNITS[m.group(2)]
    if not 0 < s <= _MAX_SINCE_S:
        raise BadQuery("since", "must be between 1 s and 400 d")
    return float(s)


def parse_group_by(text: str) -> tuple[str, ...]:
    by = tuple(g for g in text.split(",") if g) if text else ()
    for g in by:
        if g not in GROUP_FIELDS:
            raise BadQuery("by", f"{g!r} is not one of {', '.join(GROUP_FIELDS)}")
    return by


class QoeMetrics:
    """QoE series on the origin's registry (what prom.PANELS and the alert rules query)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.events = Counter("flowcast_qoe_events", "Beacon events accepted", ("type", "consent"), registry=registry)
        self.rejected = Counter("flowcast_qoe_batches_rejected", "Beacon batches refused", ("status",), registry=registry)
        self.startup = Histogram(
            "flowcast_qoe_startup_ms", "Startup time (play request to first frame)",
            buckets=(250, 500, 750, 1000, 1500, 2000, 3000, 5000, 10000), registry=registry,
        )
        self.latency = Histogram(
            "flowcast_qoe_latency_ms", "Latency samples from players",
            buckets=(200, 500, 1000, 1500, 2000, 3000, 5000, 10000, 30000), registry=registry,
        )
        self.bitrate = Histogram(
            "flowcast_qoe_bitrate_kbps", "Average bitrate per heartbeat",
            buckets=(300, 600, 1000, 2000, 3000, 5000, 8000, 15000), registry=registry,
        )
        self.stalls = Counter("flowcast_qoe_stalls", "Stalls reported by players", registry=registry)
        self.rebuffer = Counter("flowcast_qoe_rebuffer_ms", "Rebuffering time reported", registry=registry)
        self.sli_good = Counter("flowcast_qoe_sli_good", "SLI good events per SLO", ("slo",), registry=registry)
        self.sli_total = Counter("flowcast_qoe_sli", "SLI events per SLO", ("slo",), registry=registry)
        self.pending = Gauge("flowcast_telemetry_pending", "Rows waiting for the next store flush", registry=registry)
        self.dropped = Counter("flowcast_telemetry_dropped", "Access events dropped (queue full)", registry=registry)
        self.flush = Histogram(
            "flowcast_telemetry_flush_seconds", "Store flush duration",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5), registry=registry,
        )
        self.flush_errors = Counter("flowcast_telemetry_flush_errors", "Store flushes that failed", registry=registry)

    def batch(self, batch: Batch, slos: Iterable[Slo]) -> None:
        for e in batch.events:
            self.events.labels(e.type, "yes").inc()
            if e.type == "startup":
                self.startup.observe(e.startup_time_ms)
            elif e.type == "latency":
                self.latency.observe(e.latency_ms)
            elif e.type == "stall":
                self.stalls.inc()
                self.rebuffer.inc(e.rebuffer_ms)
            elif e.type in ("heartbeat", "session_end") and e.avg_bitrate_kbps > 0:
                self.bitrate.observe(e.avg_bitrate_kbps)
        for c in batch.counters:
            self.events.labels(c.type, "no").inc(c.events)
        for name, (good, total) in sli_increments(slos, batch).items():
            if good > 0:
                self.sli_good.labels(name).inc(good)
            if total > 0:
                self.sli_total.labels(name).inc(total)


class CostMetrics:
    """Cost figures of the last period (telemetry/cost.py CostMonitor)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.per_viewer_minute = Gauge(
            "flowcast_cost_per_viewer_minute_usd", "Cost per viewer-minute over the last period", registry=registry
        )
        self.per_transcode_hour = Gauge(
            "flowcast_cost_per_transcode_hour_usd", "Cost per transcode hour over the last period", registry=registry
        )
        self.egress_gb = Gauge("flowcast_cost_egress_gb", "Origin egress in the last period (GB)", registry=registry)
        self.viewer_minutes = Gauge("flowcast_cost_viewer_minutes", "Viewer-minutes in the last period", registry=registry)
        self.baseline = Gauge(
            "flowcast_cost_per_viewer_minute_baseline_usd", "Trailing baseline of cost per viewer-minute", registry=registry
        )
        self.anomaly = Gauge("flowcast_cost_anomaly", "1 while a cost anomaly alert is firing", registry=registry)

    def update(self, tick: CostTick, detector: BaselineAnomalyDetector) -> None:
        if tick.per_viewer_minute is not None:
            self.per_viewer_minute.set(tick.per_viewer_minute)
        if tick.per_transcode_hour is not None:
            self.per_transcode_hour.set(tick.per_transcode_hour)
        self.egress_gb.set(tick.egress_gb)
        self.viewer_minutes.set(tick.viewer_minutes)
        if detector.baseline is not None:
            self.baseline.set(detector.baseline)
        self.anomaly.set(1 if detector.firing else 0)


# An access event as recorded on the hot path; CMCD is parsed at flush time.
_Access = tuple[float, str, str, tuple[tuple[str, str], ...], int, int, float]


class TelemetryService:
    """Collector, access events and telemetry routes for one origin process."""

    def __init__(
        self,
        store: Store,
        collector: Collector,
        *,
        registry: CollectorRegistry,
        slos: Iterable[Slo] = DEFAULT_SLOS,
        state_dir: Path | None = None,
        admin_token: str | None = None,
        flush_interval_s: float = 1.0,
        max_pending: int = 200_000,
        origin_id: str = "",
        owns_store: bool = True,
        cost: CostMonitor | None = None,
        cost_interval_s: float = 60.0,
        alert_sinks: Sequence[Any] = (),
        slo_rules: Sequence[BurnRateRule] = DEFAULT_RULES,
        slo_interval_s: float = 60.0,
    ) -> None:
        self.store = store
        self.collector = collector
        self.slos = tuple(slos)
        self.metrics = QoeMetrics(registry)
        self.admin_token = admin_token or None
        self.flush_interval_s = flush_interval_s
        self.max_pending = max_pending
        self.origin_id = origin_id
        self.owns_store = owns_store
        self._access: list[_Access] = []
        self._batches: list[Batch] = []
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="telemetry-store")
        self._task: asyncio.Task[None] | None = None
        self._flush_lock: asyncio.Lock | None = None
        # Cost per viewer-minute / transcode hour every cost_interval_s, anomaly alerts to
        # the log and the sinks (slo.WebhookSink), figures in /metrics.
        self.cost = cost
        self.cost_interval_s = cost_interval_s
        self.alert_sinks = tuple(alert_sinks)
        self._cost_task: asyncio.Task[None] | None = None
        # Burn-rate alerts, evaluated every slo_interval_s from the store (so a restart
        # loses no window), to the log and the same sinks as cost anomalies.
        self.slo_evaluators = [BurnRateEvaluator(slo, slo_rules) for slo in self.slos]
        self.slo_interval_s = slo_interval_s
        self._slo_task: asyncio.Task[None] | None = None
        self._slo_log = LogSink()
        self.cost_metrics = CostMetrics(registry) if cost is not None else None
        self._withdrawn_file = Path(state_dir) / "withdrawn_sessions.txt" if state_dir else None
        self.withdrawn: set[str] = set()
        if self._withdrawn_file is not None and self._withdrawn_file.exists():
            self.withdrawn = set(self._withdrawn_file.read_text().split())

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._flush_loop(), name="telemetry flush")
        if self.cost is not None and self._cost_task is None:
            self._cost_task = asyncio.create_task(self._cost_loop(), name="telemetry cost")
        if self.slo_evaluators and self._slo_task is None:
            self._slo_task = asyncio.create_task(self._slo_loop(), name="telemetry SLO alerts")

    async def stop(self) -> None:
        for task in (self._cost_task, self._slo_task):
            if task is not None:
                task.cancel()
                try:
                    await task
                except asyncio.CancelledError:
                    pass
        self._cost_task = self._slo_task = None
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        try:
            await self.flush()
        finally:
            if self.owns_store:
                await self._in_store(self.store.close)
            self._executor.shutdown(wait=True)

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(self.flush_interval_s)
            try:
                await self.flush()
            except Exception:  # noqa: BLE001 - keep flushing; the rows of that flush are lost
                self.metrics.flush_errors.inc()
                log.exception("telemetry flush failed")

    async def _cost_loop(self) -> None:
        assert self.cost is not None
        self.cost.last_t = time.time()
        while True:
            await asyncio.sleep(self.cost_interval_s)
            try:
                await self.cost_tick(time.time())
            except Exception:  # noqa: BLE001 - keep tracking; this period is skipped
                log.exception("cost tracking failed")

    async def cost_tick(self, now: float) -> list[CostAnomaly]:
        """One cost period ending `now`: figures to /metrics, anomalies to the sinks."""
        assert self.cost is not None and self.cost_metrics is not None
        await self.flush()  # the period's access events and beacons are in the store
        tick, alerts = await self._in_store(self.cost.tick, now)
        self.cost_metrics.update(tick, self.cost.detector)
        for a in alerts:
            level = logging.ERROR if a.state == "firing" else logging.WARNING
            log.log(level, "cost anomaly %s %s: %.6g USD (baseline %.6g, x%.1f)",
                    a.metric, a.state, a.value, a.mean, self.cost.detector.factor)
            for sink in self.alert_sinks:
                try:
                    await asyncio.get_running_loop().run_in_executor(None, sink.send, a)
                except Exception as exc:  # noqa: BLE001 - one sink down must not stop the others
                    log.warning("alert sink %s failed: %s", type(sink).__name__, exc)
        return alerts

    async def _slo_loop(self) -> None:
        while True:
            await asyncio.sleep(self.slo_interval_s)
            try:
                await self.slo_tick(time.time())
            except Exception:  # noqa: BLE001 - keep evaluating; this tick is skipped
                log.exception("SLO evaluation failed")

    async def slo_tick(self, now: float) -> list[AlertTransition]:
        """Evaluate every SLO's burn-rate rules at `now`; transitions go to the log and sinks."""
        await self.flush()
        transitions = await self._in_store(self._evaluate_slos, now)
        loop = asyncio.get_running_loop()
        for alert in transitions:
            self._slo_log.send(alert)
            for sink in self.alert_sinks:
                try:
                    await loop.run_in_executor(None, sink.send, alert)
                except Exception as exc:  # noqa: BLE001 - one sink down must not stop the others
                    log.warning("alert sink %s failed: %s", type(sink).__name__, exc)
        return transitions

    def _evaluate_slos(self, now: float) -> list[AlertTransition]:
        out: list[AlertTransition] = []
        for evaluator in self.slo_evaluators:
            counts = {w: sli_counts(self.store, evaluator.slo, now - w, now) for w in evaluator.windows}
            out.extend(evaluator.evaluate(now, counts))
        return out

    async def _in_store(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def flush(self) -> None:
        """Write what is pending now (in the store thread); returns when it is stored."""
        if self._flush_lock is None:
            self._flush_lock = asyncio.Lock()
        async with self._flush_lock:
            access, self._access = self._access, []
            batches, self._batches = self._batches, []
            self.metrics.pending.set(0)
            if not access and not batches:
                return
            t0 = time.perf_counter()
            await self._in_store(self._write, access, batches, frozenset(self.withdrawn))
            self.metrics.flush.observe(time.perf_counter() - t0)

    def _write(self, access: list[_Access], batches: list[Batch], withdrawn: frozenset[str]) -> None:
        if batches:
            events = [e for b in batches for e in b.events if e.session_id not in withdrawn]
            sessions = [s for b in batches for s in b.sessions if s.session_id not in withdrawn]
            counters = [c for b in batches for c in b.counters]
            self.store.write_batch(Batch(events, sessions, counters, sum(b.received for b in batches)))
        if access:
            rows = []
            for ts, path, query, headers, status, nbytes, ttfb_ms in access:
                row = origin_request(
                    ts=ts, path=path, status=status, bytes_sent=nbytes, ttfb_ms=ttfb_ms,
                    query=query, headers=dict(headers), origin_id=self.origin_id,
                )
                if row.session_id in withdrawn:
                    continue  # consent withdrawn: its CMCD sid is personal data we no longer keep
                rows.append(row)
            self.store.insert_origin_requests(rows)

    # -- hot path ----------------------------------------------------------------------------
    def record_access(
        self, ts: float, path: str, query: str, scope_headers: Any, status: int, nbytes: int, ttfb_ms: float
    ) -> None:
        """One /live/ request (called after it was answered). O(1), no parsing."""
        if len(self._access) >= self.max_pending:
            self.metrics.dropped.inc()
            return
        headers: tuple[tuple[str, str], ...] = ()
        for name in CMCD_HEADERS:
            v = scope_headers.get(name)
            if v:
                headers += ((name, v),)
        self._access.append((ts, path, query, headers, status, nbytes, ttfb_ms))

    # -- routes ------------------------------------------------------------------------------
    async def handle(self, scope: Any, proto: Any, method: str, path: str) -> bool:
        """Answer a /qoe/v1/ request; False when the path is not a telemetry route."""
        rel = path[len(PREFIX):]
        try:
            if rel == "events" and method == "POST":
                await self._events(scope, proto)
            elif rel == "consent" and method == "POST":
                await self._consent(scope, proto)
            elif method in ("GET", "HEAD") and rel in ("report", "sessions", "timeseries"):
                self._admin(scope)
                q = _query(scope.query_string)
                if rel == "report":
                    await self._report(proto, q)
                elif rel == "sessions":
                    since = parse_since(q.get("since", "1h"))
                    limit = _int_param(q, "limit", 50, 1, 1000)
                    rows = await self._in_store(recent_sessions, self.store, time.time() - since, limit)
                    _json(proto, 200, {"sessions": rows})
                else:
                    since = parse_since(q.get("since", "15m"))
                    step = _int_param(q, "step", 10, 1, 86400)
                    now = time.time()
                    rows = await self._in_store(timeseries, self.store, now - since, now + 1, step)
                    _json(proto, 200, {"step_s": step, "series": rows})
            elif method in ("GET", "HEAD") and rel.startswith("consent/"):
                self._admin(scope)
                sid = rel[len("consent/"):]
                proofs = await self._in_store(lambda: self.store.consent_proofs(session_id=sid)) if sid else []
                if not proofs:
                    _json(proto, 404, {"error": "no consent decision recorded", "field": "session_id"})
                else:
                    _json(proto, 200, {"session_id": sid, "decisions": proofs})
            elif method in ("GET", "HEAD") and rel.startswith("sessions/"):
                self._admin(scope)
                sid = rel[len("sessions/"):]
                doc = await self._in_store(session_timeline, self.store, sid) if sid else None
                if doc is None:
                    _json(proto, 404, {"error": "no such session", "field": "session_id"})
                else:
                    _json(proto, 200, doc)
            elif method == "DELETE" and rel.startswith("users/"):
                self._admin(scope)
                user_hash = rel[len("users/"):]
                if not re.fullmatch(r"[0-9a-f]{64}", user_hash):
                    raise BadQuery("user_id", "must be the 64-hex-digit HMAC of the user id")
                await self.flush()  # nothing of theirs may land after the erasure
                n = await self._in_store(self.store.delete_user, user_hash)
                _json(proto, 200, {"user_id": user_hash, "sessions_erased": n})
            else:
                return False
        except BadQuery as exc:
            _json(proto, 400, {"error": exc.message, "field": exc.field})
        except _Forbidden as exc:
            _json(proto, exc.status, {"error": str(exc), "field": "authorization"})
        return True

    def _admin(self, scope: Any) -> None:
        if self.admin_token is not None:
            got = scope.headers.get("authorization") or ""
            if not hmac.compare_digest(got.encode(), f"Bearer {self.admin_token}".encode()):
                raise _Forbidden(401, "admin bearer token required")
            return
        host = scope.client.rsplit(":", 1)[0].strip("[]") if scope.client else ""
        if host not in ("127.0.0.1", "::1", "localhost") and not host.startswith("127."):
            raise _Forbidden(403, "admin routes answer loopback clients only (set an admin token)")

    async def _read_body(self, scope: Any, proto: Any, limit: int) -> bytes | None:
        """The request body, or None when it is larger than `limit` (checked on the
        declared length first, then while reading: an undeclared body is cut off)."""
        length = scope.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > limit):
            return None
        chunks, size = [], 0
        async for chunk in proto:
            size += len(chunk)
            if size > limit:
                return None
            chunks.append(chunk)
        return b"".join(chunks)

    async def _events(self, scope: Any, proto: Any) -> None:
        limit = self.collector.config.max_bytes
        body = await self._read_body(scope, proto, limit)
        client = scope.client.rsplit(":", 1)[0].strip("[]") if scope.client else ""
        try:
            if body is None:
                raise CollectorError(413, "(body)", f"larger than {limit} bytes")
            batch = self.collector.collect(body, now=time.time(), client=client)
            for e in batch.events:
                if e.session_id in self.withdrawn:
                    raise CollectorError(403, "session_id", f"consent withdrawn for session {e.session_id}")
        except CollectorError as exc:
            self.metrics.rejected.labels(str(exc.status)).inc()
            _json(proto, exc.status, {"error": exc.message, "field": exc.field})
            return
        self._batches.append(batch)
        self.metrics.pending.inc(len(batch.events) + len(batch.counters))
        self.metrics.batch(batch, self.slos)
        _json(proto, 202, {"accepted": batch.received, "stored": len(batch.events)})

    async def _consent(self, scope: Any, proto: Any) -> None:
        body = await self._read_body(scope, proto, 4096)
        if body is None:
            _json(proto, 413, {"error": "larger than 4096 bytes", "field": "(body)"})
            return
        try:
            doc = json.loads(body)
        except ValueError:
            raise BadQuery("(body)", "not JSON") from None
        if type(doc) is not dict or not {"session_id", "action"} <= set(doc):
            raise BadQuery("(body)", 'must be {"session_id": ..., "action": "grant" | "decline" | "withdraw", ...}')
        action = doc["action"]
        if action not in ("grant", "decline", "withdraw"):
            raise BadQuery("action", "must be grant, decline or withdraw")
        sid = doc["session_id"]
        # A viewer who declines has no session id (none is made before opting in).
        if type(sid) is not str or len(sid) > 64 or (not sid and action != "decline"):
            raise BadQuery("session_id", "must be a non-empty string of at most 64 characters")
        if action == "grant" and sid in self.withdrawn:
            raise BadQuery("session_id", "consent was withdrawn for this session; a new consent starts a new session")
        proof = None
        if action != "withdraw" or len(doc) > 2:
            proof = self._consent_proof(doc, sid, action)
        if action != "withdraw":
            assert proof is not None
            await self._in_store(self.store.insert_consent, proof)
            _json(proto, 201, {"session_id": sid, "recorded": proof.choice})
            return
        self.withdraw(sid)
        # Pending rows are filtered at flush time; then erase what is already stored.
        await self.flush()
        await self._in_store(delete_session, self.store, sid)
        if proof is None:  # the player sent only the id: take the banner facts from the grant
            proof = await self._in_store(self._withdrawal_from_grant, sid)
        await self._in_store(self.store.insert_consent, proof)
        _json(proto, 200, {"session_id": sid, "withdrawn": True, "erased": True})

    def _consent_proof(self, doc: dict[str, Any], sid: str, action: str) -> ConsentProof:
        """Validate a consent decision's banner facts (each error names its field)."""
        allowed = {"session_id", "action", "banner_version", "banner_hash", "language", "purposes", "user_id"}
        extra = set(doc) - allowed
        if extra:
            raise BadQuery(sorted(extra)[0], "unknown field")
        version, bhash, lang = doc.get("banner_version"), doc.get("banner_hash"), doc.get("language")
        purposes, user = doc.get("purposes"), doc.get("user_id")
        if type(version) is not str or not 0 < len(version) <= 32:
            raise BadQuery("banner_version", "must be a non-empty string of at most 32 characters")
        if type(bhash) is not str or not re.fullmatch(r"[0-9a-f]{64}", bhash):
            raise BadQuery("banner_hash", "must be the SHA-256 hex of the banner text shown")
        if lang not in CONSENT_LANGUAGES:
            raise BadQuery("language", f"must be one of {', '.join(CONSENT_LANGUAGES)}")
        if type(purposes) is not list or not purposes or any(p not in CONSENT_PURPOSES for p in purposes):
            raise BadQuery("purposes", f"must be a non-empty list of {', '.join(CONSENT_PURPOSES)}")
        if user is not None and (type(user) is not str or not 0 < len(user) <= 256):
            raise BadQuery("user_id", "must be a non-empty string of at most 256 characters")
        choice = {"grant": "granted", "decline": "declined", "withdraw": "withdrawn"}[action]
        return ConsentProof(
            ts=time.time(), session_id=sid, choice=choice, banner_version=version, banner_hash=bhash,
            language=lang, purposes=tuple(dict.fromkeys(purposes)),
            user_id=hash_user_id(user, self.collector.config.hmac_key) if user else "",
        )

    def _withdrawal_from_grant(self, sid: str) -> ConsentProof:
        grants = [p for p in self.store.consent_proofs(session_id=sid) if p["choice"] == "granted"]
        g = grants[-1] if grants else {"banner_version": "", "banner_hash": "", "language": "", "purposes": [],
                                       "user_id": ""}
        return ConsentProof(
            ts=time.time(), session_id=sid, choice="withdrawn", banner_version=g["banner_version"],
            banner_hash=g["banner_hash"], language=g["language"], purposes=tuple(g["purposes"]), user_id=g["user_id"],
        )

    def withdraw(self, session_id: str) -> None:
        if session_id in self.withdrawn:
            return
        self.withdrawn.add(session_id)
        if self._withdrawn_file is not None:
            with self._withdrawn_file.open("a") as f:
                f.write(session_id + "\n")

    async def _report(self, proto: Any, q: dict[str, str]) -> None:
        since = parse_since(q.get("since", "1h"))
        by = parse_group_by(q.get("by", ""))
        end = time.time()
        start = end - since
        await self.flush()

        def run() -> tuple[list[Any], list[Any], list[Any]]:
            return (qoe_aggregates(self.store, start, end, by), anonymous_counts(self.store, start, end),
                    turn_relay(self.store, start, end, by))

        rows, anon, relay = await self._in_store(run)
        _json(proto, 200, {
            "since_s": since, "start": start, "end": end, "by": list(by),
            "rows": [r.as_dict() for r in rows], "anonymous": anon, "infra": relay,
        })


class _Forbidden(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _query(qs: str) -> dict[str, str]:
    return {k: v[-1] for k, v in parse_qs(qs, keep_blank_values=True).items()}


def _int_param(q: dict[str, str], name: str, default: int, lo: int, hi: int) -> int:
    raw = q.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or not lo <= int(raw) <= hi:
        raise BadQuery(name, f"must be an integer from {lo} to {hi}")
    return int(raw)


def _json(proto: Any, status: int, doc: Any) -> None:
    proto.response_bytes(status, list(_JSON_HEADERS), json.dumps(doc, separators=(",", ":")).encode())


class RecordingProto:
    """Wraps an RSGI protocol to see a /live/ response's status, size and first-byte time."""

    __slots__ = ("_p", "t0", "status", "nbytes", "ttfb_ms", "on_unpark")

    def __init__(self, proto: Any, t0: float) -> None:
        self._p = proto
        self.t0 = t0
        self.status = 0
        self.nbytes = 0
        self.ttfb_ms = 0.0
        self.on_unpark: Callable[[], None] | None = None  # a parked request: record it when answered

    def unpark(self, exc: BaseException | None = None) -> None:
        self._p.unpark(exc)
        if self.on_unpark is not None:
            self.on_unpark()

    def _mark(self, status: int) -> None:
        self.status = status
        self.ttfb_ms = (time.perf_counter() - self.t0) * 1000.0

    def __call__(self) -> Any:
        return self._p()

    def client_disconnect(self) -> Any:
        return self._p.client_disconnect()

    def response_bytes(self, status: int, headers: Any, body: bytes) -> None:
        self._mark(status)
        self.nbytes = len(body)
        self._p.response_bytes(status, headers, body)

    def response_empty(self, status: int, headers: Any) -> None:
        self._mark(status)
        self._p.response_empty(status, headers)

    def response_str(self, status: int, headers: Any, body: str) -> None:
        self._mark(status)
        self.nbytes = len(body.encode())
        self._p.response_str(status, headers, body)

    def response_file(self, status: int, headers: Any, path: str) -> None:
        self._mark(status)
        self._p.response_file(status, headers, path)

    def response_stream(self, status: int, headers: Any) -> Any:
        self._mark(status)
        return _CountingTransport(self._p.response_stream(status, headers), self)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._p, name)


class _CountingTransport:
    __slots__ = ("_t", "_rec")

    def __init__(self, transport: Any, rec: RecordingProto) -> None:
        self._t = transport
        self._rec = rec

    async def send_bytes(self, data: bytes) -> None:
        self._rec.nbytes += len(data)
        await self._t.send_bytes(data)

    async def send_str(self, data: str) -> None:
        self._rec.nbytes += len(data.encode())
        await self._t.send_str(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._t, name)
