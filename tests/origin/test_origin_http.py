"""The origin over real HTTP: granian on 127.0.0.1, publishing from the test's loop."""

from __future__ import annotations

import asyncio
import gzip
import re
import time

from flowcast.origin.store import ResourceKind
from origin_http import publish, raw_get, raw_open, read_chunk, read_head

PL = "s1/v/index.m3u8"
URL = "/live/" + PL


def test_blocking_reload_held_and_released_by_the_satisfying_publish(run_origin):
    async def scenario(o):
        publish(o.store, PL, 10, 2)
        req = asyncio.ensure_future(o.client.get(URL, params={"_HLS_msn": 10, "_HLS_part": 3}))
        await o.until(lambda: o.waiting("playlist") == 1)
        publish(o.store, PL, 10, 2)  # same position again: not satisfied, stays held
        await asyncio.sleep(0.05)
        assert not req.done()
        released_at = time.perf_counter()
        publish(o.store, PL, 10, 3)
        r = await req
        woken_ms = (time.perf_counter() - released_at) * 1000
        assert r.status_code == 200
        assert b"msn=10 part=3" in r.content  # the whole, newest playlist
        assert woken_ms < 50, woken_ms  # typically 1-3 ms on loopback
        assert r.headers["cache-control"] == "public, max-age=6"  # 6 x TD (TD = 1 s)
        assert r.headers["content-type"] == "application/vnd.apple.mpegurl"
        # already satisfied: answered at once, still a blocking response for caching
        r = await o.client.get(URL, params={"_HLS_msn": 9})
        assert r.status_code == 200 and r.headers["cache-control"] == "public, max-age=6"

    run_origin(scenario)


def test_part_index_past_end_means_part_zero_of_next_segment(run_origin):
    async def scenario(o):
        publish(o.store, PL, 10, 3)  # segment 10 finished with parts 0..3
        req = asyncio.ensure_future(o.client.get(URL, params={"_HLS_msn": 10, "_HLS_part": 4}))
        await o.until(lambda: o.waiting("playlist") == 1)
        await asyncio.sleep(0.05)
        assert not req.done()
        publish(o.store, PL, 11, 0)
        r = await req
        assert r.status_code == 200 and b"msn=11 part=0" in r.content
        # segment 10 is complete now that 11 has begun: msn-only 10 is answered at once
        t0 = time.perf_counter()
        r = await o.client.get(URL, params={"_HLS_msn": 10})
        assert r.status_code == 200 and time.perf_counter() - t0 < 0.5

    run_origin(scenario)


def test_bad_directives_answer_400_at_once(run_origin):
    async def scenario(o):
        publish(o.store, PL, 10, 1, pt=0.25)  # Advance Part Limit = 3 / 0.25 = 12 parts
        cases = [
            {"_HLS_msn": 13},  # more than last + 2
            {"_HLS_part": 1},  # part without msn: MUST 400
            {"_HLS_msn": 10, "_HLS_part": 14},  # 13 parts ahead > 12
            {"_HLS_msn": 12, "_HLS_part": 11},  # at least 13 ahead
            {"_HLS_msn": "ten"},
            {"_HLS_msn": 10, "_HLS_skip": "NO"},
        ]
        for params in cases:
            t0 = time.perf_counter()
            r = await o.client.get(URL, params=params)
            assert r.status_code == 400, params
            assert time.perf_counter() - t0 < 0.5
            assert r.headers["cache-control"] == "public, max-age=4"
        # within the limits: held, not rejected
        publish(o.store, PL, 10, 1, pt=1.0)  # limit 3 parts
        ok = asyncio.ensure_future(o.client.get(URL, params={"_HLS_msn": 10, "_HLS_part": 4}))
        await o.until(lambda: o.waiting("playlist") == 1)
        r = await o.client.get(URL, params={"_HLS_msn": 10, "_HLS_part": 5})
        assert r.status_code == 400
        publish(o.store, PL, 10, 4, pt=1.0)
        assert (await ok).status_code == 200

    run_origin(scenario)


def test_503_after_three_target_durations(run_origin):
    async def scenario(o):
        publish(o.store, PL, 3, 0, td=0.1, pt=0.05)
        t0 = time.perf_counter()
        r = await o.client.get(URL, params={"_HLS_msn": 4})
        waited = time.perf_counter() - t0
        assert r.status_code == 503
        assert 0.28 <= waited < 1.0, waited
        assert r.headers["cache-control"] == "public, max-age=4"
        assert o.waiting() == 0

    run_origin(scenario)


def test_skip_serves_the_delta_rendering(run_origin):
    async def scenario(o):
        publish(o.store, PL, 20, 1)
        r = await o.client.get(URL, params={"_HLS_msn": 20, "_HLS_part": 1, "_HLS_skip": "YES"})
        assert b"DELTA" in r.content
        r = await o.client.get(URL, params={"_HLS_skip": "v2"})
        assert b"DELTA" in r.content
        r = await o.client.get(URL)
        assert b"FULL" in r.content
        publish(o.store, "s1/a/index.m3u8", 20, 1, with_delta=False)  # no CAN-SKIP-UNTIL
        r = await o.client.get("/live/s1/a/index.m3u8", params={"_HLS_skip": "YES"})
        assert b"FULL" in r.content

    run_origin(scenario)


def test_endlist_ignores_directives(run_origin):
    async def scenario(o):
        publish(o.store, PL, 30, 2, ended=True)
        for params in ({"_HLS_msn": 99}, {"_HLS_msn": 31, "_HLS_part": 0}, {"_HLS_skip": "YES"}):
            t0 = time.perf_counter()
            r = await o.client.get(URL, params=params)
            assert r.status_code == 200 and b"FULL" in r.content and b"ENDLIST" in r.content
            assert time.perf_counter() - t0 < 0.5
        # a waiter held before the end is released by the ENDLIST publish
        publish(o.store, "s1/b/index.m3u8", 5, 0)
        req = asyncio.ensure_future(o.client.get("/live/s1/b/index.m3u8", params={"_HLS_msn": 6}))
        await o.until(lambda: o.waiting("playlist") == 1)
        publish(o.store, "s1/b/index.m3u8", 5, 1, ended=True)
        r = await req
        assert r.status_code == 200 and b"ENDLIST" in r.content

    run_origin(scenario)


def test_preload_hinted_part_held_then_served(run_origin):
    async def scenario(o):
        publish(o.store, PL, 7, 1, td=2.0)
        hinted = "s1/v/part7.2.m4s"
        o.store.expect(hinted, ResourceKind.PART, hold=1.0)
        req = asyncio.ensure_future(o.client.get("/live/" + hinted))
        await o.until(lambda: o.waiting("part") == 1)
        o.store.put(hinted, b"moof+mdat 7.2", ResourceKind.PART)
        r = await req
        assert r.status_code == 200 and r.content == b"moof+mdat 7.2"
        assert r.headers["cache-control"] == "public, max-age=12"  # held: 6 x TD
        assert r.headers["content-length"] == str(len(b"moof+mdat 7.2"))
        # hint that never materialises: 404 once its bound passes, briefly cached
        o.store.expect("s1/v/part7.3.m4s", ResourceKind.PART, hold=0.1)
        t0 = time.perf_counter()
        r = await o.client.get("/live/s1/v/part7.3.m4s")
        assert r.status_code == 404 and 0.08 < time.perf_counter() - t0 < 1.0
        assert r.headers["cache-control"] == "public, max-age=1"
        # not announced, but a media name in a live rendition: held up to 3 part targets
        # (PART-TARGET 0.25 s here), then 404
        t0 = time.perf_counter()
        assert (await o.client.get("/live/s1/v/part9.0.m4s")).status_code == 404
        assert 0.7 < time.perf_counter() - t0 < 1.5
        # not a media name, or no live playlist beside it: 404 at once
        for path in ("/live/s1/v/notes.txt", "/live/s1/x/part9.0.m4s"):
            t0 = time.perf_counter()
            assert (await o.client.get(path)).status_code == 404
            assert time.perf_counter() - t0 < 0.5

    run_origin(scenario)


def test_hinted_part_held_without_announcement(run_origin):
    """The pipeline publishes the playlist with a PRELOAD-HINT but calls no expect()."""

    async def scenario(o):
        publish(o.store, PL, 7, 1, td=2.0, pt=0.5)
        req = asyncio.ensure_future(o.client.get("/live/s1/v/7.2.m4s"))
        await o.until(lambda: o.waiting("part") == 1)
        await asyncio.sleep(0.05)
        o.store.put("s1/v/7.2.m4s", b"part 7.2", "part")
        r = await req
        assert r.status_code == 200 and r.content == b"part 7.2"
        assert r.headers["cache-control"] == "public, max-age=12"

    run_origin(scenario)


def test_growing_segment_streamed_with_chunked_encoding(run_origin):
    async def scenario(o):
        seg = "s1/v/seg42.m4s"
        o.store.begin(seg)
        o.store.append(seg, b"styp+moof+mdat#0")
        reader, writer = await raw_open(o.port, "/live/" + seg)
        status, headers = await read_head(reader)
        assert status == 200
        assert headers["transfer-encoding"] == "chunked" and "content-length" not in headers
        assert headers["content-type"] == "video/iso.segment"
        first = await asyncio.wait_for(read_chunk(reader), 2)
        assert first == b"styp+moof+mdat#0"  # before the segment is finished
        nxt = asyncio.ensure_future(read_chunk(reader))
        await asyncio.sleep(0.05)
        assert not nxt.done()
        o.store.append(seg, b"moof+mdat#1")
        assert await asyncio.wait_for(nxt, 2) == b"moof+mdat#1"
        o.store.append(seg, b"moof+mdat#2")
        o.store.finish(seg)
        rest = b""
        while chunk := await asyncio.wait_for(read_chunk(reader), 2):
            rest += chunk
        assert rest == b"moof+mdat#2"
        writer.close()
        # once finished it is a plain object with a Content-Length
        r = await o.client.get("/live/" + seg)
        assert r.content == b"styp+moof+mdat#0moof+mdat#1moof+mdat#2"
        assert r.headers["content-length"] == str(len(r.content))

    run_origin(scenario)


def test_early_dash_segment_held_until_it_begins(run_origin):
    async def scenario(o):
        seg = "s1/d/seg43.m4s"
        o.store.expect(seg, ResourceKind.SEGMENT, hold=1.0)
        req = asyncio.ensure_future(raw_get(o.port, "/live/" + seg))
        await o.until(lambda: o.waiting("segment") == 1)
        o.store.begin(seg)
        o.store.append(seg, b"chunk-a")
        await asyncio.sleep(0.01)
        o.store.append(seg, b"chunk-b")
        o.store.finish(seg)
        status, headers, body = await req
        assert status == 200 and body == b"chunk-achunk-b"

    run_origin(scenario)


def test_cache_and_content_types_per_resource(run_origin):
    async def scenario(o):
        publish(o.store, PL, 1, 0, td=4.0)
        o.store.put("s1/v/init.mp4", b"ftyp+moov", ResourceKind.INIT)
        o.store.put("s1/v/seg1.m4s", b"seg", ResourceKind.SEGMENT)
        o.store.put("s1/v/part1.0.m4s", b"part", ResourceKind.PART)
        o.store.put_manifest("s1/master.m3u8", b"#EXTM3U\n")
        o.store.put_manifest("s1/manifest.mpd", b"<MPD/>")
        expect = {
            URL: ("application/vnd.apple.mpegurl", "public, max-age=2"),  # 1/2 TD
            "/live/s1/v/init.mp4": ("video/mp4", "public, max-age=86400"),
            "/live/s1/v/seg1.m4s": ("video/iso.segment", "public, max-age=86400"),
            "/live/s1/v/part1.0.m4s": ("video/iso.segment", "public, max-age=86400"),
            "/live/s1/master.m3u8": ("application/vnd.apple.mpegurl", "public, max-age=2"),
            "/live/s1/manifest.mpd": ("application/dash+xml", "public, max-age=2"),
            "/live/s1/v/nothing.m4s": ("text/plain; charset=utf-8", "public, max-age=1"),
            "/time": ("text/plain; charset=utf-8", "no-cache, no-store, must-revalidate"),
        }
        for path, (ctype, cc) in expect.items():
            r = await o.client.get(path)
            assert r.headers["content-type"] == ctype, path
            assert r.headers["cache-control"] == cc, path
            assert r.headers["access-control-allow-origin"] == "*", path
        r = await o.client.get(URL)
        assert "etag" in r.headers and "last-modified" in r.headers
        again = await o.client.get(URL, headers={"if-none-match": r.headers["etag"]})
        assert again.status_code == 304

    run_origin(scenario)


def test_gzip_pre_compressed_when_accepted(run_origin):
    async def scenario(o):
        publish(o.store, PL, 1, 0)
        o.store.put_manifest("s1/manifest.mpd", b"<MPD>" + b"<Period/>" * 100 + b"</MPD>")
        for path in (URL, "/live/s1/manifest.mpd", "/player.js"):
            status, headers, body = await raw_get(o.port, path, headers="Accept-Encoding: gzip, br\r\n")
            assert status == 200 and headers["content-encoding"] == "gzip", path
            assert headers["vary"] == "Accept-Encoding"
            plain = gzip.decompress(body)
            status, headers2, body2 = await raw_get(o.port, path)
            assert "content-encoding" not in headers2 and body2 == plain
            assert headers2["vary"] == "Accept-Encoding"
            _, h3, _ = await raw_get(o.port, path, headers="Accept-Encoding: gzip;q=0, identity\r\n")
            assert "content-encoding" not in h3
        assert o.store.playlist(PL).full_gzip is o.store.playlist(PL).full_gzip  # bytes held, not redone

    run_origin(scenario)


def test_cors_preflight_and_headers(run_origin):
    async def scenario(o):
        r = await o.client.options(
            URL,
            headers={
                "origin": "https://player.example",
                "access-control-request-method": "GET",
                "access-control-request-headers": "cmcd-request, range",
            },
        )
        assert r.status_code == 204
        assert r.headers["access-control-allow-origin"] == "*"
        assert "GET" in r.headers["access-control-allow-methods"]
        assert r.headers["access-control-allow-headers"] == "cmcd-request, range"
        publish(o.store, PL, 1, 0)
        r = await o.client.get(URL, headers={"origin": "https://player.example"})
        assert r.headers["access-control-allow-origin"] == "*"
        assert "ETag" in r.headers["access-control-expose-headers"]

    run_origin(scenario)


def test_traversal_and_unknown_paths_are_404(run_origin):
    async def scenario(o):
        assert (await o.client.get("/vendor/hls.js/hls.min.js")).status_code == 200
        attempts = [
            "/vendor/hls.js/../../../secret.txt",
            "/vendor/hls.js/%2e%2e/%2e%2e/%2e%2e/secret.txt",
            "/vendor/hls.js/%2E%2E/%2E%2E/%2E%2E/secret.txt",
            "/vendor/hls.js/%252e%252e/%252e%252e/%252e%252e/secret.txt",
            "/vendor/hls.js//etc/passwd",
            "/vendor/hls.js/..%2f..%2f..%2fsecret.txt",
            "/vendor/hls.js/hls.min.js%00.txt",
            "/vendor/hls.js/..\\..\\..\\secret.txt",
            "/vendor/nolib/x.js",
            "/player/../secret.txt",
            "/player/%2e%2e/secret.txt",
            "/../secret.txt",
            "//etc/passwd",
            "/live/../secret.txt",
            "/live/nostream/v/index.m3u8",
            "/live/s1",
            "/nothing-here.html",
        ]
        for target in attempts:
            status, _, body = await raw_get(o.port, target)
            assert status == 404, target
            assert b"do not serve me" not in body

    run_origin(scenario)


def test_static_player_kit_time_metrics_and_methods(run_origin):
    async def scenario(o):
        r = await o.client.get("/")
        assert r.status_code == 200 and b"flowcast player" in r.content
        assert r.headers["content-type"].startswith("text/html")
        r = await o.client.get("/player/player.js")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/javascript")
        r = await o.client.get("/time")
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", r.text), r.text
        publish(o.store, PL, 1, 0)
        await o.client.get(URL)
        r = await o.client.head(URL, headers={"accept-encoding": "identity"})
        assert r.status_code == 200 and r.content == b""
        assert int(r.headers["content-length"]) == len(o.store.playlist(PL).full)
        r = await o.client.head(URL, headers={"accept-encoding": "gzip"})
        assert int(r.headers["content-length"]) == len(o.store.playlist(PL).full_gzip)
        for method in ("POST", "PUT", "DELETE", "PATCH"):
            r = await o.client.request(method, URL)
            assert r.status_code == 405 and "GET" in r.headers["allow"]
        r = await o.client.get("/metrics")
        assert r.status_code == 200
        assert 'flowcast_origin_requests_total{resource="playlist",status="200"}' in r.text
        assert "flowcast_origin_waiting_requests" in r.text
        assert "flowcast_origin_hold_seconds_bucket" in r.text or "flowcast_origin_hold_seconds" in r.text

    run_origin(scenario)


def test_thousand_waiters_woken_by_one_publish(run_origin):
    async def scenario(o):
        publish(o.store, PL, 100, 5, td=2.0)
        n = 1000
        conns = []
        for _ in range(n):
            conns.append(await raw_open(o.port, URL + "?_HLS_msn=100&_HLS_part=6"))
        await o.until(lambda: o.waiting("playlist") == n, timeout=20)
        t0 = time.perf_counter()
        publish(o.store, PL, 100, 6, td=2.0)
        heads = await asyncio.gather(*(asyncio.wait_for(read_head(r), 10) for r, _ in conns))
        elapsed = time.perf_counter() - t0
        assert all(status == 200 for status, _ in heads)
        assert elapsed < 3.0, elapsed
        for _, w in conns:
            w.close()
        assert o.waiting() == 0

    run_origin(scenario)


def test_disconnecting_waiter_does_not_affect_others(run_origin):
    async def scenario(o):
        publish(o.store, PL, 50, 0)
        keep = [asyncio.ensure_future(o.client.get(URL, params={"_HLS_msn": 50, "_HLS_part": 1})) for _ in range(5)]
        leavers = [await raw_open(o.port, URL + "?_HLS_msn=50&_HLS_part=1") for _ in range(5)]
        await o.until(lambda: o.waiting("playlist") == 10)
        for _, w in leavers:
            w.close()
        # Blocking reloads are not watched for disconnects (a watcher per held request
        # was half the CPU of a fan-out): a leaver is answered into its closed connection
        # at the next part, alongside the others, with no error and no effect on them.
        publish(o.store, PL, 50, 1)
        results = await asyncio.gather(*keep)
        assert all(r.status_code == 200 and b"part=1" in r.content for r in results)
        await o.until(lambda: o.waiting("playlist") == 0)
        # a leaver on a hinted part and on a growing segment, too
        o.store.expect("s1/v/p.m4s", ResourceKind.PART)
        _, w = await raw_open(o.port, "/live/s1/v/p.m4s")
        o.store.begin("s1/v/g.m4s")
        o.store.append("s1/v/g.m4s", b"x")
        r2, w2 = await raw_open(o.port, "/live/s1/v/g.m4s")
        await read_head(r2)
        await o.until(lambda: o.waiting() == 2)
        w.close()
        w2.close()
        await o.until(lambda: o.waiting() == 0)
        o.store.append("s1/v/g.m4s", b"y")
        o.store.finish("s1/v/g.m4s")
        assert (await o.client.get("/live/s1/v/g.m4s")).content == b"xy"
        assert (await o.client.get(URL)).status_code == 200

    run_origin(scenario)


def test_slow_reader_does_not_delay_others(run_origin):
    async def scenario(o):
        big = b"\0" * (32 * 1024 * 1024)
        o.store.put("s1/v/big.m4s", big, ResourceKind.SEGMENT)
        publish(o.store, PL, 1, 0)
        # a client that asks for 32 MB and never reads
        _, stalled = await raw_open(o.port, "/live/s1/v/big.m4s")
        await asyncio.sleep(0.1)
        t0 = time.perf_counter()
        for _ in range(20):
            r = await o.client.get(URL)
            assert r.status_code == 200
        assert time.perf_counter() - t0 < 2.0
        stalled.close()

    run_origin(scenario)


def test_stop_with_requests_held_does_not_hang(tmp_path):
    from flowcast.origin.app import OriginApp
    from flowcast.origin.metrics import OriginMetrics
    from flowcast.origin.server import serve
    from flowcast.origin.store import MediaStore

    async def main():
        store = MediaStore()
        app = OriginApp(store, static_dir=tmp_path, vendor_dirs={}, metrics=OriginMetrics())
        srv = await serve(app, "127.0.0.1", 0)
        publish(store, PL, 1, 0, td=30.0)
        held = [await raw_open(srv.port, URL + "?_HLS_msn=2") for _ in range(3)]
        await asyncio.sleep(0.1)
        t0 = time.perf_counter()
        await srv.stop(timeout=5.0)
        assert time.perf_counter() - t0 < 2.0
        assert srv.task.done()
        for reader, w in held:
            status, _ = await asyncio.wait_for(read_head(reader), 2)
            assert status == 503  # released by the shutdown, not left hanging
            w.close()

    asyncio.run(main())


def test_wake_latency_of_a_blocking_reload(run_origin):
    """Publish-to-response-head latency over loopback, median of 20 (printed with -s)."""

    async def scenario(o):
        publish(o.store, PL, 1, 0)
        samples = []
        for i in range(1, 21):
            reader, writer = await raw_open(o.port, f"{URL}?_HLS_msn=1&_HLS_part={i}")
            await o.until(lambda: o.waiting("playlist") == 1)
            t0 = time.perf_counter()
            publish(o.store, PL, 1, i)
            status, _ = await read_head(reader)
            samples.append((time.perf_counter() - t0) * 1000)
            writer.close()
            assert status == 200
            await o.until(lambda: o.waiting("playlist") == 0)
        samples.sort()
        print(f"blocking reload wake latency: median {samples[10]:.2f} ms, max {samples[-1]:.2f} ms")
        assert samples[10] < 10.0

    run_origin(scenario)


def test_real_npm_vendor_bundles_served(tmp_path):
    """The installed player libraries under /vendor/, from src/flowcast/web/node_modules."""
    from pathlib import Path

    import flowcast.web
    from flowcast.origin.app import OriginApp, npm_vendor_dirs
    from flowcast.origin.metrics import OriginMetrics
    from flowcast.origin.server import running
    from flowcast.origin.store import MediaStore

    web = Path(flowcast.web.__file__).parent
    vendors = npm_vendor_dirs(web / "node_modules")
    if "hls.js" not in vendors:
        import pytest

        pytest.skip("npm packages not installed")

    async def main():
        app = OriginApp(MediaStore(), static_dir=web, vendor_dirs=vendors, metrics=OriginMetrics())
        async with running(app) as srv:
            status, headers, body = await raw_get(srv.port, "/vendor/hls.js/hls.min.js")
            assert status == 200 and headers["content-type"].startswith("text/javascript")
            assert len(body) > 100_000
            status, _, _ = await raw_get(srv.port, "/vendor/hls.js/../package.json")
            assert status == 404

    asyncio.run(main())
