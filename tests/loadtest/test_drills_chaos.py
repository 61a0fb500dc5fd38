"""Publication-stall and license-outage drills against a real, ClearKey-encrypted `flowcast up`
(the origin's admin chaos controls, origin/chaos.py). Each drill states what should happen;
the assertions read the raw per-viewer rows, then check the report's verdict agrees."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from flowcast.loadtest import Ramp, run_loadtest
from flowcast.loadtest.drills import LicenseOutage, PublicationStall
from tests.e2e.livestack import LiveProcess

pytestmark = pytest.mark.slow
TOKEN = secrets.token_hex(16)
CONFIG = """
ladder:
  rungs:
    - {name: 360p, width: 640, height: 360, video_bitrate_kbps: 600, profile: main, level: "3.0"}
telemetry:
  enabled: false
"""
PART_HOLD_BACK_S = 1.5


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveProcess]:
    tmp = tmp_path_factory.mktemp("chaos")
    cfg = tmp / "one-rung.yaml"
    cfg.write_text(CONFIG)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FLOWCAST_TELEMETRY_ADMIN_TOKEN", TOKEN)
        proc = LiveProcess(tmp, "--config", str(cfg), "--encryption", "cenc")
    try:
        proc.wait_ready(timeout=60.0)
        time.sleep(3.0)
        yield proc
    finally:
        proc.stop()


def test_chaos_license_outage_needs_the_token(live: LiveProcess) -> None:
    r = httpx.post(live.url("/admin/chaos/license-outage?seconds=1"))
    assert r.status_code == 403
    r = httpx.post(live.url("/admin/chaos/license-outage?seconds=99"), headers={"authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 400 and r.json()["field"] == "seconds"


def test_publication_stall_drill(live: LiveProcess, tmp_path: Path) -> None:
    seconds = 4.0
    drill = PublicationStall(at_s=8.0, origin_url=live.base, seconds=seconds, buffer_s=PART_HOLD_BACK_S, token=TOKEN)
    rep = run_loadtest(live.url("/live/live/master.m3u8"), 10, 20.0, "loopback", "ll-hls", tmp_path,
                       ramp=Ramp(up_s=3.0, down_s=1.0), drills=[drill])
    data = json.loads(rep.json_path.read_text())
    fired = data["drills"][0]["fired_at"]
    assert fired is not None, data["drills"]
    end = fired + seconds
    rows = data["viewers"]
    assert [r["error_code"] for r in rows] == [""] * 10
    expected = seconds - PART_HOLD_BACK_S
    stalls = []
    for r in rows:
        assert r["startup_time_ms"] is not None and r["start_ts"] < fired
        during = [ms / 1000 for ts, ms in r["stalls"] if fired - 0.5 <= ts <= end + 2.0]
        stalls.append(sum(during))
        assert r["last_media_ts"] > end + 3.0, "the viewer must recover after the stall"
    stalls.sort()
    median = stalls[len(stalls) // 2]
    print(f"publication stall {seconds} s: viewer stalls {stalls} (expected about {expected} s)")
    assert min(stalls) > 0.5, "a publication stall longer than the buffer must stall every viewer"
    assert abs(median - expected) <= 1.5, (median, expected)
    assert data["drills"][0]["verdict"] == "PASS", data["drills"][0]


def test_license_outage_drill(live: LiveProcess, tmp_path: Path) -> None:
    seconds = 5.0
    drill = LicenseOutage(at_s=7.0, origin_url=live.base, seconds=seconds, token=TOKEN)
    # joins spread over 13 s: some viewers are licensed before the outage, some arrive during it
    rep = run_loadtest(live.url("/live/live/master.m3u8"), 10, 22.0, "loopback", "ll-hls", tmp_path,
                       ramp=Ramp(up_s=13.0, down_s=1.0), drills=[drill])
    data = json.loads(rep.json_path.read_text())
    fired = data["drills"][0]["fired_at"]
    assert fired is not None, data["drills"]
    end = fired + seconds
    rows = data["viewers"]
    assert [r["error_code"] for r in rows] == [""] * 10
    before = [r for r in rows if r["license_requests"] and r["license_requests"][0][0] < fired and r["license_requests"][0][1] == 200]
    during = [r for r in rows if fired + 0.5 < r["start_ts"] < end - 1.0]
    assert len(before) >= 3 and len(during) >= 2, (len(before), len(during))
    for r in before:
        # licensed already: one key for the whole stream, so no new request and no stall
        assert all(s == 200 for _, s in r["license_requests"]), r["license_requests"]
        assert not [ts for ts, _ in r["stalls"] if fired <= ts <= end], r["stalls"]
        assert r["last_media_ts"] > end
    for r in during:
        # arriving in the outage: refused (503) until it ends, then licensed and playing
        statuses = [s for ts, s in r["license_requests"] if ts < end - 0.2]
        assert statuses and all(s == 503 for s in statuses), r["license_requests"]
        ok = [ts for ts, s in r["license_requests"] if s == 200]
        assert ok and ok[0] >= end - 0.2, r["license_requests"]
        assert r["startup_time_ms"] is not None and r["start_ts"] + r["startup_time_ms"] / 1000 >= end - 0.2
    assert data["drills"][0]["verdict"] == "PASS", data["drills"][0]
