from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from flowcast.telemetry.collector import HMAC_KEY_ENV, Collector, CollectorConfig, CollectorError
from flowcast.telemetry.schema import hash_user_id

from .conftest import TEST_KEY

NOW = 1_795_600_000.0
NOW_MS = int(NOW * 1000)


def body(events: list[dict[str, Any]], session: dict[str, Any] | None = None) -> bytes:
    if session is None:
        return json.dumps(events).encode()
    return json.dumps({"session": session, "events": events}).encode()


SESSION = {"session_id": "s1", "user_id": "alice@example.com", "protocol": "ll-hls", "cdn": "cf", "consent": True}


def ev(i: int, type_: str = "heartbeat", **kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"event_id": f"e{i}", "type": type_, "ts": NOW_MS - 1000 + i}
    if type_ == "heartbeat":
        base["play_time_ms"] = 10_000
    base.update(kw)
    return base


def err(collector: Collector, b: bytes, **kw: Any) -> CollectorError:
    with pytest.raises(CollectorError) as ei:
        collector.collect(b, now=NOW, **kw)
    return ei.value


def test_valid_batch_object_form(collector: Collector) -> None:
    events = [
        ev(0, "session_start", stream_id="live", codec="h264", profile="high", level="4.0", gop_s=2, b_frames=0,
           audio_codec="aac", channels=2, player_version="hls.js 1.7.4", region="sa-east-1"),
        ev(1, "startup", startup_time_ms=812),
        ev(2, "stall", rebuffer_ms=300.5),
        ev(3, "bitrate_switch", avg_bitrate_kbps=2500),
        ev(4, "latency", latency_ms=1604),
        ev(5, "error", error_code="MEDIA_ERR_DECODE"),
        ev(6, "heartbeat", avg_bitrate_kbps=2400.5, dropped_frames=3),
        ev(7, "session_end", play_time_ms=5000),
    ]
    batch = collector.collect(body(events, SESSION), now=NOW)
    assert [e.type for e in batch.events] == [e["type"] for e in events]
    first = batch.events[0]
    assert first.session_id == "s1" and first.protocol == "ll-hls" and first.cdn == "cf"
    assert first.codec == "h264" and first.gop_s == 2.0 and first.channels == 2
    assert first.ts == pytest.approx((NOW_MS - 1000) / 1000)
    assert batch.events[2].rebuffer_ms == 300.5
    assert batch.events[6].dropped_frames == 3
    assert {s.session_id for s in batch.sessions} == {"s1"} and len(batch.sessions) == 2
    assert batch.counters == [] and batch.received == 8


def test_user_id_is_keyed_hmac_never_raw(collector: Collector) -> None:
    batch = collector.collect(body([ev(0)], SESSION), now=NOW)
    h = batch.events[0].user_id
    assert h == hash_user_id("alice@example.com", TEST_KEY)
    assert len(h) == 64 and "alice" not in h
    assert hash_user_id("alice@example.com", b"another key" * 3) != h
    assert all("alice" not in repr(r) for r in batch.events + batch.sessions)


def test_key_from_env_and_never_printed() -> None:
    key = "ab" * 32
    cfg = CollectorConfig.from_env({HMAC_KEY_ENV: key})
    assert cfg.hmac_key == bytes.fromhex(key)
    assert key not in repr(cfg) and "hmac_key" not in repr(cfg)
    with pytest.raises(ValueError):
        CollectorConfig.from_env({HMAC_KEY_ENV: "ab" * 8})  # too short
    with pytest.raises(ValueError):
        CollectorConfig.from_env({})


def test_array_form_with_per_event_session_fields(collector: Collector) -> None:
    events = [ev(0, "latency", consent=True, session_id="s9", protocol="webrtc", latency_ms=120.0)]
    (row,) = collector.collect(body(events), now=NOW).events
    assert row.session_id == "s9" and row.protocol == "webrtc" and row.user_id == ""


@pytest.mark.parametrize(
    ("events", "field", "status"),
    [
        ([ev(0), ev(1), ev(2), ev(3, latency_ms="12")], "events[3].latency_ms", 400),  # wrong type / wrong type for event
        ([ev(0, "latency", latency_ms="12")], "events[0].latency_ms", 400),
        ([ev(0, "latency", latency_ms=True)], "events[0].latency_ms", 400),  # bool is not a number
        ([ev(0, "latency", latency_ms=-1)], "events[0].latency_ms", 400),
        ([ev(0, dropped_frames=1.5)], "events[0].dropped_frames", 400),  # integer field
        ([ev(0, colour="red")], "events[0].colour", 400),  # unknown field
        ([ev(0, "stall")], "events[0].rebuffer_ms", 400),  # required metric
        ([ev(0, "nonsense")], "events[0].type", 400),
        ([ev(0, ts=NOW_MS + 120_000)], "events[0].ts", 400),  # beyond the 60 s skew
        ([ev(0, ts=NOW_MS - 2 * 86_400_000)], "events[0].ts", 400),  # too old
        ([ev(0, ts=float(NOW_MS))], "events[0].ts", 400),  # integer ms only
        ([ev(0, codec="vp9")], "events[0].codec", 400),
        ([ev(0), ev(0)], "events[1].event_id", 400),  # repeated in batch
    ],
)
def test_rejections_name_the_field(collector: Collector, events: list, field: str, status: int) -> None:
    e = err(collector, body(events, SESSION))
    assert (e.status, e.field) == (status, field), e


def test_skew_allows_small_future(collector: Collector) -> None:
    collector.collect(body([ev(0, ts=NOW_MS + 30_000)], SESSION), now=NOW)


def test_consent_required(collector: Collector) -> None:
    s = {k: v for k, v in SESSION.items() if k != "consent"}
    assert err(collector, body([ev(0)], s)).field == "events[0].consent"
    assert err(collector, body([ev(0, consent="yes")], s)).field == "events[0].consent"


def test_envelope_errors(collector: Collector) -> None:
    assert err(collector, b"{not json").status == 400
    assert err(collector, b'{"events": 3}').field == "events"
    assert err(collector, b'{"evnts": []}').field == "evnts"
    assert err(collector, b'{"session": {"proto": "x"}, "events": []}').field == "session.proto"
    assert err(collector, b'{"session": {"protocol": "rtmp"}, "events": []}').field == "session.protocol"
    assert err(collector, b"[1]").field == "events[0]"


def test_size_limits() -> None:
    c = Collector(CollectorConfig(hmac_key=TEST_KEY, max_bytes=2000, max_events=5, rate_events_per_s=0))
    e = err(c, body([ev(i) for i in range(6)], SESSION))
    assert (e.status, e.field) == (413, "events")
    e = err(c, b" " * 2001)
    assert e.status == 413


def test_rate_limit_429() -> None:
    c = Collector(CollectorConfig(hmac_key=TEST_KEY, rate_events_per_s=10, rate_burst=20))
    b = body([ev(i) for i in range(10)], SESSION)
    c.collect(b, now=NOW, client="1.2.3.4")
    c.collect(b, now=NOW, client="1.2.3.4")
    e = err(c, b, client="1.2.3.4")
    assert e.status == 429
    c.collect(b, now=NOW, client="5.6.7.8")  # other clients unaffected
    c.collect(b, now=NOW + 1.0, client="1.2.3.4")  # refilled after a second


def test_without_consent_only_anonymous_counters(collector: Collector) -> None:
    s = {**SESSION, "consent": False}
    events = [ev(0), ev(1), ev(2, "stall", rebuffer_ms=250), ev(3, "stall", rebuffer_ms=750), ev(4, consent=True)]
    batch = collector.collect(body(events, s), now=NOW)
    assert [e.event_id for e in batch.events] == ["e4"]  # only the consented one keeps ids
    counters = {(c.type, c.protocol): c for c in batch.counters}
    assert counters[("heartbeat", "ll-hls")].events == 2
    assert counters[("heartbeat", "ll-hls")].value_sum == 20_000
    assert counters[("stall", "ll-hls")].events == 2 and counters[("stall", "ll-hls")].value_sum == 1000
    text = repr(batch.counters)
    assert "s1" not in text and "alice" not in text and "e0" not in text
    assert batch.sessions == []


def test_collector_never_logs_key_or_raw_user(collector: Collector, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    collector.collect(body([ev(0)], SESSION), now=NOW)
    with pytest.raises(CollectorError) as ei:
        collector.collect(body([ev(0, colour=1)], SESSION), now=NOW)
    assert "alice" not in str(ei.value) and "alice" not in caplog.text
    assert TEST_KEY.hex() not in caplog.text
