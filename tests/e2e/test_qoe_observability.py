"""Observability of a running `flowcast up` (one-rung ladder): OpenTelemetry spans over
OTLP/HTTP to a real receiver written here, the publication-hold chaos endpoint, and the
cost figures in /metrics.

The receiver is an HTTP server on loopback that decodes each POST /v1/traces body as an
OTLP ExportTraceServiceRequest (opentelemetry-proto), as a collector would.
"""

from __future__ import annotations

import asyncio
import gzip
import os
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from flowcast.origin.chaos import ChaosControl, ChaosError, parse_seconds
from flowcast.origin.store import MediaStore
from flowcast.origin.tracing import TracingError, resolve_endpoint

from .livestack import LiveProcess

pytestmark = [pytest.mark.slow]

TOKEN = "chaos-test-token-0123456789abcdef"
AUTH = {"authorization": f"Bearer {TOKEN}"}
CONFIG = """
ladder:
  rungs: [{name: 240p, width: 426, height: 240, video_bitrate_kbps: 300, profile: baseline, level: "3.0"}]
telemetry:
  cost_interval_s: 2
"""


class Receiver:
    """OTLP/HTTP traces receiver: keeps every span with its resource attributes."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        self.requests = 0
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["content-length"]))
                if self.headers.get("content-encoding") == "gzip":
                    body = gzip.decompress(body)
                ok = self.path == "/v1/traces" and self.headers.get("content-type") == "application/x-protobuf"
                if ok:
                    req = ExportTraceServiceRequest()
                    req.ParseFromString(body)
                    outer.add(req)
                self.send_response(200 if ok else 404)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *a: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def add(self, req: ExportTraceServiceRequest) -> None:
        with self.lock:
            self.requests += 1
            for rs in req.resource_spans:
                res = {kv.key: _value(kv.value) for kv in rs.resource.attributes}
                for ss in rs.scope_spans:
                    for s in ss.spans:
                        self.spans.append({
                            "name": s.name, "trace_id": s.trace_id.hex(), "parent": s.parent_span_id.hex(),
                            "kind": s.kind, "resource": res,
                            "attrs": {kv.key: _value(kv.value) for kv in s.attributes},
                        })

    def wait(self, pred, timeout: float = 15.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                found = [s for s in self.spans if pred(s)]
            if found:
                return found
            time.sleep(0.2)
        raise AssertionError(f"no such span within {timeout} s; got {[s['name'] for s in self.spans][:40]}")


def _value(v: Any) -> Any:
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind else None


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.server.shutdown()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, receiver: Receiver) -> Iterator[LiveProcess]:
    tmp = tmp_path_factory.mktemp("obs")
    cfg = tmp / "flowcast.yaml"
    cfg.write_text(CONFIG)
    with pytest.MonkeyPatch.context() as mp:
        # The standard variable, as an operator would set it; and the admin token.
        mp.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url)
        mp.setenv("FLOWCAST_TELEMETRY_ADMIN_TOKEN", TOKEN)
        proc = LiveProcess(tmp, "--config", str(cfg))
    try:
        proc.wait_ready(timeout=30)
        yield proc
    finally:
        proc.stop()


def _sid_query(sid: str) -> dict[str, str]:
    return {"CMCD": f'ot=v,sid="{sid}"'}


def test_spans_per_request_with_session_and_traceparent(live: LiveProcess, receiver: Receiver) -> None:
    trace_id = "4bf92f3577b34da6a1ce929a0e7b1a01"
    parent = "00f067aa0ba902b7"
    with httpx.Client(timeout=20) as c:
        pl = c.get(live.url("/live/live/240p/index.m3u8"), params=_sid_query("otel-sess-1"),
                   headers={"traceparent": f"00-{trace_id}-{parent}-01"})
        assert pl.status_code == 200
        # A blocking reload for the next part: held until it is published.
        lines = pl.text.splitlines()
        last = [ln for ln in lines if ln.startswith("#EXT-X-PART:")][-1]
        uri = last.split('URI="')[1].split('"')[0]  # <msn>.<part>.m4s
        msn, part = (int(x) for x in uri.split(".")[:2])
        held = c.get(live.url("/live/live/240p/index.m3u8"),
                     params={"_HLS_msn": msn, "_HLS_part": part + 1, **_sid_query("otel-sess-1")})
        assert held.status_code == 200
        seg = c.get(live.url(f"/live/live/240p/{uri}"), params=_sid_query("otel-sess-1"))
        assert seg.status_code == 200
        assert c.get(live.url("/live/live/240p/nope.txt")).status_code == 404

    spans = receiver.wait(lambda s: s["attrs"].get("session.id") == "otel-sess-1" and s["attrs"].get("flowcast.resource") == "part")
    part_span = spans[0]
    assert part_span["name"] == "GET part" and part_span["kind"] == 2  # SPAN_KIND_SERVER
    assert part_span["attrs"]["http.response.status_code"] == 200
    assert part_span["attrs"]["flowcast.response_bytes"] == len(seg.content) > 0
    assert part_span["resource"]["service.name"] == "flowcast"
    # The request with a traceparent is a child of the caller's span, in the caller's trace.
    (first,) = receiver.wait(lambda s: s["trace_id"] == trace_id)
    assert first["parent"] == parent and first["attrs"]["flowcast.resource"] == "playlist"
    assert first["attrs"]["session.id"] == "otel-sess-1" and first["attrs"]["flowcast.blocking_reload"] is False
    # The blocking reload: held, with its wait.
    blocking = receiver.wait(lambda s: s["attrs"].get("flowcast.blocking_reload") is True
                             and s["attrs"].get("session.id") == "otel-sess-1")
    assert blocking[0]["attrs"]["flowcast.held"] is True and blocking[0]["attrs"]["flowcast.wait_ms"] > 0
    missing = receiver.wait(lambda s: s["attrs"].get("url.path") == "/live/live/240p/nope.txt")
    assert missing[0]["attrs"]["http.response.status_code"] == 404 and "session.id" not in missing[0]["attrs"]
    # Pipeline spans: parts published and the encoder's (first) run.
    pub = receiver.wait(lambda s: s["name"] == "part.publish" and s["attrs"]["flowcast.rendition"] == "240p")
    assert all(p["attrs"]["flowcast.publish_lag_ms"] >= 0 for p in pub)
    receiver.wait(lambda s: s["name"] == "encoder.run" and s["attrs"]["flowcast.encoder.run"] == 1)


def test_encoder_restart_span(live: LiveProcess, receiver: Receiver) -> None:
    pids = live.encoder_pids()
    assert pids, live.log()
    os.kill(pids[0], 9)
    span = receiver.wait(lambda s: s["name"] == "encoder.restart", timeout=20)[0]
    assert span["attrs"]["flowcast.encoder.run"] >= 2 and span["attrs"]["flowcast.encoder.restarts"] >= 1
    live.wait_ready(timeout=30)


def test_chaos_hold_refused_without_token_and_bad_seconds(live: LiveProcess) -> None:
    url = live.url("/admin/chaos/hold-publication")
    r = httpx.post(url, params={"seconds": "3"}, timeout=10)
    assert r.status_code == 403 and r.json()["field"] == "authorization"
    r = httpx.post(url, params={"seconds": "3"}, headers={"authorization": "Bearer wrong"}, timeout=10)
    assert r.status_code == 403
    for bad in ("0", "-1", "61", "nan", "x", ""):
        r = httpx.post(url, params={"seconds": bad}, headers=AUTH, timeout=10)
        assert r.status_code == 400 and r.json()["field"] == "seconds", (bad, r.text)
    assert httpx.get(url, headers=AUTH, timeout=10).status_code == 405
    assert httpx.post(live.url("/admin/chaos/other"), headers=AUTH, timeout=10).status_code == 404


def test_chaos_hold_stops_publication_then_releases_all(live: LiveProcess) -> None:
    """During a 3 s hold the playlist does not move and a blocking reload for the next part
    waits; at the release it is answered at once, with every part made meanwhile."""
    live.wait_ready(timeout=30)
    with httpx.Client(timeout=20) as c:
        def position() -> tuple[int, int]:
            text = c.get(live.url("/live/live/240p/index.m3u8")).text
            uri = [ln for ln in text.splitlines() if ln.startswith("#EXT-X-PART:")][-1].split('URI="')[1]
            msn, part = uri.split(".")[:2]
            return int(msn), int(part)

        msn, part = position()
        t0 = time.monotonic()
        r = c.post(live.url("/admin/chaos/hold-publication"), params={"seconds": "3"}, headers=AUTH)
        assert r.status_code == 200 and r.json()["held_s"] == 3.0
        frozen = position()
        time.sleep(1.5)
        assert position() == frozen  # nothing published while held
        r = c.get(live.url("/live/live/240p/index.m3u8"), params={"_HLS_msn": frozen[0], "_HLS_part": frozen[1] + 1})
        released = time.monotonic() - t0
        assert r.status_code == 200
        assert 2.8 <= released <= 4.5, released  # answered at the release, not before
        after = position()
        # Everything made during the hold came out at once: ~6 parts of 0.5 s.
        gained = (after[0] - frozen[0]) * 4 + after[1] - frozen[1]  # 2 s segments / 0.5 s parts
        assert gained >= 4, (frozen, after)
    assert "chaos: publication held for 3.000 s" in live.log()


def test_cost_figures_in_metrics(live: LiveProcess) -> None:
    deadline = time.monotonic() + 20
    text = ""
    while time.monotonic() < deadline:
        text = httpx.get(live.url("/metrics"), timeout=10).text
        if "flowcast_cost_per_transcode_hour_usd" in text and "flowcast_cost_egress_gb" in text:
            break
        time.sleep(1)
    lines = {ln.split(" ")[0]: float(ln.split(" ")[1]) for ln in text.splitlines() if ln.startswith("flowcast_cost_")}
    # Egress was served above (playlists and parts); the encoder ran the whole period.
    assert lines["flowcast_cost_per_transcode_hour_usd"] > 0, lines
    assert "flowcast_cost_anomaly" in lines and lines["flowcast_cost_anomaly"] == 0


# -- the store's hold, without a server --------------------------------------------------------


def test_store_hold_defers_in_order_and_extends_hint_bounds() -> None:
    async def main() -> None:
        s = MediaStore()
        s.put_playlist("a/r/index.m3u8", full=b"#1", delta=None, msn=0, part=0, target_duration=2.0,
                       part_target=0.5, ended=False)
        s.expect("a/r/0.1.m4s", "part")
        until = s.hold_publication(0.3)
        assert s.publication_held
        s.put("a/r/0.1.m4s", b"p1", "part")
        s.remove("a/r/0.1.m4s")  # a hint withdrawn because the part looked absent: dropped
        s.expect("a/r/0.2.m4s", "part")  # (the next hint, which marks that withdrawal)
        s.put("a/r/old.m4s", b"o", "segment")
        s.remove("a/r/old.m4s")  # a removal not followed by a hint is applied
        s.begin("a/r/0.m4s")
        s.append("a/r/0.m4s", b"c1")
        s.put_playlist("a/r/index.m3u8", full=b"#2", delta=None, msn=0, part=1, target_duration=2.0,
                       part_target=0.5, ended=False)
        assert s.get("a/r/0.1.m4s") is None and s.playlist("a/r/index.m3u8").full == b"#1"
        # The hinted part's request waits for the release (its 1.5 s bound moved by the hold).
        loop = asyncio.get_running_loop()
        t = loop.time()
        obj = await s.wait_object("a/r/0.1.m4s")
        assert obj.data == b"p1" and loop.time() >= until - 0.01 and loop.time() - t < 1.0
        assert not s.publication_held
        assert s.playlist("a/r/index.m3u8").full == b"#2"
        assert s.get("a/r/old.m4s") is None
        grow = s.get("a/r/0.m4s")
        assert grow.chunks == [b"c1"]
        pl = await s.wait_playlist("a/r/index.m3u8", 0, 1, 1.0)
        assert pl.part == 1

    asyncio.run(main())


def test_chaos_control_sans_http() -> None:
    async def main() -> None:
        c = ChaosControl(MediaStore(), None)
        assert c.apply("POST", "hold-publication", "seconds=1", "Bearer x")[0] == 403  # no token configured
        c = ChaosControl(MediaStore(), "t")
        status, doc = c.apply("POST", "hold-publication", "seconds=0.5", "Bearer t")
        assert status == 200 and c.store.publication_held
        assert c.apply("POST", "release-publication", "", "Bearer t") == (200, {"released": 0})
        assert not c.store.publication_held

    asyncio.run(main())
    with pytest.raises(ChaosError) as e:
        parse_seconds("seconds=inf")
    assert e.value.status == 400 and e.value.field == "seconds"
    assert parse_seconds("seconds=2.5") == 2.5


def test_tracing_endpoint_resolution() -> None:
    assert resolve_endpoint(None, {}) is None  # tracing off: the app gets no hook
    assert resolve_endpoint(None, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}) == "http://c:4318/v1/traces"
    # Config wins over the environment; a full traces URL is kept as is.
    assert resolve_endpoint("https://o.example/v1/traces", {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}) == (
        "https://o.example/v1/traces")
    with pytest.raises(TracingError, match=r"^telemetry.otlp_endpoint:"):
        resolve_endpoint("c:4318", {})
    with pytest.raises(TracingError, match=r"^\$OTEL_EXPORTER_OTLP_ENDPOINT:"):
        resolve_endpoint(None, {"OTEL_EXPORTER_OTLP_ENDPOINT": "grpc://c:4317"})


def test_chaos_holds_every_store_together() -> None:
    async def main() -> None:
        a, b = MediaStore(), MediaStore()
        c = ChaosControl(a, "t", b)
        assert c.apply("POST", "hold-publication", "seconds=5", "Bearer t")[0] == 200
        assert a.publication_held and b.publication_held
        a.put("s/r/x.m4s", b"1", "part")
        b.put("s/r/x.m4s", b"2", "part")
        assert a.get("s/r/x.m4s") is None and b.get("s/r/x.m4s") is None
        assert c.apply("POST", "release-publication", "", "Bearer t") == (200, {"released": 2})
        assert a.get("s/r/x.m4s").data == b"1" and b.get("s/r/x.m4s").data == b"2"

    asyncio.run(main())
