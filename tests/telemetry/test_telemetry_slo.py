from __future__ import annotations

import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from flowcast.telemetry.qoe import sli_counts
from flowcast.telemetry.schema import PlayerEvent
from flowcast.telemetry.slo import (
    DAY,
    DEFAULT_RULES,
    DEFAULT_SLOS,
    HOUR,
    MINUTE,
    AlertTransition,
    BurnRateEvaluator,
    BurnRateRule,
    LogSink,
    SlidingCounts,
    Slo,
    SloError,
    WebhookSink,
    burn_rate,
    error_budget,
    load_slos,
)
from flowcast.telemetry.store import EmbeddedStore

SUCCESS = Slo("playback_success", "playback_success", 0.995)


def run(slo: Slo, phases: list[tuple[int, float]], bucket_s: int = MINUTE, per_bucket: int = 1000):
    """Feed a synthetic stream: phases of (duration_s, bad fraction); evaluate every bucket."""
    ev = BurnRateEvaluator(slo)
    sc = SlidingCounts(bucket_s=bucket_s)
    out: list[AlertTransition] = []
    t = 0
    for duration, bad in phases:
        for _ in range(duration // bucket_s):
            sc.add(t, per_bucket * (1 - bad), per_bucket)
            t += bucket_s
            out += ev.evaluate(t, sc.counts(t, ev.windows))
    return out


def test_default_rules_are_the_standard() -> None:
    assert [(r.severity, r.long_window_s, r.short_window_s, r.burn_rate) for r in DEFAULT_RULES] == [
        ("page", HOUR, 5 * MINUTE, 14.4),
        ("page", 6 * HOUR, 30 * MINUTE, 6.0),
        ("ticket", 3 * DAY, 6 * HOUR, 1.0),
    ]


def test_fast_burn_pages_within_short_window_and_resolves() -> None:
    t0 = 3 * HOUR
    alerts = run(SUCCESS, [(t0, 0.001), (10 * MINUTE, 1.0), (7 * HOUR, 0.001)])
    pages = [a for a in alerts if a.severity == "page" and a.state == "firing"]
    assert pages, alerts
    first = min(a.t for a in pages)
    assert t0 < first <= t0 + 5 * MINUTE  # an outage pages within the 5-minute short window
    fast = [a for a in alerts if a.rule == "page:1h/5m@14.4x"]
    assert [a.state for a in fast] == ["firing", "resolved"]
    stop = t0 + 10 * MINUTE
    resolved = fast[1]
    # Resolves once the 5-minute window has recovered, while the 1-hour window still burns.
    assert stop < resolved.t <= stop + 5 * MINUTE
    assert resolved.long_burn > 14.4 and resolved.short_burn < 14.4
    # Every alert, page or ticket, ends resolved once the burn has stopped long enough.
    states: dict[str, str] = {}
    for a in alerts:
        states[a.rule] = a.state
    assert set(states.values()) == {"resolved"}


def test_slow_burn_tickets_not_pages() -> None:
    # Three good days (0.1 % failed, burn 0.2x), then a 3x burn for two days, then recovery.
    bucket = 5 * MINUTE
    t0, burn = 3 * DAY, 2 * DAY
    alerts = run(SUCCESS, [(t0, 0.001), (burn, 0.015), (12 * HOUR, 0.001)], bucket_s=bucket)
    assert not [a for a in alerts if a.severity == "page"], alerts
    tickets = [a for a in alerts if a.severity == "ticket"]
    assert [a.state for a in tickets] == ["firing", "resolved"]
    # 3-day error rate crosses 0.5 % after ~20.6 h of 1.5 % failures.
    assert t0 + 18 * HOUR < tickets[0].t < t0 + 24 * HOUR
    assert tickets[1].t <= t0 + burn + 6 * HOUR + bucket  # the 6-hour window recovers


def test_no_alert_within_budget() -> None:
    assert run(SUCCESS, [(6 * HOUR, 0.004)]) == []
    assert run(SUCCESS, [(6 * HOUR, 0.0)]) == []


def test_threshold_is_burn_rate_times_budget() -> None:
    rule = BurnRateRule("page", HOUR, 5 * MINUTE, 14.4)
    ev = BurnRateEvaluator(SUCCESS, [rule])
    at = 72_000  # bad events of 1e6: exactly 14.4 x 0.5 %, does not fire (must "exceed")
    just = 72_720
    assert ev.evaluate(0, {HOUR: (1e6 - at, 1e6), 5 * MINUTE: (1e6 - just, 1e6)}) == []
    (a,) = ev.evaluate(1, {HOUR: (1e6 - just, 1e6), 5 * MINUTE: (1e6 - just, 1e6)})
    assert a.state == "firing" and a.long_burn == pytest.approx(14.4 * 1.01)
    # Both windows must exceed: a short spike alone does not page.
    ev2 = BurnRateEvaluator(SUCCESS, [rule])
    assert ev2.evaluate(0, {HOUR: (999_000, 1e6), 5 * MINUTE: (0, 100)}) == []


def test_budget_and_burn() -> None:
    b = error_budget(SUCCESS, 9_975, 10_000)
    assert b.allowed_bad == pytest.approx(50) and b.bad == 25 and b.remaining == pytest.approx(0.5)
    assert burn_rate(SUCCESS, 9_950, 10_000) == pytest.approx(1.0)
    assert burn_rate(SUCCESS, 0, 0) == 0.0


def test_yaml() -> None:
    slos, rules = load_slos(None)
    assert slos == DEFAULT_SLOS and rules == DEFAULT_RULES
    names = {s.name: s for s in slos}
    assert names["startup_p95_2s"].threshold_ms == 2000 and names["startup_p95_2s"].objective == 0.95
    assert names["webrtc_latency_p95_500ms"].protocol == "webrtc"
    assert names["ll_hls_latency_p95_3s"].threshold_ms == 3000
    assert names["rebuffer_ratio_0.5pct"].objective == 0.995
    text = """
slos:
  - {name: startup, sli: startup, objective: 0.99, threshold_ms: 1500}
  - {name: webrtc, sli: latency, objective: 0.95, threshold_ms: 200, protocol: webrtc, window_days: 7}
alerts:
  - {severity: page, long_window_s: 3600, short_window_s: 300, burn_rate: 14.4}
"""
    slos, rules = load_slos(text)
    assert [s.name for s in slos] == ["startup", "webrtc"] and slos[1].window_s == 7 * DAY
    assert len(rules) == 1
    for bad, where in [
        ("slos: [{name: x, sli: nope, objective: 0.9}]", "sli"),
        ("slos: [{name: x, sli: startup, objective: 0.9}]", "threshold_ms"),
        ("slos: [{name: x, sli: startup, objective: 1.5, threshold_ms: 1}]", "objective"),
        ("slos: [{name: x, sli: rebuffer, objective: 0.9, extra: 1}]", "extra"),
        ("alerts: [{severity: sms, long_window_s: 60, short_window_s: 5, burn_rate: 2}]", "severity"),
        ("colour: red", "colour"),
    ]:
        with pytest.raises(SloError, match=where):
            load_slos(bad)


def test_sinks(caplog: pytest.LogCaptureFixture) -> None:
    got: list[dict] = []

    class H(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            got.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *a: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        a = AlertTransition("playback_success", "page:1h/5m@14.4x", "page", "firing", 123.0, 20.0, 30.0)
        WebhookSink(f"http://127.0.0.1:{server.server_address[1]}/hook").send(a)
        assert got == [a.as_dict()]
    finally:
        server.shutdown()
        server.server_close()
    caplog.set_level(logging.WARNING)
    LogSink().send(a)
    assert "playback_success" in caplog.text and "firing" in caplog.text
    with pytest.raises(ValueError):
        WebhookSink("file:///etc/passwd")


def test_end_to_end_from_store(store: EmbeddedStore) -> None:
    """Player sessions in the store -> sli_counts per window -> evaluator: an outage pages."""
    now = time.time()
    t_start = now - 90 * MINUTE
    outage = now - 10 * MINUTE
    rows = []
    t = t_start
    i = 0
    while t < now:
        for k in range(20):
            sid = f"s{i}-{k}"
            ts = t + k
            rows.append(PlayerEvent(event_id=f"{sid}-a", type="session_start", ts=ts, session_id=sid, user_id="",
                                    protocol="hls"))
            if t >= outage:
                rows.append(PlayerEvent(event_id=f"{sid}-e", type="error", ts=ts + 0.5, session_id=sid, user_id="",
                                        protocol="hls", error_code="MEDIA_ERR_NETWORK"))
        t += MINUTE
        i += 1
    store.insert_events(rows)
    ev = BurnRateEvaluator(SUCCESS)
    fired = []
    for m in range(1, 11):
        at = outage + m * MINUTE
        counts = {w: sli_counts(store, SUCCESS, at - w, at) for w in ev.windows}
        fired += [a for a in ev.evaluate(at, counts) if a.severity == "page"]
    assert fired and fired[0].t <= outage + 5 * MINUTE
