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
