"""Two real redundant `flowcast up` origins: epoch-locked alignment, then the origin-kill drill.

Both origins package the built-in test source, each with its own FFmpeg started at its own
time: testsrc2 paced by the wall clock, labelled with it on the frame grid and burned in.
Epoch-locked (transcode/epoch.py), segment N must be the same interval on both: same
PROGRAM-DATE-TIME, EXTINF, part edges and tfdt within a frame, and FFmpeg decodes origin 1's
segment N-1 followed by origin 2's segment N with continuous timestamps. Then one origin
is SIGKILLed mid-run; viewers of both protocols (our LL-HLS client on Content Steering
pathways, our LL-DASH client on MPD BaseURLs) must fail over onto media that continues the
dead origin's. Assertions read the raw per-viewer rows, not the report.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from flowcast.loadtest import Ramp, run_loadtest
from flowcast.loadtest.alignment import compare, snapshot
from flowcast.loadtest.drills import OriginKill
from flowcast.origin.server import free_port
from flowcast.package.m3u8 import parse_media_playlist, parse_multivariant
from flowcast.package.mpd import parse_mpd
from tests.e2e.livestack import LiveProcess

pytestmark = pytest.mark.slow
TD = 2.0  # target duration of the low-latency default (2 s segments)
RUN_S = 18.0
KILL_AT_S = 9.0
FRAME = {"360p": 1 / 30, "audio": 1024 / 48000}  # one frame of each rendition, seconds

CONFIG = """
ladder:
  rungs:
    - {{name: 360p, width: 640, height: 360, video_bitrate_kbps: 600, profile: main, level: "3.0"}}
origin:
  redundant: ["http://127.0.0.1:{a}", "http://127.0.0.1:{b}"]
telemetry:
  enabled: false
"""


@pytest.fixture(scope="module")
def origins(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveProcess, LiveProcess]]:
    tmp = tmp_path_factory.mktemp("redundant")
    a, b = free_port(), free_port()
    while b == a:
        b = free_port()
    cfg = tmp / "redundant.yaml"
    cfg.write_text(CONFIG.format(a=a, b=b))
    (tmp / "a").mkdir()
    (tmp / "b").mkdir()
    procs = [LiveProcess(tmp / "a", "--config", str(cfg), port=a), LiveProcess(tmp / "b", "--config", str(cfg), port=b)]
    try:
        for p in procs:
            p.wait_ready(timeout=60.0)
        time.sleep(3.0)
        yield procs[0], procs[1]
    finally:
        for p in procs:
            p.stop()


def test_origins_agree_on_numbering_and_announce_each_other(origins: tuple[LiveProcess, LiveProcess]) -> None:
    a, b = origins
    mv = parse_multivariant(httpx.get(a.url("/live/live/master.m3u8")).text)
    assert [v.attributes["PATHWAY-ID"] for v in mv.variants] == ["origin-1", "origin-2"]
    assert mv.variants[0].uri == a.url("/live/live/360p/index.m3u8")
    assert mv.variants[1].uri == b.url("/live/live/360p/index.m3u8")
    assert any(t.startswith("#EXT-X-CONTENT-STEERING:") and 'PATHWAY-ID="origin-1"' in t for t in mv.unknown_tags)
    steer = httpx.get(a.url("/live/live/steering.json?_HLS_pathway=origin-1"))
    assert steer.status_code == 200 and steer.json()["PATHWAY-PRIORITY"] == ["origin-1", "origin-2"]
    mpd = parse_mpd(httpx.get(b.url("/live/live/manifest.mpd")).content)
    assert mpd.base_urls == ((a.url("/live/live/"), "origin-1"), (b.url("/live/live/"), "origin-2"))
    # Epoch-locked: segment N is the same wall-clock interval, with the same media timeline,
    # on both origins, and starts at N x TD since 1970.
    for rendition, frame in FRAME.items():
        sa = snapshot(a.base, rendition, segment_duration=TD)
        sb = snapshot(b.base, rendition, segment_duration=TD)
        rows = compare(sa, sb)
        assert len(rows) >= 2, (rendition, sorted(sa), sorted(sb))
        for row in rows:
            x = sa[row.msn]
            assert abs(row.pdt) <= frame and abs(row.duration) <= frame, (rendition, row)
            assert abs(row.tfdt) <= frame and abs(row.media_duration) <= frame, (rendition, row)
            assert row.part_edges is None or row.part_edges <= frame, (rendition, row)
            assert abs(x.tfdt - row.msn * TD) <= frame / 2 + 1e-6, (rendition, x)  # on the epoch grid
            assert abs(x.pdt - x.tfdt) <= 0.0015, (rendition, x)  # PDT (ms) = media time
            assert abs(x.mpd_time - row.msn * TD) < 1e-6 and abs(row.mpd_time) < 1e-6, (rendition, row)  # $Number$ -> N x TD
        assert sum(1 for r in rows if r.part_edges is not None) >= 2, rows  # parts compared too
        # A viewer switching origins between N-1 and N: FFmpeg sees one continuous track.
        n = max(r.msn for r in rows)
        _assert_continuous(a, b, rendition, n, frame)


def _assert_continuous(a: LiveProcess, b: LiveProcess, rendition: str, n: int, frame: float) -> None:
    """Origin a's init and segment n-1, then origin b's segment n, decoded by FFmpeg: no
    decode error, and every packet starts where the previous one ended (within a frame)."""
    root = "/live/live/" + rendition
    init_a, init_b = httpx.get(a.url(f"{root}/init.mp4")).content, httpx.get(b.url(f"{root}/init.mp4")).content
    assert init_a == init_b, "both encoders must write the same init segment"
    data = init_a + httpx.get(a.url(f"{root}/{n - 1}.m4s")).content + httpx.get(b.url(f"{root}/{n}.m4s")).content
    probe = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "packet=pts_time,duration_time", "-of", "csv=p=0", "-"],
        input=data, capture_output=True, timeout=30, check=True,
    )
    # (pts, duration): FFmpeg leaves the first AAC packet's duration unknown ("N/A") on a pipe
    packets = [tuple(float(v) if v != "N/A" else frame for v in line.split(",")) for line in probe.stdout.decode().split()]
    assert len(packets) >= 2 * TD / frame - 2, (rendition, len(packets))
    steps = [nxt[0] - (cur[0] + cur[1]) for cur, nxt in zip(packets, packets[1:])]
    assert max(abs(x) for x in steps) <= frame / 2, (rendition, n, max(steps, key=abs))
    assert abs(packets[0][0] - (n - 1) * TD) <= frame and abs(packets[-1][0] + packets[-1][1] - (n + 1) * TD) <= frame
    decode = subprocess.run(["ffmpeg", "-v", "error", "-i", "-", "-f", "null", "-"], input=data, capture_output=True, timeout=60)
    assert decode.returncode == 0 and not decode.stderr.strip(), decode.stderr.decode()[-500:]


def _origin_at(row: dict, ts: float) -> str:
    cur = row["origin"]
    for f in row["failovers"]:
        if f["at"] <= ts:
            cur = f["to"]
    return cur


def test_origin_kill_viewers_fail_over(origins: tuple[LiveProcess, LiveProcess], tmp_path: Path) -> None:
    a, b = origins
    drill = OriginKill(at_s=KILL_AT_S, pid=a.proc.pid, origin_id="origin-1", target_duration_s=TD)
    reports: dict[str, object] = {}

    def hls() -> None:
        reports["ll-hls"] = run_loadtest(
            a.url("/live/live/master.m3u8"), 10, RUN_S, "loopback", "ll-hls", tmp_path / "hls",
            origin_pid=a.proc.pid, ramp=Ramp(up_s=3.0, down_s=1.0), drills=[drill],
        )

    def dash() -> None:
        reports["ll-dash"] = run_loadtest(
            a.url("/live/live/manifest.mpd"), 10, RUN_S, "loopback", "ll-dash", tmp_path / "dash",
            ramp=Ramp(up_s=3.0, down_s=1.0),
        )

    threads = [threading.Thread(target=hls), threading.Thread(target=dash)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(RUN_S + 60)
    assert set(reports) == {"ll-hls", "ll-dash"}, "a run did not finish"
    assert a.proc.wait(5) == -9, "origin-1 was not killed"
    hls_data = json.loads(reports["ll-hls"].json_path.read_text())
    kill_ts = hls_data["drills"][0]["fired_at"]
    assert kill_ts is not None
    assert httpx.get(b.url("/live/live/master.m3u8")).status_code == 200, "origin-2 must be unharmed"
    # origin-2 saw origin-1 die (origin/peers.py) and steers players away from it.
    steer = httpx.get(b.url("/live/live/steering.json")).json()
    assert steer["PATHWAY-PRIORITY"] == ["origin-2", "origin-1"], steer
    rows = hls_data["viewers"] + json.loads(reports["ll-dash"].json_path.read_text())["viewers"]
    assert len(rows) == 20
    # no viewer stops with an error
    assert [r["error_code"] for r in rows] == [""] * 20
    on_killed = [r for r in rows if r["start_ts"] < kill_ts and _origin_at(r, kill_ts - 1e-3) == "origin-1"]
    assert {r["protocol"] for r in on_killed} == {"ll-hls", "ll-dash"}, "both clients must have been on origin-1"
    for r in on_killed:
        moves = [f for f in r["failovers"] if f["from"] == "origin-1" and f["at"] >= kill_ts - 0.5]
        assert moves and moves[0]["to"] == "origin-2", r["failovers"]
        # nothing, steering reloads included, takes it back to the dead origin
        assert not [f for f in r["failovers"] if f["to"] == "origin-1" and f["at"] >= kill_ts], r["failovers"]
        # media again from origin-2 within 2 target durations of the kill ...
        assert moves[0]["resumed_at"] is not None and moves[0]["resumed_at"] - kill_ts <= 2 * TD, moves
        # ... that continues origin-1's on the media timeline: nothing skipped or repeated
        assert moves[0]["media_gap_s"] is not None and abs(moves[0]["media_gap_s"]) <= moves[0]["frame_s"], moves
        # ... and playing: any stall around the kill ended within 2 target durations of it
        for start, ms in r["stalls"]:
            if start + ms / 1000 >= kill_ts - 0.5:
                assert start + ms / 1000 - kill_ts <= 2 * TD, (r["protocol"], r["stalls"], kill_ts)
        assert r["last_media_ts"] > kill_ts + 3.0, "kept playing after the failover"
    print("media jumps (gap > a frame) per viewer:", {r["session_id"][:6]: r["media_jumps"] for r in rows if r["media_jumps"]})
    # the report's drill verdict agrees with what was asserted above
    assert hls_data["drills"][0]["verdict"] == "PASS", hls_data["drills"][0]
    assert "play again within 2 target durations" in reports["ll-hls"].html_path.read_text()
