from __future__ import annotations

import json
import os
import threading
import time
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from flowcast.telemetry.cmcd import origin_request
from flowcast.telemetry.collector import Collector
from flowcast.telemetry.qoe import anonymous_counts, qoe_aggregates
from flowcast.telemetry.schema import hash_user_id
from flowcast.telemetry.store import (
    ClickHouseHttpStore,
    EmbeddedStore,
    Retention,
    Store,
    StoreError,
)

from .conftest import TEST_KEY

NOW = time.time()
NOW_MS = int(NOW * 1000)


def session_body(sid: str, user: str, n: int = 5, consent: bool = True, proto: str = "ll-hls") -> bytes:
    events: list[dict[str, Any]] = [{"event_id": f"{sid}-start", "type": "session_start", "ts": NOW_MS - 60_000}]
    events.append({"event_id": f"{sid}-startup", "type": "startup", "ts": NOW_MS - 59_000, "startup_time_ms": 700})
    for i in range(n):
        events.append({"event_id": f"{sid}-hb{i}", "type": "heartbeat", "ts": NOW_MS - 50_000 + i * 1000,
                       "play_time_ms": 1000, "avg_bitrate_kbps": 2500.0})
    events.append({"event_id": f"{sid}-stall", "type": "stall", "ts": NOW_MS - 30_000, "rebuffer_ms": 100})
    events.append({"event_id": f"{sid}-end", "type": "session_end", "ts": NOW_MS - 1000, "play_time_ms": 0})
    session = {"session_id": sid, "user_id": user, "protocol": proto, "cdn": "cf", "consent": consent}
    return json.dumps({"session": session, "events": events}).encode()


def test_persists_across_restart(tmp_path: Path, collector: Collector) -> None:
    path = tmp_path / "chdb"
    s = EmbeddedStore(path)
    s.write_batch(collector.collect(session_body("s1", "alice"), now=NOW))
    s.insert_origin_requests([origin_request(ts=NOW, path="/a.m4s", status=200, bytes_sent=10, ttfb_ms=1.0,
                                             headers={"CMCD-Session": 'sid="s1"'})])
    n = s.count_events()
    s.close()
    with pytest.raises(StoreError):
        s.count_events()
    s2 = EmbeddedStore(path)
    try:
        assert s2.count_events() == n == 9
        sess = s2.session("s1")
        assert sess is not None and sess["protocol"] == "ll-hls"
        assert sess["start_ts"] == pytest.approx((NOW_MS - 60_000) / 1000)
        assert sess["end_ts"] == pytest.approx((NOW_MS - 1000) / 1000)
        assert s2.query("SELECT count() AS n FROM flowcast.origin_requests")[0]["n"] == 1
    finally:
        s2.close()


def test_one_embedded_store_per_process(tmp_path: Path, store: EmbeddedStore) -> None:
    with pytest.raises(StoreError):
        EmbeddedStore(tmp_path / "other")


def test_retried_batch_not_counted_twice(store: EmbeddedStore, collector: Collector) -> None:
    batch = collector.collect(session_body("s1", "alice"), now=NOW)
    store.write_batch(batch)
    (before,) = qoe_aggregates(store)
    store.write_batch(batch)  # the player retried after a timeout
    store.write_batch(batch)
    assert store.count_events() == len(batch.events)
    (after,) = qoe_aggregates(store)
    assert after == before
    assert after.play_time_ms == 5000 and after.rebuffer_count == 1
    # Also after the background merge has collapsed the duplicates physically.
    store.execute("OPTIMIZE TABLE flowcast.player_events FINAL")
    store.execute("OPTIMIZE TABLE flowcast.sessions FINAL")
    assert store.query("SELECT count() AS n FROM flowcast.player_events")[0]["n"] == len(batch.events)
    assert store.query("SELECT count() AS n FROM flowcast.sessions")[0]["n"] == 1


def test_delete_user(store: EmbeddedStore, collector: Collector) -> None:
    store.write_batch(collector.collect(session_body("s1", "alice"), now=NOW))
    store.write_batch(collector.collect(session_body("s2", "alice"), now=NOW))
    store.write_batch(collector.collect(session_body("s3", "bob"), now=NOW))
    # A later beacon of alice's session without the user id still belongs to her.
    store.write_batch(collector.collect(json.dumps([{"event_id": "late", "type": "heartbeat", "ts": NOW_MS,
        "play_time_ms": 1000, "session_id": "s1", "protocol": "ll-hls", "consent": True}]).encode(), now=NOW))
    store.insert_origin_requests([
        origin_request(ts=NOW, path=f"/{sid}.m4s", status=200, bytes_sent=1, ttfb_ms=1.0,
                       query=urllib.parse.urlencode({"CMCD": f'sid="{sid}"'}))
        for sid in ("s1", "s2", "s3")
    ])
    alice = hash_user_id("alice", TEST_KEY)
    data = store.user_data(alice)
    assert {s["session_id"] for s in data["sessions"]} == {"s1", "s2"}
    assert len(data["player_events"]) == 19 and len(data["origin_requests"]) == 2

    assert store.delete_user(alice) == 2
    assert store.user_data(alice) == {"sessions": [], "player_events": [], "origin_requests": []}
    rows = store.query("SELECT DISTINCT session_id FROM flowcast.player_events ORDER BY session_id")
    assert rows == [{"session_id": "s3"}]
    assert [r["session_id"] for r in store.query("SELECT session_id FROM flowcast.origin_requests")] == ["s3"]
    assert store.session("s1") is None and store.session("s3") is not None
    bob = store.user_data(hash_user_id("bob", TEST_KEY))
    assert len(bob["player_events"]) == 9


def test_ttl_from_config(tmp_path: Path) -> None:
    s = EmbeddedStore(tmp_path / "chdb", retention=Retention(player_events_days=7, origin_requests_days=3))
    try:
        ddl = s.query("SHOW CREATE TABLE flowcast.player_events")[0]["statement"]
        assert "toIntervalDay(7)" in ddl or "INTERVAL 7 DAY" in ddl
        ddl = s.query("SHOW CREATE TABLE flowcast.origin_requests")[0]["statement"]
        assert "toIntervalDay(3)" in ddl or "INTERVAL 3 DAY" in ddl
        # Rows past their TTL go at the next merge.
        s.insert_origin_requests([origin_request(ts=NOW - 10 * 86400, path="/old", status=200, bytes_sent=1, ttfb_ms=1),
                                  origin_request(ts=NOW, path="/new", status=200, bytes_sent=1, ttfb_ms=1)])
        s.execute("OPTIMIZE TABLE flowcast.origin_requests FINAL")
        assert [r["path"] for r in s.query("SELECT path FROM flowcast.origin_requests")] == ["/new"]
    finally:
        s.close()
    with pytest.raises(ValueError):
        Retention(sessions_days=0)


def test_anonymous_counters_stored(store: EmbeddedStore, collector: Collector) -> None:
    store.write_batch(collector.collect(session_body("s1", "alice", consent=False), now=NOW))
    assert store.count_events() == 0
    assert store.query("SELECT count() AS n FROM flowcast.sessions")[0]["n"] == 0
    counts = {r["type"]: r["events"] for r in anonymous_counts(store)}
    assert counts == {"heartbeat": 5, "session_start": 1, "startup": 1, "stall": 1, "session_end": 1}


# --- HTTP backend --------------------------------------------------------------------------
class _ChdbHttpStandIn(BaseHTTPRequestHandler):
    """A stand-in for the ClickHouse HTTP interface (POST body = SQL, param_<name>,
    default_format) executing on chDB, to exercise ClickHouseHttpStore's wire path."""

    session: Any = None
    lock = threading.Lock()

    def do_POST(self) -> None:  # noqa: N802
        q = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
        sql = self.rfile.read(int(self.headers["Content-Length"])).decode()
        params = {k[len("param_"):]: v[0] for k, v in q.items() if k.startswith("param_")}
        try:
            with self.lock:
                res = self.session.query(sql, q.get("default_format", ["TabSeparated"])[0], params=params or None)
            body, code = res.bytes(), 200
        except Exception as exc:
            body, code = str(exc).encode(), 400
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def http_url(tmp_path: Path) -> Iterator[str]:
    url = os.environ.get("FLOWCAST_CLICKHOUSE_URL")
    if url:  # a real ClickHouse server (>= 22.x) when one is available
        yield url
        return
    from chdb import session

    _ChdbHttpStandIn.session = session.Session(str(tmp_path / "standin"))
    server = ThreadingHTTPServer(("127.0.0.1", 0), _ChdbHttpStandIn)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        _ChdbHttpStandIn.session.close()


def test_http_store_same_sql(http_url: str, collector: Collector) -> None:
    s: Store = ClickHouseHttpStore(http_url, database="flowcast_http_test")
    try:
        batch = collector.collect(session_body("h1", "carol"), now=NOW)
        s.write_batch(batch)
        s.write_batch(batch)
        assert s.count_events() == len(batch.events)
        (row,) = qoe_aggregates(s, NOW - 3600, NOW + 60, ("protocol",))
        assert row.group == {"protocol": "ll-hls"} and row.startup_p50_ms == 700
        carol = hash_user_id("carol", TEST_KEY)
        assert s.delete_user(carol) == 1
        assert s.count_events() == 0
    finally:
        s.execute("DROP DATABASE IF EXISTS flowcast_http_test")
    with pytest.raises(StoreError):
        ClickHouseHttpStore("http://127.0.0.1:9", timeout=1)


def test_rollup_follows_erasure(store: EmbeddedStore) -> None:
    """delete_user and delete_session recompute the affected minutes of the rollup."""
    from flowcast.telemetry.collector import CollectorConfig
    from flowcast.telemetry.timeline import delete_session

    from . import synth
    from .test_telemetry_qoe import check

    sess = synth.sessions(3000, NOW_MS - 2 * 3_600_000, 3_600_000, seed=11)
    collector = Collector(CollectorConfig(hmac_key=TEST_KEY, rate_events_per_s=0))
    for b in synth.batches(sess):
        batch = collector.collect(b, now=NOW)
        store.write_batch(batch)
    victim = sess[0]["session"]
    user_hash = next(
        e.user_id for b in synth.batches(sess[:1]) for e in collector.collect(b, now=NOW).events
    )
    assert store.delete_user(user_hash) >= 1
    gone = {s["session"]["session_id"] for s in sess if s["session"]["user_id"] == victim["user_id"]}
    delete_session(store, sess[-1]["session"]["session_id"])
    gone.add(sess[-1]["session"]["session_id"])
    left = [s for s in sess if s["session"]["session_id"] not in gone]
    truth = synth.ground_truth(left, 0, 2**62, ("protocol",))
    rows = qoe_aggregates(store, group_by=("protocol",))
    assert {r.group["protocol"] for r in rows} == {k[0] for k in truth}
    for r in rows:
        check(r.as_dict(), truth[(r.group["protocol"],)])


def test_turn_relay_ratio_from_webrtc_heartbeats(store, collector) -> None:  # type: ignore[no-untyped-def]
    """schema.md Infra `turn_relay_ratio`: sent per heartbeat by WebRTC players, refused
    outside [0, 1] naming the field, stored, and reported weighted by play time."""
    from flowcast.telemetry.collector import CollectorError
    from flowcast.telemetry.qoe import turn_relay

    now = time.time()
    session = {"session_id": "w1", "protocol": "webrtc", "cdn": "origin", "consent": True}

    def beat(i: int, play: int, ratio: float | None, sid: str = "w1", protocol: str = "webrtc") -> dict:
        e = {"event_id": f"{sid}-{i}", "type": "heartbeat", "ts": int(now * 1000) - 10_000 + i, "play_time_ms": play}
        if ratio is not None:
            e["turn_relay_ratio"] = ratio
        return e

    batch = collector.collect(json.dumps({"session": session, "events": [
        beat(0, 10_000, 1.0), beat(1, 30_000, 0.0), beat(2, 5_000, None),
    ]}).encode(), now=now)
    assert [e.turn_relay_ratio for e in batch.events] == [1.0, 0.0, None]
    store.insert_events(batch.events)
    hls = collector.collect(json.dumps({"session": {**session, "session_id": "h1", "protocol": "ll-hls"},
                                         "events": [beat(0, 60_000, None, "h1")]}).encode(), now=now)
    store.insert_events(hls.events)
    (row,) = turn_relay(store, now - 3600, now + 1)
    # 10 s relayed out of the 40 s that measured it; the unmeasured and the HLS play time do not count.
    assert row["webrtc_play_time_ms"] == 40_000 and row["turn_relay_ratio"] == 0.25
    assert turn_relay(store, now - 3600, now + 1, ("cdn",))[0]["group"] == {"cdn": "origin"}
    for bad in (1.5, -0.1, "1"):
        with pytest.raises(CollectorError) as ei:
            collector.collect(json.dumps({"session": session, "events": [beat(9, 1000, bad)]}).encode(), now=now)  # type: ignore[arg-type]
        assert "turn_relay_ratio" in str(ei.value)
    with pytest.raises(CollectorError):  # only play intervals carry it
        collector.collect(json.dumps({"session": session, "events": [
            {"event_id": "x", "type": "startup", "ts": int(now * 1000), "startup_time_ms": 5, "turn_relay_ratio": 1}
        ]}).encode(), now=now)


def test_a_store_from_before_turn_relay_ratio_gets_the_column(tmp_path: Path) -> None:
    path = tmp_path / "old"
    with EmbeddedStore(path) as old:
        old.execute(f"ALTER TABLE {old.t('player_events')} DROP COLUMN turn_relay_ratio")
    with EmbeddedStore(path) as store:  # opening runs the DDL, migration included
        cols = store.query(f"SELECT name FROM system.columns WHERE database = '{store.database}' "
                           "AND table = 'player_events' AND name = 'turn_relay_ratio'")
        assert cols == [{"name": "turn_relay_ratio"}]
