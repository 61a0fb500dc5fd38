"""Sans-I/O parts of the load tester: buffer model, ABR rule, playlist walking, guards, relay."""

from __future__ import annotations

import asyncio
import math
import time

import pytest

from flowcast.loadtest import guard
from flowcast.loadtest.abr import Abr
from flowcast.loadtest.hls_client import live_start, parts_of
from flowcast.loadtest.playback import DashJsCatchUp, HlsJsCatchUp, Playback, Span
from flowcast.loadtest.profiles import PROFILES, Ramp, get_profile
from flowcast.loadtest.relay import Relay, TokenBucket
from flowcast.loadtest.report import quantile, rebuffer_ratio, summarise, verdicts
from flowcast.package.m3u8 import parse_media_playlist

# A media playlist as `flowcast up` serves it (captured), trimmed to three segments.
PLAYLIST = """#EXTM3U
#EXT-X-VERSION:9
#EXT-X-TARGETDURATION:2
#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,CAN-SKIP-UNTIL=12.0,HOLD-BACK=6.0,PART-HOLD-BACK=1.5
#EXT-X-PART-INF:PART-TARGET=0.5
#EXT-X-MEDIA-SEQUENCE:4
#EXT-X-MAP:URI="init.mp4"
#EXT-X-PROGRAM-DATE-TIME:2026-11-25T13:49:55.891Z
#EXT-X-PART:DURATION=0.5,URI="4.0.m4s",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.5,URI="4.1.m4s"
#EXT-X-PART:DURATION=0.5,URI="4.2.m4s"
#EXT-X-PART:DURATION=0.5,URI="4.3.m4s"
#EXTINF:2.0,
4.m4s
#EXT-X-PROGRAM-DATE-TIME:2026-11-25T13:49:57.891Z
#EXT-X-PART:DURATION=0.5,URI="5.0.m4s",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.5,URI="5.1.m4s"
#EXT-X-PART:DURATION=0.5,URI="5.2.m4s"
#EXT-X-PART:DURATION=0.5,URI="5.3.m4s"
#EXTINF:2.0,
5.m4s
#EXT-X-PROGRAM-DATE-TIME:2026-11-25T13:49:59.891Z
#EXT-X-PART:DURATION=0.5,URI="6.0.m4s",INDEPENDENT=YES
#EXT-X-PRELOAD-HINT:TYPE=PART,URI="6.1.m4s"
"""


def test_parts_carry_capture_time_and_start_is_independent() -> None:
    refs = parts_of(parse_media_playlist(PLAYLIST))
    assert [r.key for r in refs][-2:] == [(5, 3), (6, 0)]
    assert refs[5].capture_ts == pytest.approx(refs[0].capture_ts + 2.5)
    i = live_start(refs, 1.5)  # edge is 6.0 end = +6.5 s; 1.5 s back = 5.0 s -> segment 5 part 0
    assert refs[i].key == (5, 0) and refs[i].independent


def test_playback_startup_stall_resume_and_latency() -> None:
    pb = Playback(resume_target_s=0.5, request_ts=100.0, wall_offset=1000.0)
    pb.append(100.2, Span(capture_ts=1098.0, duration_s=2.0, bitrate_kbps=1000))
    pb.start(100.3, keep_s=1.5)  # seek: 0.5 s skipped
    assert pb.startup_time_ms == pytest.approx(300.0)
    assert pb.latency_ms(100.3) == pytest.approx((1100.3 - 1098.5) * 1000)
    pb.advance(102.3)  # 1.5 s played, then 0.5 s dry: one stall since 101.8
    assert pb.rebuffer_count == 1 and pb.play_time_ms == pytest.approx(1500.0)
    pb.append(102.5, Span(1100.0, 0.5, 1000))  # resume_target reached: stall was 0.7 s
    assert pb.playing and pb.rebuffer_ms == pytest.approx(700.0)
    pb.finish(103.5)
    assert pb.play_time_ms == pytest.approx(2000.0) and pb.rebuffer_count == 2
    assert pb.avg_bitrate_kbps == pytest.approx(1000.0)


def test_catch_up_rules_are_the_players_own() -> None:
    hlsjs = HlsJsCatchUp(max_rate=1.25, live_range_s=3.5)
    # hls.js: round(2 / (1 + e^(-0.75 d)) * 20) / 20, kept to [1, maxLiveSyncPlaybackRate]
    assert hlsjs.rate(0.1, 3.0) == pytest.approx(1.05)
    assert hlsjs.rate(0.5, 3.0) == pytest.approx(1.2)
    assert hlsjs.rate(1.3, 3.0) == pytest.approx(1.25)  # 1.45, capped
    assert HlsJsCatchUp(max_rate=2.0).rate(1.3, 3.0) == pytest.approx(1.45)
    assert hlsjs.rate(0.04, 3.0) == 1.0  # within 50 ms of the target
    assert hlsjs.rate(1.3, 0.9) == 1.0  # not with 1 s or less buffered
    assert hlsjs.rate(3.6, 5.0) == 1.0  # beyond a target duration: DVR playback
    assert hlsjs.rate(-1.0, 3.0) == 1.0  # never slower
    dashjs = DashJsCatchUp(max_delta=0.25, min_delta=-0.2)
    # dash.js default mode: 1 - c + 2c / (1 + e^(-5 d))
    assert dashjs.rate(0.1, 1.0) == pytest.approx(0.75 + 0.5 / (1 + math.exp(-0.5)))
    assert dashjs.rate(2.0, 1.0) == pytest.approx(1.25, abs=1e-4)
    assert dashjs.rate(-2.0, 1.0) == pytest.approx(0.8, abs=1e-4)  # early: slower
    assert dashjs.rate(0.0, 1.0) == 1.0


def _late_start(catch_up: HlsJsCatchUp | None) -> tuple[Playback, list[float]]:
    """Started 1.3 s behind a 1.5 s target (a slow first load), then fed a 0.5 s part every
    0.5 s, each arriving 0.2 s after its capture ends, and sampled 4x a second to 30 s."""
    pb = Playback(resume_target_s=0.5, request_ts=0.0, wall_offset=1000.0,
                  catch_up=catch_up, target_latency_s=1.5, edge_age_s=0.2)
    for k in range(8):  # captured at 1000.0 .. 1003.5
        pb.append(4.2, Span(1000.0 + 0.5 * k, 0.5, 1000))
    pb.start(4.2, keep_s=2.8)
    assert pb.latency_ms(4.2) == pytest.approx(3000.0)  # 1.3 s over the target plus the edge's age
    rates = []
    for step in range(1, 104):
        t = 4.2 + 0.25 * step
        if step % 2 == 0:
            pb.append(t, Span(1000.0 + 0.5 * (7 + step // 2), 0.5, 1000))
        pb.advance(t)
        rates.append(pb.rate)
    return pb, rates


def test_playback_behind_its_target_catches_up_without_stalling() -> None:
    pb, rates = _late_start(HlsJsCatchUp(max_rate=1.25, live_range_s=3.5))
    assert max(rates) == pytest.approx(1.25) and rates[-1] == 1.0
    assert pb.rebuffer_count == 0
    # back within hls.js's dead band (0.05 s, then steps of 0.05x) of 1.5 s + the edge's age
    assert 1700.0 <= pb.latency_ms(pb.clock) <= 1800.0
    assert pb.play_time_ms == pytest.approx((pb.clock - 4.2) * 1000.0)  # wall time, not media time
    without, rates = _late_start(None)
    assert set(rates) == {1.0} and without.rebuffer_count == 0
    assert without.latency_ms(without.clock) == pytest.approx(3000.0)  # no catch-up: behind for good


def test_abr_switches_up_and_down() -> None:
    abr = Abr((536_000, 1_196_000, 2_846_000))
    assert abr.choose(0, 0.0) == 0  # default estimate 500 kbps
    for _ in range(5):
        abr.sample(1_000_000, 0.1)  # 80 Mbps
    assert abr.choose(0, 2.0) == 2
    for _ in range(30):
        abr.sample(125_000, 0.5)  # 2 Mbps: 0.7 x 2 = 1.4 Mbps fits 480p, not 720p
    assert abr.choose(2, 2.0) == 1
    for _ in range(30):
        abr.sample(50_000, 0.5)  # 0.8 Mbps
    assert abr.choose(1, 2.0) == 0


def test_report_maths_and_verdicts() -> None:
    assert quantile([5, 1, 4, 2, 3], 0.5) == 3 and quantile([], 0.5) is None
    assert rebuffer_ratio(5.0, 995.0) == pytest.approx(0.005)
    row = dict(session_id="s", protocol="ll-hls", startup_time_ms=100.0, rebuffer_count=0, rebuffer_ms=0.0,
               avg_bitrate_kbps=1000.0, latency_ms=[1500.0, 3500.0], play_time_ms=10_000.0, error_code="",
               recovered_errors=0, requests=1, bytes_received=1, bitrate_switches=0)
    s = summarise([row, row | {"error_code": "network"}])
    v = {x.criterion: x.passed for x in verdicts(s, "ll-hls")}
    assert v == {"startup time p95": True, "rebuffer ratio": True, "ll-hls latency p95": False,
                 "critical player errors": False}
    assert verdicts(s, "hls")[2].passed is None


def test_guards() -> None:
    assert guard.loopback_only("http://localhost:8080/a/b.m3u8?x=1") == guard.Target("127.0.0.1", 8080, "/a/b.m3u8?x=1")
    for bad in ("http://192.168.1.1/x", "http://[::1]:80/x", "ftp://127.0.0.1/x", "http://u:p@127.0.0.1/x"):
        with pytest.raises(guard.LoadTestRefused):
            guard.loopback_only(bad)
    with pytest.raises(guard.LoadTestRefused, match="more than this machine"):
        guard.check_size(guard.MAX_VIEWERS + 1, 10)
    with pytest.raises(guard.LoadTestRefused, match="beyond what the generator"):
        guard.check_bandwidth(1000, 3e6, loopback_bps=2e9, workers=2)
    guard.check_bandwidth(200, 3e6, loopback_bps=2e9, workers=2)
    assert guard.measure_loopback(0.1) > 1e8
    assert set(PROFILES) >= {"loopback", "4g", "3g", "3g-lossy", "wifi-congested"}
    assert Ramp(10, 5).window(0, 10, 60) == (0.0, 60.0)
    with pytest.raises(ValueError):
        get_profile("nope")


def test_token_bucket_and_relay_cap_throughput() -> None:
    b = TokenBucket(8_000_000, burst_bytes=16 * 1024)  # 1 MB/s
    waits = [b.reserve(100_000) for _ in range(3)]
    assert waits[-1] == pytest.approx(0.3 - 16 * 1024 / 1e6, abs=0.02)

    async def run() -> float:
        blob = b"x" * 400_000

        async def serve(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            await r.read(10)
            w.write(blob)
            await w.drain()
            w.close()

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        relay = Relay(get_profile("3g"), server.sockets[0].getsockname()[1], seed=1)
        port = await relay.start()
        t0 = time.monotonic()
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(b"hi")
        got = 0
        while chunk := await r.read(65536):
            got += len(chunk)
        elapsed = time.monotonic() - t0
        w.close()
        await relay.close()
        server.close()
        assert got == len(blob)
        return elapsed

    elapsed = asyncio.run(run())
    # 400 kB at 1.6 Mbps = 2.0 s, plus a 150 ms RTT handshake and one-way delays
    assert 1.8 < elapsed < 3.5


def test_alignment_compares_same_numbers_across_origins() -> None:
    """loadtest.alignment: B minus A per MSN, from PROGRAM-DATE-TIME, EXTINF and part edges."""
    from flowcast.loadtest.alignment import compare, playlist_timings, summarise
    from flowcast.package.m3u8 import parse_media_playlist

    def playlist(first_pdt: str, msn: int) -> str:
        return (
            "#EXTM3U\n#EXT-X-VERSION:9\n#EXT-X-TARGETDURATION:2\n#EXT-X-PART-INF:PART-TARGET=0.5\n"
            f"#EXT-X-MEDIA-SEQUENCE:{msn}\n#EXT-X-MAP:URI=\"init.mp4\"\n"
            f"#EXT-X-PROGRAM-DATE-TIME:{first_pdt}\n"
            + "".join(
                "".join(f'#EXT-X-PART:DURATION=0.5,URI="{n}.{i}.m4s"\n' for i in range(4)) + f"#EXTINF:2.0,\n{n}.m4s\n"
                for n in (msn, msn + 1)
            )
        )

    a = playlist_timings(parse_media_playlist(playlist("2026-12-07T01:30:00.000Z", 10)))
    b = playlist_timings(parse_media_playlist(playlist("2026-12-07T01:30:01.261Z", 11)))  # its 11 starts 0.739 s early
    rows = compare(a, b)
    assert [r.msn for r in rows] == [11]
    assert rows[0].pdt == pytest.approx(-0.739, abs=1e-6) and rows[0].part_edges == pytest.approx(0.739, abs=1e-6)
    assert summarise(rows)["max_abs_pdt"] == pytest.approx(0.739) and summarise(rows)["max_abs_tfdt"] is None
