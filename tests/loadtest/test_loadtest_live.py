"""Load, chaos and acceptance against a real `flowcast up` (subprocess on a free loopback port).

Budget: about 60 s of wall time for the module (one origin start, two 16 s runs side by side,
one 16 s drill). Assertions read the raw per-viewer rows, independently of the report's own
summary, so a wrong summary cannot hide a wrong viewer.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from flowcast.loadtest import LoadTestRefused, Ramp, run_loadtest
from tests.e2e.livestack import LiveProcess

pytestmark = pytest.mark.slow
RUN_S = 16.0
TARGET_DURATION_S = 2.0


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveProcess]:
    proc = LiveProcess(tmp_path_factory.mktemp("live"))
    try:
        proc.wait_ready(timeout=45.0)  # the machine is shared: FFmpeg may start slowly
        time.sleep(3.0)  # a few parts so that the first viewers can start PART-HOLD-BACK behind the edge
        yield proc
    finally:
        proc.stop()


def _rebuffer_ratio(rows: list[dict]) -> float:
    reb = sum(v["rebuffer_ms"] for v in rows)
    play = sum(v["play_time_ms"] for v in rows)
    return reb / (play + reb)


@pytest.fixture(scope="module")
def clean_and_lossy(live: LiveProcess, tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """20 viewers on loopback and 20 through the 3G-with-loss relay, at the same time (same origin
    conditions for both)."""
    out = tmp_path_factory.mktemp("reports")
    reports: dict[str, object] = {}

    def one(profile: str) -> None:
        reports[profile] = run_loadtest(
            live.url("/live/live/master.m3u8"), 20, RUN_S, profile, "ll-hls", out / profile,
            origin_pid=live.proc.pid, ramp=Ramp(up_s=3.0, down_s=1.0),
        )

    threads = [threading.Thread(target=one, args=(p,)) for p in ("loopback", "3g-lossy")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(RUN_S + 60)
    assert set(reports) == {"loopback", "3g-lossy"}, "a run did not finish"
    return reports


def test_report_files_and_verdicts(clean_and_lossy: dict) -> None:
    rep = clean_and_lossy["loopback"]
    assert rep.json_path.is_file() and rep.html_path.is_file()
    assert set(rep.charts) >= {"startup", "latency", "rebuffer", "errors", "throughput", "processes"}
    for p in rep.charts.values():
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert p.name in rep.html_path.read_text()
    data = json.loads(rep.json_path.read_text())
    assert [v["criterion"] for v in data["verdicts"]] == [
        "startup time p95", "rebuffer ratio", "ll-hls latency p95", "critical player errors",
    ]
    assert all(v["verdict"] in ("PASS", "FAIL") for v in data["verdicts"])
    assert len(data["viewers"]) == 20
    for v in data["viewers"]:
        for name in ("session_id", "protocol", "startup_time_ms", "rebuffer_count", "rebuffer_ms",
                     "avg_bitrate_kbps", "latency_ms", "play_time_ms", "error_code"):
            assert name in v
        assert v["protocol"] == "ll-hls"
    assert max(data["timeseries"]["requests_per_s"]) > 0
    assert data["processes"]["origin"]["cpu_pct"], "origin /proc samples missing"
    # the clean run really played: everyone started, latency from PDT is near-live
    assert all(v["startup_time_ms"] is not None for v in data["viewers"])
    assert all(v["error_code"] == "" for v in data["viewers"])
    lat = sorted(x for v in data["viewers"] for x in v["latency_ms"])
    assert lat and 500 < lat[len(lat) // 2] < 4000


def test_lossy_profile_is_worse_than_clean(clean_and_lossy: dict) -> None:
    clean = json.loads(clean_and_lossy["loopback"].json_path.read_text())["viewers"]
    lossy = json.loads(clean_and_lossy["3g-lossy"].json_path.read_text())["viewers"]
    assert len(lossy) == 20
    med = lambda xs: sorted(xs)[len(xs) // 2]  # noqa: E731
    clean_startup = med([v["startup_time_ms"] for v in clean if v["startup_time_ms"] is not None])
    lossy_startup = med([v["startup_time_ms"] if v["startup_time_ms"] is not None else 1e9 for v in lossy])
    more_stalls = _rebuffer_ratio(lossy) > _rebuffer_ratio(clean)
    assert more_stalls or lossy_startup > clean_startup, (clean_startup, lossy_startup)
    # bandwidth cap respected: 1.6 Mbps x play time bounds what a 3G viewer can have received
    for v in lossy:
        secs = v["end_ts"] - v["start_ts"]
        assert v["bytes_received"] * 8 <= 1_600_000 * secs * 1.1 + 64 * 1024 * 8


def test_encoder_kill_drill(live: LiveProcess, tmp_path: Path) -> None:
    old = live.encoder_pids()
    assert old, "no encoder running"
    killed: list[float] = []

    def chaos() -> None:
        time.sleep(2.0 + 5.0)  # START_DELAY_S + a third of the run: leaves 9 s to see the resume
        os.kill(old[0], signal.SIGKILL)
        killed.append(time.time())

    t = threading.Thread(target=chaos)
    t.start()
    rep = run_loadtest(live.url("/live/live/master.m3u8"), 10, RUN_S, "loopback", "ll-hls", tmp_path,
                       origin_pid=live.proc.pid, ramp=Ramp(up_s=2.0, down_s=1.0))
    t.join()
    kill_ts = killed[0]
    new = live.encoder_pids()
    assert new and new[0] != old[0], "the supervisor did not restart the encoder"
    rows = json.loads(rep.json_path.read_text())["viewers"]
    assert all(v["error_code"] == "" for v in rows), [v["error_code"] for v in rows]
    for v in rows:
        assert v["last_media_ts"] > kill_ts + 3.0, "viewer got no media after the encoder restart"
        after = [ms for ts, ms in v["stalls"] if ts >= kill_ts - 1.0]
        assert all(ms <= 2 * TARGET_DURATION_S * 1000 for ms in after), after  # resumes within 2 target durations


def test_refuses_non_loopback_and_oversize(tmp_path: Path) -> None:
    t0 = time.monotonic()
    for url in ("http://10.0.0.1:8080/live/live/master.m3u8", "http://example.com/master.m3u8",
                "https://127.0.0.1/live/live/master.m3u8", "http://127.0.0.2/master.m3u8"):
        with pytest.raises(LoadTestRefused, match="127.0.0.1"):
            run_loadtest(url, 1, 5, "loopback", "ll-hls", tmp_path / "x")
    with pytest.raises(LoadTestRefused, match="more than this machine"):
        run_loadtest("http://127.0.0.1:9/master.m3u8", 5000, 10, "loopback", "ll-hls", tmp_path / "y")
    with pytest.raises(LoadTestRefused, match="unknown network profile"):
        run_loadtest("http://127.0.0.1:9/master.m3u8", 5, 10, "5g-mmwave", "ll-hls", tmp_path / "z")
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
    assert time.monotonic() - t0 < 2.0, "refusal must come before anything starts"
