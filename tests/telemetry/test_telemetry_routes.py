"""The telemetry routes on a real origin (granian, in process) with the embedded chDB store:
collector endpoint and its refusals, access events joined by CMCD sid, report, session
timeline, consent withdrawal, LGPD erasure, admin gating."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from flowcast.origin.app import OriginApp
from flowcast.origin.metrics import OriginMetrics
from flowcast.origin.server import running
from flowcast.origin.store import MediaStore
from flowcast.origin.telemetry_routes import TelemetryService, parse_group_by, parse_since, BadQuery
from flowcast.telemetry.collector import Collector, CollectorConfig
from flowcast.telemetry.schema import hash_user_id
from flowcast.telemetry.store import EmbeddedStore

from .conftest import TEST_KEY

SID = "sess-0001"


def now_ms() -> int:
    return int(time.time() * 1000)


def batch(sid: str = SID, *, consent: bool = True, user: str = "viewer@example.com", t: int | None = None) -> dict:
    t = now_ms() - 5000 if t is None else t
    return {
        "session": {"session_id": sid, "user_id": user, "protocol": "ll-hls", "cdn": "origin", "consent": consent},
        "events": [
            {"event_id": f"{sid}-0", "type": "session_start", "ts": t},
            {"event_id": f"{sid}-1", "type": "startup", "ts": t + 800, "startup_time_ms": 812.5},
            {"event_id": f"{sid}-2", "type": "stall", "ts": t + 2000, "rebuffer_ms": 3012.0},
            {"event_id": f"{sid}-3", "type": "latency", "ts": t + 2100, "latency_ms": 1400.0},
            {"event_id": f"{sid}-4", "type": "heartbeat", "ts": t + 4000, "play_time_ms": 3000.0,
             "avg_bitrate_kbps": 2500.0, "dropped_frames": 2},
        ],
    }


Scenario = Callable[[Any, httpx.AsyncClient, TelemetryService, MediaStore], Awaitable[None]]


@pytest.fixture
def run(tmp_path: Path) -> Callable[..., None]:
    def runner(scenario: Scenario, *, admin_token: str | None = None, max_bytes: int = 256 * 1024) -> None:
        async def main() -> None:
            static = tmp_path / "web"
            static.mkdir(exist_ok=True)
            (static / "dashboard.html").write_text("<!doctype html><title>dash</title>")
            media = MediaStore()
            metrics = OriginMetrics()
            store = EmbeddedStore(tmp_path / "chdb")
            svc = TelemetryService(
                store,
                Collector(CollectorConfig(hmac_key=TEST_KEY, rate_events_per_s=0, max_bytes=max_bytes)),
                registry=metrics.registry,
                state_dir=tmp_path,
                admin_token=admin_token,
                flush_interval_s=0.2,
            )
            app = OriginApp(media, static_dir=static, vendor_dirs={}, metrics=metrics, telemetry=svc)
            svc.start()
            try:
                async with running(app, "127.0.0.1", 0) as server:
                    async with httpx.AsyncClient(base_url=server.url, timeout=20.0) as client:
                        await scenario(server, client, svc, media)
            finally:
                await svc.stop()

        asyncio.run(main())

    return runner


def post(client: httpx.AsyncClient, doc: Any, **kw: Any) -> Awaitable[httpx.Response]:
    body = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    return client.post("/qoe/v1/events", content=body, headers={"content-type": "application/json"}, **kw)


def test_events_stored_and_session_joined_with_origin_requests(run) -> None:
    async def scenario(server, client, svc, media) -> None:
        media.put("s/seg1.m4s", b"x" * 1234, "segment")
        r = await post(client, batch())
        assert r.status_code == 202, r.text
        assert r.json() == {"accepted": 5, "stored": 5}
        cmcd = f'bl=1500,mtp=25000,ot=v,sid="{SID}",br=2500'
        r = await client.get("/live/s/seg1.m4s", params={"CMCD": cmcd})
        assert r.status_code == 200
        r = await client.get("/live/s/seg1.m4s", headers={"CMCD-Session": f'sid="{SID}"', "CMCD-Object": "ot=v"})
        assert r.status_code == 200
        await client.get("/live/s/missing.m4s")  # 404, no CMCD: stored without a session
        await svc.flush()
        doc = (await client.get(f"/qoe/v1/sessions/{SID}")).json()
        assert doc["session"]["session_id"] == SID
        assert doc["session"]["user_id"] == hash_user_id("viewer@example.com", TEST_KEY)
        types = [e["type"] for e in doc["player_events"]]
        assert types == ["session_start", "startup", "stall", "latency", "heartbeat"]
        assert doc["player_events"][2]["rebuffer_ms"] == 3012.0
        reqs = doc["origin_requests"]
        assert len(reqs) == 2
        q = reqs[0]
        assert (q["path"], q["status"], q["bytes"], q["object_type"]) == ("/live/s/seg1.m4s", 200, 1234, "v")
        assert (q["buffer_length_ms"], q["throughput_kbps"], q["bitrate_kbps"]) == (1500, 25000, 2500)
        assert q["ttfb_ms"] >= 0
        assert [x["source"] for x in doc["timeline"]].count("origin") == 2
        assert [x["ts"] for x in doc["timeline"]] == sorted(x["ts"] for x in doc["timeline"])
        nosid = svc.store.query(f"SELECT status FROM {svc.store.t('origin_requests')} WHERE session_id = ''")
        assert nosid == [{"status": 404}]
        assert (await client.get("/qoe/v1/sessions/nope")).status_code == 404

    run(scenario)


def test_a_parked_blocking_reload_is_recorded_once_answered(run) -> None:
    """Our server parks a blocking reload (no coroutine); its access event still comes,
    with the status, size and time to first byte of the answer the publish released."""

    def publish(media: MediaStore, part: int) -> bytes:
        body = f"#EXTM3U\n#EXT-X-PART-INF:PART-TARGET=0.5\n# part {part}\n".encode()
        media.put_playlist("s/index.m3u8", full=body, delta=None, msn=3, part=part,
                           target_duration=2.0, part_target=0.5, ended=False)
        return body

    async def scenario(server, client, svc, media) -> None:
        publish(media, 0)
        params = {"_HLS_msn": "3", "_HLS_part": "1", "CMCD": f'sid="{SID}",ot=m'}
        reload = asyncio.ensure_future(client.get("/live/s/index.m3u8", params=params))
        await asyncio.sleep(0.3)
        assert not reload.done()
        hold = media._playlist_waiters["s/index.m3u8"].holds[(3, 1)]
        assert [fut for _, fut, _ in hold._entries] == [None]  # parked: a callback, no future
        await svc.flush()
        assert (await client.get(f"/qoe/v1/sessions/{SID}")).status_code == 404  # nothing yet
        body = publish(media, 1)
        r = await reload
        assert r.status_code == 200 and r.content == body
        await svc.flush()
        reqs = (await client.get(f"/qoe/v1/sessions/{SID}")).json()["origin_requests"]
        sent = int(r.headers["content-length"])  # (gzip: what went on the wire)
        assert [(q["path"], q["status"], q["bytes"]) for q in reqs] == [("/live/s/index.m3u8", 200, sent)]
        assert reqs[0]["ttfb_ms"] >= 250  # held until the publish

    run(scenario)


def test_report_by_cdn_and_timeseries(run) -> None:
    async def scenario(server, client, svc, media) -> None:
        assert (await post(client, batch("a1"))).status_code == 202
        b = batch("a2")
        b["session"]["cdn"] = "fastly"
        assert (await post(client, b)).status_code == 202
        assert (await post(client, batch("anon", consent=False))).status_code == 202
        r = await client.get("/qoe/v1/report", params={"since": "1h", "by": "cdn"})
        assert r.status_code == 200, r.text
        doc = r.json()
        rows = {row["group"]["cdn"]: row for row in doc["rows"]}
        assert set(rows) == {"origin", "fastly"}
        assert rows["origin"]["sessions"] == 1 and rows["origin"]["rebuffer_count"] == 1
        assert rows["origin"]["startup_p50_ms"] == 812.5
        assert sum(a["events"] for a in doc["anonymous"]) == 5
        r = await client.get("/qoe/v1/report", params={"since": "forever"})
        assert r.status_code == 400 and r.json()["field"] == "since"
        r = await client.get("/qoe/v1/report", params={"by": "user_id"})
        assert r.status_code == 400 and r.json()["field"] == "by"
        ts = (await client.get("/qoe/v1/timeseries", params={"since": "5m", "step": "10"})).json()
        assert ts["step_s"] == 10 and any(p["stalls"] for p in ts["series"])
        sessions = (await client.get("/qoe/v1/sessions", params={"since": "1h"})).json()["sessions"]
        assert {s["session_id"] for s in sessions} == {"a1", "a2"}  # the anonymous one has no id
        metrics = (await client.get("/metrics")).text
        assert 'flowcast_qoe_sli_total{slo="startup_p95_2s"} 2.0' in metrics
        assert "flowcast_qoe_stalls_total 2.0" in metrics

    run(scenario)


BAD = [
    (b"{not json", 400, "(body)"),
    (json.dumps({"session": {"session_id": "x", "protocol": "ll-hls", "consent": True},
                 "events": [{"event_id": "e", "type": "startup", "ts": 1, "startup_time_ms": "fast"}]}).encode(),
     400, "events[0].startup_time_ms"),
    (json.dumps({"session": {"session_id": "x", "protocol": "ll-hls"},
                 "events": [{"event_id": "e", "type": "session_start", "ts": "now"}]}).encode(),
     400, "events[0].ts"),
    (json.dumps({"session": {"session_id": "x", "protocol": "ll-hls"},
                 "events": [{"event_id": "e", "type": "session_start", "ts": 1}]}).encode(),
     400, None),  # ts checked first or consent missing: either way a 4xx naming a field
    (json.dumps([{"event_id": "e", "type": "session_start", "session_id": "x", "protocol": "ll-hls",
                  "ts": now_ms()}]).encode(), 400, "events[0].consent"),
    (json.dumps([{"event_id": "e", "type": "session_start", "session_id": "x", "protocol": "ll-hls",
                  "consent": True, "ts": now_ms() + 3_600_000}]).encode(), 400, "events[0].ts"),
    (json.dumps([{"event_id": f"e{i}", "type": "session_start", "session_id": "x", "protocol": "ll-hls",
                  "consent": True, "ts": now_ms()} for i in range(501)]).encode(), 413, "events"),
    (b"[" + b" " * 300_000 + b"]", 413, "(body)"),
]


@pytest.mark.parametrize("body,status,field", BAD)
def test_bad_batches_refused_with_field_and_nothing_stored(run, body: bytes, status: int, field: str | None) -> None:
    async def scenario(server, client, svc, media) -> None:
        r = await post(client, body)
        assert r.status_code == status, r.text
        doc = r.json()
        assert doc["error"]
        if field is not None:
            assert doc["field"] == field, doc
        await svc.flush()
        assert svc.store.count_events() == 0
        assert svc.store.query(f"SELECT count() AS n FROM {svc.store.t('anon_counters')}") == [{"n": 0}]

    run(scenario)


def test_oversized_body_refused_on_content_length_before_reading(run) -> None:
    async def scenario(server, client, svc, media) -> None:
        reader, writer = await asyncio.open_connection(server.host, server.port)
        # Declares 10 MB and sends nothing: the answer must come without reading a body.
        writer.write(b"POST /qoe/v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 10000000\r\n\r\n")
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 413"), head
        writer.close()

    run(scenario, max_bytes=4096)


def test_consent_withdrawal_erases_and_refuses(run) -> None:
    async def scenario(server, client, svc, media) -> None:
        media.put("s/p.m4s", b"y" * 10, "segment")
        assert (await post(client, batch("keep"))).status_code == 202
        assert (await post(client, batch("gone"))).status_code == 202
        await client.get("/live/s/p.m4s", params={"CMCD": 'sid="gone"'})
        await svc.flush()
        assert (await client.get("/qoe/v1/sessions/gone")).status_code == 200
        r = await client.post("/qoe/v1/consent", json={"session_id": "gone", "action": "withdraw"})
        assert r.status_code == 200, r.text
        assert (await client.get("/qoe/v1/sessions/gone")).status_code == 404
        assert (await client.get("/qoe/v1/sessions/keep")).status_code == 200
        b = batch("gone")
        for e in b["events"]:
            e["event_id"] += "-again"
        r = await post(client, b)
        assert r.status_code == 403 and r.json()["field"] == "session_id"
        await client.get("/live/s/p.m4s", params={"CMCD": 'sid="gone"'})  # after withdrawal: not kept
        await svc.flush()
        assert (await client.get("/qoe/v1/sessions/gone")).status_code == 404
        r = await client.post("/qoe/v1/consent", json={"session_id": "gone", "action": "regrant"})
        assert r.status_code == 400 and r.json()["field"] == "action"
        r = await client.post("/qoe/v1/consent", json={**GRANT, "session_id": "gone"})
        assert r.status_code == 400 and r.json()["field"] == "session_id"  # withdrawn stays withdrawn
        assert "gone" in (Path(svc._withdrawn_file).read_text().split())

    run(scenario)


def test_user_erasure(run) -> None:
    async def scenario(server, client, svc, media) -> None:
        assert (await post(client, batch("u1", user="alice"))).status_code == 202
        assert (await post(client, batch("u2", user="alice"))).status_code == 202
        assert (await post(client, batch("u3", user="bob"))).status_code == 202
        await svc.flush()
        h = hash_user_id("alice", TEST_KEY)
        r = await client.delete(f"/qoe/v1/users/{h}")
        assert r.status_code == 200 and r.json()["sessions_erased"] == 2
        assert (await client.get("/qoe/v1/sessions/u1")).status_code == 404
        assert (await client.get("/qoe/v1/sessions/u3")).status_code == 200
        assert (await client.delete("/qoe/v1/users/alice")).status_code == 400

    run(scenario)


def test_admin_routes_need_the_token_when_set(run) -> None:
    async def scenario(server, client, svc, media) -> None:
        assert (await client.get("/qoe/v1/report")).status_code == 401
        assert (await client.get("/qoe/v1/sessions/x")).status_code == 401
        assert (await client.delete("/qoe/v1/users/" + "0" * 64)).status_code == 401
        ok = await client.get("/qoe/v1/report", headers={"authorization": "Bearer s3cret"})
        assert ok.status_code == 200
        # The collector itself is public.
        assert (await post(client, batch())).status_code == 202
        assert (await client.get("/dashboard")).status_code == 200

    run(scenario, admin_token="s3cret")


def test_query_parsers() -> None:
    assert parse_since("90s") == 90 and parse_since("1h") == 3600 and parse_since("7d") == 7 * 86400
    for bad in ("", "1w", "-1h", "0s", "500d"):
        with pytest.raises(BadQuery):
            parse_since(bad)
    assert parse_group_by("cdn,protocol") == ("cdn", "protocol")
    with pytest.raises(BadQuery):
        parse_group_by("cdn,session_id")


BANNER_HASH = "ab" * 32
GRANT = {"session_id": "c1", "action": "grant", "banner_version": "2026-11", "banner_hash": BANNER_HASH,
         "language": "pt-BR", "purposes": ["qoe_analytics"], "user_id": "alice"}


def test_consent_proof_recorded_shown_and_kept_after_erasure(run) -> None:
    """Each decision is stored with the banner facts; withdrawal is recorded beside the
    grant; erasing the user (Art. 18 VI) removes their viewing data but keeps the proof
    (Art. 8 par. 2, Art. 16 I)."""

    async def scenario(server, client, svc, media) -> None:
        r = await client.post("/qoe/v1/consent", json=GRANT)
        assert r.status_code == 201 and r.json()["recorded"] == "granted", r.text
        assert (await post(client, batch("c1", user="alice"))).status_code == 202
        r = await client.post("/qoe/v1/consent", json={**GRANT, "session_id": "", "action": "decline", "user_id": 5})
        assert r.status_code == 400 and r.json()["field"] == "user_id"
        decline = {k: v for k, v in GRANT.items() if k != "user_id"}
        r = await client.post("/qoe/v1/consent", json={**decline, "session_id": "", "action": "decline"})
        assert r.status_code == 201, r.text
        await svc.flush()
        doc = (await client.get("/qoe/v1/consent/c1")).json()
        (g,) = doc["decisions"]
        h = hash_user_id("alice", TEST_KEY)
        assert (g["choice"], g["banner_version"], g["banner_hash"], g["language"], g["purposes"], g["user_id"]) == (
            "granted", "2026-11", BANNER_HASH, "pt-BR", ["qoe_analytics"], h)
        assert abs(g["ts"] - time.time()) < 30
        # Erasure of the user: sessions and events go, the proof stays.
        r = await client.delete(f"/qoe/v1/users/{h}")
        assert r.status_code == 200 and r.json()["sessions_erased"] == 1
        assert (await client.get("/qoe/v1/sessions/c1")).status_code == 404
        assert [d["choice"] for d in (await client.get("/qoe/v1/consent/c1")).json()["decisions"]] == ["granted"]
        # Withdrawal as analytics.js sends it (id and action only): recorded with the grant's facts.
        r = await client.post("/qoe/v1/consent", json={"session_id": "c1", "action": "withdraw"})
        assert r.status_code == 200
        decisions = (await client.get("/qoe/v1/consent/c1")).json()["decisions"]
        assert [d["choice"] for d in decisions] == ["granted", "withdrawn"]
        assert decisions[1]["banner_hash"] == BANNER_HASH and decisions[1]["user_id"] == h
        assert (await client.get("/qoe/v1/consent/nobody")).status_code == 404

    run(scenario)


@pytest.mark.parametrize(
    "change, field",
    [
        ({"banner_hash": "xyz"}, "banner_hash"),
        ({"banner_version": ""}, "banner_version"),
        ({"language": "fr"}, "language"),
        ({"purposes": ["marketing"]}, "purposes"),
        ({"purposes": []}, "purposes"),
        ({"session_id": ""}, "session_id"),
        ({"extra": 1}, "extra"),
    ],
)
def test_consent_proof_bad_input(run, change: dict, field: str) -> None:
    async def scenario(server, client, svc, media) -> None:
        r = await client.post("/qoe/v1/consent", json={**GRANT, **change})
        assert r.status_code == 400 and r.json()["field"] == field, r.text
        assert (await client.get("/qoe/v1/consent/c1")).status_code == 404  # nothing stored

    run(scenario)
