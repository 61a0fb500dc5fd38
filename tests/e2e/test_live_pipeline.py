"""`flowcast up` on the test source, checked from the outside: spec rules on the live
playlists and MPD, blocking reload, FFmpeg decoding what the origin serves, encoder recovery."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time

import httpx
import pytest

from flowcast.package import conformance
from flowcast.package.m3u8 import parse_media_playlist, parse_multivariant
from flowcast.package.mpd import parse_mpd

from .livestack import LiveProcess

pytestmark = pytest.mark.slow

RENDITIONS = ("720p", "480p", "240p", "audio")


def get(live: LiveProcess, path: str, **kw) -> httpx.Response:
    return httpx.get(live.url(path), timeout=kw.pop("timeout", 10), **kw)


def wait_segments(live: LiveProcess, n: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = get(live, "/live/live/240p/index.m3u8")
        if r.status_code == 200 and len(parse_media_playlist(r.text).segments) >= n:
            return
        time.sleep(0.5)
    raise AssertionError(f"fewer than {n} segments after {timeout} s")


def test_playlists_and_mpd_conform(live: LiveProcess) -> None:
    wait_segments(live, 4)
    master = get(live, "/live/live/master.m3u8")
    assert master.status_code == 200
    assert master.headers["content-type"].startswith("application/vnd.apple.mpegurl")
    medias = {name: get(live, f"/live/live/{name}/index.m3u8").text for name in RENDITIONS}
    for name, text in medias.items():
        others = [f"../{o}/index.m3u8" for o in RENDITIONS if o != name]
        assert conformance.errors(conformance.check_media_playlist(text, expected_reports=others)) == [], name
    by_uri = {f"{name}/index.m3u8": text for name, text in medias.items()}
    assert conformance.errors(conformance.check_multivariant(master.text, by_uri)) == []
    variants = parse_multivariant(master.text).variants
    assert [v.uri for v in variants] == ["720p/index.m3u8", "480p/index.m3u8", "240p/index.m3u8"]
    mpd = get(live, "/live/live/manifest.mpd")
    assert mpd.headers["content-type"].startswith("application/dash+xml")
    assert conformance.errors(conformance.check_mpd(mpd.text, low_latency=True)) == []
    manifest = parse_mpd(mpd.text)
    assert manifest.type == "dynamic"


def test_blocking_reload_follows_parts_live(live: LiveProcess) -> None:
    """Each blocking request for the next part returns it within about one part target."""
    wait_segments(live, 1)
    text = get(live, "/live/live/720p/index.m3u8").text
    previous = text
    pl = parse_media_playlist(text)
    msn, part = pl.last_msn_part
    waits = []
    for _ in range(8):
        part += 1
        t0 = time.monotonic()
        r = get(live, f"/live/live/720p/index.m3u8?_HLS_msn={msn}&_HLS_part={part}")
        waits.append(time.monotonic() - t0)
        assert r.status_code == 200
        assert r.headers["cache-control"].startswith("max-age=") or "max-age" in r.headers["cache-control"]
        cur = parse_media_playlist(r.text)
        got = cur.last_msn_part
        assert got[0] > msn or (got[0] == msn and got[1] is not None and got[1] >= part), (got, msn, part)
        assert conformance.errors(conformance.check_media_playlist_update(previous, r.text)) == []
        previous = r.text
        msn, part = got
    # A new part MUST appear within one Part Target (6.2.1): blocked waits stay below it.
    assert max(waits) < 0.5 + 0.25, waits
    # The preload-hinted part is held until it exists, then served whole.
    hint = parse_media_playlist(previous).preload_hints[0].uri
    r = get(live, f"/live/live/720p/{hint}")
    assert r.status_code == 200 and r.content[4:8] == b"moof"


def test_delta_update_live(live: LiveProcess) -> None:
    wait_segments(live, 8, timeout=30)
    pl = parse_media_playlist(get(live, "/live/live/480p/index.m3u8").text)
    r = get(live, f"/live/live/480p/index.m3u8?_HLS_msn={pl.last_msn_part[0]}&_HLS_skip=YES")
    assert r.status_code == 200
    delta = parse_media_playlist(r.text)
    full = parse_media_playlist(get(live, "/live/live/480p/index.m3u8").text)
    assert delta.skipped_segments > 0
    assert delta.version >= 9
    # Skipped segments are exactly those older than the skip boundary (CAN-SKIP-UNTIL) from the end.
    kept = sum(s.duration for s in delta.segments)
    assert kept >= full.server_control.can_skip_until - full.target_duration
    assert delta.segments[0].msn == delta.media_sequence + delta.skipped_segments


@pytest.mark.parametrize(
    "query,status",
    [
        ("_HLS_part=1", 400),  # _HLS_part without _HLS_msn
        ("_HLS_msn=99999999999", 400),  # more than last MSN + 2 (MSNs count wall-clock segments since 1970)
        ("_HLS_msn=abc", 400),
        ("_HLS_msn=1&_HLS_skip=MAYBE", 400),
    ],
)
def test_bad_directives_answer_400_at_once(live: LiveProcess, query: str, status: int) -> None:
    t0 = time.monotonic()
    r = get(live, f"/live/live/720p/index.m3u8?{query}")
    assert r.status_code == status
    assert time.monotonic() - t0 < 0.5


@pytest.mark.parametrize(
    "path", ["/live/nope/master.m3u8", "/live/live/720p/../../../etc/passwd", "/live/live/%2e%2e/%2e%2e/etc/passwd", "/etc/passwd"]
)
def test_unknown_and_traversal_404(live: LiveProcess, path: str) -> None:
    assert httpx.get(live.url(path), timeout=5).status_code == 404


def _ffmpeg_decode(url: str, seconds: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-i", url, "-t", str(seconds), "-f", "null", "-"],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_ffmpeg_decodes_hls_from_origin(live: LiveProcess) -> None:
    wait_segments(live, 3)
    out = _ffmpeg_decode(live.url("/live/live/master.m3u8"), 6)
    assert out.returncode == 0, out.stderr
    assert out.stderr.strip() == "", out.stderr


def test_ffmpeg_decodes_dash_from_origin(live: LiveProcess) -> None:
    wait_segments(live, 3)
    out = _ffmpeg_decode(live.url("/live/live/manifest.mpd"), 6)
    assert out.returncode == 0, out.stderr
    assert out.stderr.strip() == "", out.stderr


def test_each_segment_decodes_with_its_init(live: LiveProcess, tmp_path) -> None:
    """init + segment from the origin is a complete CMAF track that FFmpeg decodes frame-exactly."""
    wait_segments(live, 2)
    for name in RENDITIONS:
        pl = parse_media_playlist(get(live, f"/live/live/{name}/index.m3u8").text)
        seg = pl.segments[-1]
        data = get(live, f"/live/live/{name}/init.mp4").content + get(live, f"/live/live/{name}/{seg.uri}").content
        f = tmp_path / f"{name}.mp4"
        f.write_bytes(data)
        out = subprocess.run(
            ["ffprobe", "-v", "error", "-count_frames", "-show_entries", "stream=nb_read_frames,codec_type", "-of", "csv=p=0", str(f)],
            capture_output=True,
            text=True,
        )
        assert out.returncode == 0 and out.stderr == "", out.stderr
        kind, frames = out.stdout.strip().split(",")[:2]
        if name == "audio":
            assert abs(int(frames) - seg.duration * 48000 / 1024) <= 2
        else:
            assert int(frames) == round(seg.duration * 30)


def test_killed_encoder_recovers_with_discontinuity(live: LiveProcess) -> None:
    wait_segments(live, 2)
    pids = live.encoder_pids()
    assert len(pids) == 1
    before = parse_media_playlist(get(live, "/live/live/720p/index.m3u8").text)
    os.kill(pids[0], signal.SIGKILL)
    killed = time.monotonic()
    # Within 2 s a new FFmpeg runs, and parts flow again soon after.
    while not (set(live.encoder_pids()) - set(pids)):
        assert time.monotonic() - killed < 2.0, "encoder not restarted within 2 s"
        time.sleep(0.05)
    deadline = time.monotonic() + 15
    while True:
        text = get(live, "/live/live/720p/index.m3u8").text
        if "#EXT-X-DISCONTINUITY\n" in text and parse_media_playlist(text).last_msn_part[0] > before.last_msn_part[0] + 1:
            break
        assert time.monotonic() < deadline, text
        time.sleep(0.3)
    assert conformance.errors(conformance.check_media_playlist(text)) == []
    mpd = parse_mpd(get(live, "/live/live/manifest.mpd").text)
    assert len(mpd.periods) >= 2
    assert re.search(r"restart|exited|killed|signal", live.log(), re.I)
    # Players keep going: FFmpeg decodes across the discontinuity.
    out = _ffmpeg_decode(live.url("/live/live/240p/index.m3u8"), 4)
    assert out.returncode == 0, out.stderr


def test_metrics_expose_origin_and_pipeline(live: LiveProcess) -> None:
    wait_segments(live, 2)
    get(live, "/live/live/720p/index.m3u8")
    deadline = time.monotonic() + 15
    while True:
        text = get(live, "/metrics").text
        speed = re.search(r"^flowcast_encoder_speed_ratio ([0-9.e+-]+)$", text, re.M)
        if speed and float(speed.group(1)) > 0:
            break
        assert time.monotonic() < deadline, text
        time.sleep(1)
    assert 0.9 < float(speed.group(1)) < 1.2
    assert re.search(r'^flowcast_parts_published_total\{rendition="720p"\} [1-9]', text, re.M)
    assert re.search(r'^flowcast_origin_requests_total\{resource="playlist",status="200"\} [1-9]', text, re.M)
    # Parts are published well within one part target of their media end time.
    assert re.search(r'^flowcast_part_publish_lag_seconds_bucket\{le="0.5",rendition="720p"\} [1-9]', text, re.M)
