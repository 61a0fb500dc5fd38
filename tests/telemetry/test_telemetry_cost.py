from __future__ import annotations

import random
import time

import pytest

from flowcast.telemetry.cmcd import origin_request
from flowcast.telemetry.cost import AnomalyDetector, CostSample, Prices, cost, egress_gb, viewer_minutes
from flowcast.telemetry.schema import PlayerEvent
from flowcast.telemetry.store import EmbeddedStore


def test_cost_figures() -> None:
    f = cost(CostSample(period_h=1, viewer_minutes=60_000, egress_gb=500, transcode_hours=4),
             Prices(egress_per_gb=0.08, transcode_per_hour=0.5, fixed_per_hour=2.0))
    assert f.total == pytest.approx(40 + 2 + 2)
    assert f.per_viewer_minute == pytest.approx(44 / 60_000)
    assert f.per_transcode_hour == pytest.approx(11)
    assert cost(CostSample(1, 0, 0, 0), Prices()).per_viewer_minute is None
    with pytest.raises(ValueError):
        Prices(egress_per_gb=-1)


def test_anomaly_fires_on_spike_and_resolves() -> None:
    rnd = random.Random(1)
    d = AnomalyDetector("cost_per_viewer_minute")
    out = []
    for h in range(48):
        out += d.update(h * 3600, 0.0010 * (1 + rnd.uniform(-0.05, 0.05)))
    assert out == []  # normal noise: quiet
    out += d.update(48 * 3600, 0.0030)  # a 3x jump (e.g. a CDN misconfiguration)
    assert [a.state for a in out] == ["firing"]
    out += d.update(49 * 3600, 0.0010)
    assert [a.state for a in out] == ["firing", "resolved"]
    assert d.update(50 * 3600, 0.0005) == []  # cheaper is not an incident


def test_usage_from_store(store: EmbeddedStore) -> None:
    now = time.time()
    store.insert_events([
        PlayerEvent(event_id=f"e{i}", type="heartbeat", ts=now - 100 + i, session_id="s", user_id="",
                    protocol="hls", play_time_ms=30_000)
        for i in range(4)
    ])
    store.insert_origin_requests([
        origin_request(ts=now - 50, path="/a", status=200, bytes_sent=250_000_000, ttfb_ms=1) for _ in range(2)
    ])
    assert viewer_minutes(store, now - 3600, now + 1) == pytest.approx(2.0)
    assert egress_gb(store, now - 3600, now + 1) == pytest.approx(0.5)


# --- the running stack's cost tracking -------------------------------------------------------
import asyncio  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import threading  # noqa: E402
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer  # noqa: E402

from prometheus_client import CollectorRegistry, generate_latest  # noqa: E402

from flowcast.origin.telemetry_routes import TelemetryService  # noqa: E402
from flowcast.telemetry.collector import Collector, CollectorConfig  # noqa: E402
from flowcast.telemetry.cost import BaselineAnomalyDetector, CostMonitor, egress_cost, egress_gb_by_region  # noqa: E402
from flowcast.telemetry.schema import SessionRow  # noqa: E402
from flowcast.telemetry.slo import WebhookSink  # noqa: E402

from .conftest import TEST_KEY  # noqa: E402

PRICES = {"default": 0.085, "sa-east-1": 0.138}


class _Hook(BaseHTTPRequestHandler):
    received: list[dict] = []

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers["content-length"]))
        type(self).received.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *a: object) -> None:
        pass


def _minute(store: EmbeddedStore, t0: float, minute: int, rnd: random.Random, bytes_factor: float) -> None:
    """One minute of steady traffic: 20 viewers (half in sa-east-1) each playing 60 s and
    fetching ~3 Mbit/s from the origin (times bytes_factor)."""
    base = t0 + minute * 60
    events, reqs = [], []
    for v in range(20):
        sid = f"v{v}"
        events.append(PlayerEvent(event_id=f"{sid}-{minute}", type="heartbeat", ts=base + 30 + v * 0.1,
                                  session_id=sid, user_id="", protocol="ll-hls", region="sa-east-1" if v % 2 else "us-east-1",
                                  play_time_ms=60_000, avg_bitrate_kbps=3000))
        for k in range(30):  # one 2 s segment each
            n = int(750_000 * bytes_factor * (1 + rnd.uniform(-0.05, 0.05)))
            reqs.append(origin_request(ts=base + k * 2 + v * 0.01, path=f"/live/live/720p/{k}.m4s", status=200,
                                       bytes_sent=n, ttfb_ms=5, query=f'CMCD=sid%3D%22{sid}%22'))
    store.insert_events(events)
    store.insert_origin_requests(reqs)


def test_cost_anomaly_in_the_running_service(store: EmbeddedStore, caplog: pytest.LogCaptureFixture) -> None:
    """40 simulated minutes through the real store: steady traffic stays quiet; 4x egress per
    viewer (a misconfigured ladder) fires one alert to the log and the webhook, and it
    resolves when traffic is back to normal. /metrics carries the figures."""
    _Hook.received = []
    hook = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    t0 = (time.time() // 60) * 60 - 3 * 3600
    store.insert_sessions([
        SessionRow(session_id=f"v{v}", user_id="", protocol="ll-hls", cdn="origin",
                   region="sa-east-1" if v % 2 else "us-east-1", player_version="", stream_id="live",
                   codec="h264", start_ts=t0, end_ts=t0)
        for v in range(20)
    ])
    registry = CollectorRegistry()
    monitor = CostMonitor(store, egress_price_per_gb=PRICES, transcode_price_per_hour=0.5,
                          detector=BaselineAnomalyDetector("cost_per_viewer_minute", factor=2.0, window=30, warmup=5))
    svc = TelemetryService(store, Collector(CollectorConfig(hmac_key=TEST_KEY, rate_events_per_s=0)),
                           registry=registry, cost=monitor, owns_store=False,
                           alert_sinks=[WebhookSink(f"http://127.0.0.1:{hook.server_address[1]}/alert")])
    rnd = random.Random(3)
    transitions: list[tuple[int, str]] = []
    per_vm: dict[int, float] = {}

    async def main() -> None:
        monitor.last_t = t0
        for m in range(40):
            _minute(store, t0, m, rnd, 4.0 if 30 <= m < 33 else 1.0)
            for a in await svc.cost_tick(t0 + (m + 1) * 60):
                transitions.append((m, a.state))
            per_vm[m] = monitor.last.per_viewer_minute
            if m == 31:
                text = generate_latest(registry).decode()
                assert "flowcast_cost_anomaly 1.0" in text
        svc._executor.shutdown(wait=True)

    with caplog.at_level(logging.WARNING, logger="flowcast.origin.telemetry_routes"):
        asyncio.run(main())
    hook.shutdown()
    assert transitions == [(30, "firing"), (33, "resolved")], transitions
    assert [(h["kind"], h["state"], h["metric"]) for h in _Hook.received] == [
        ("cost_anomaly", "firing", "cost_per_viewer_minute"), ("cost_anomaly", "resolved", "cost_per_viewer_minute")]
    assert any("cost anomaly cost_per_viewer_minute firing" in r.getMessage() for r in caplog.records)
    # The figure itself: 20 viewer-minutes; ~0.45 GB split over two regions' prices; 1/60 h of encoder.
    gb = egress_gb_by_region(store, t0, t0 + 60)
    assert set(gb) == {"sa-east-1", "us-east-1"} and sum(gb.values()) == pytest.approx(0.45, rel=0.05)
    expected = (egress_cost(gb, PRICES) + 0.5 / 60) / 20
    assert per_vm[0] == pytest.approx(expected, rel=1e-9)
    assert per_vm[30] > 2 * per_vm[29]
    text = generate_latest(registry).decode()
    assert "flowcast_cost_anomaly 0.0" in text and "flowcast_cost_per_viewer_minute_usd" in text
    assert "flowcast_cost_per_transcode_hour_usd" in text
