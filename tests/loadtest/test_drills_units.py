"""Drill judging on per-viewer rows (the rows' shape is what viewer.ViewerResult writes),
the drill registry a scenario names drills from, and failover bookkeeping."""

from __future__ import annotations

import os

import pytest

from flowcast.loadtest import drills


def row(origin: str = "origin-1", failovers: list | None = None, stalls: list | None = None, error: str = "",
        start: float = 100.0, end: float = 130.0, last_media: float = 129.0) -> dict:
    return {
        "origin": origin, "failovers": failovers or [], "stalls": stalls or [], "error_code": error,
        "start_ts": start, "end_ts": end, "last_media_ts": last_media, "startup_time_ms": 300.0,
        "license_requests": [],
    }


KILL = 110.0


def moved(at: float, resumed: float | None, gap: float | None = 0.0) -> dict:
    f = {"at": at, "from": "origin-1", "to": "origin-2", "error": "network", "resumed_at": resumed}
    if gap is not None:
        f.update(media_gap_s=gap, frame_s=1 / 30)
    return f


def test_origin_at_follows_failovers() -> None:
    r = row(failovers=[moved(KILL + 0.1, KILL + 0.3)])
    assert drills.origin_at(r, KILL) == "origin-1"
    assert drills.origin_at(r, KILL + 1) == "origin-2"


def test_resumed_after_counts_media_and_stalls() -> None:
    assert drills.resumed_after(row(failovers=[moved(KILL + 0.1, KILL + 0.3)]), KILL) == pytest.approx(0.3)
    stalled = row(failovers=[moved(KILL + 0.1, KILL + 0.3)], stalls=[(KILL + 1.0, 2500.0)])
    assert drills.resumed_after(stalled, KILL) == pytest.approx(3.5)
    assert drills.resumed_after(row(last_media=KILL - 1), KILL) is None


def test_origin_kill_verdicts() -> None:
    d = drills.OriginKill(at_s=10, pid=os.getppid() if os.getppid() > 1 else 2, origin_id="origin-1", target_duration_s=2.0)
    ok = [row(failovers=[moved(KILL + 0.05, KILL + 0.2)]) for _ in range(3)] + [row(origin="origin-2")]
    res = d.judge(ok, KILL, {})
    assert res.passed and res.measured["viewers_on_killed_origin"] == 3
    late = ok[:2] + [row(failovers=[moved(KILL + 0.05, KILL + 4.5)])]
    assert d.judge(late, KILL, {}).passed is False
    errored = ok + [row(origin="origin-2", error="timeout")]
    assert d.judge(errored, KILL, {}).passed is False
    # the new origin's media must continue the dead one's: not 0.74 s earlier (a repeat) ...
    repeated = ok[:2] + [row(failovers=[moved(KILL + 0.05, KILL + 0.2, gap=-0.74)])]
    res = d.judge(repeated, KILL, {})
    assert res.passed is False and res.measured["worst_media_gap_s"] == -0.74
    # ... nor unmeasured; a frame's worth of difference is within the bar
    assert d.judge(ok[:2] + [row(failovers=[moved(KILL + 0.05, KILL + 0.2, gap=None)])], KILL, {}).passed is False
    assert d.judge(ok[:2] + [row(failovers=[moved(KILL + 0.05, KILL + 0.2, gap=1 / 30)])], KILL, {}).passed
    assert d.judge(ok, None, {}).passed is None
    assert "within 2 target durations" in d.expectation


def test_registry_and_bad_parameters() -> None:
    assert set(drills.DRILLS) == {"origin-kill", "publication-stall", "license-outage"}
    with pytest.raises(drills.DrillError, match="unknown drill"):
        drills.make_drill("dns-outage", at_s=1)
    with pytest.raises(drills.DrillError, match="pid"):
        drills.make_drill("origin-kill", at_s=1, pid=0)
    with pytest.raises(drills.DrillError, match="load tester itself"):
        drills.make_drill("origin-kill", at_s=1, pid=os.getpid())
    with pytest.raises(drills.DrillError):
        drills.make_drill("publication-stall", at_s=1, colour="red")


def test_publication_stall_and_license_outage_verdicts() -> None:
    stall = drills.PublicationStall(at_s=5, origin_url="http://127.0.0.1:1", seconds=4.0, buffer_s=1.5)
    rows = [row(stalls=[(KILL + 1.5, 2600.0)]) for _ in range(4)]
    assert stall.judge(rows, KILL, {}).passed
    assert stall.judge([row(stalls=[(KILL + 1.5, 9000.0)])], KILL, {}).passed is False  # far longer than expected
    outage = drills.LicenseOutage(at_s=5, origin_url="http://127.0.0.1:1", seconds=5.0)
    assert outage.judge([row(), row()], KILL, {}).passed
    assert outage.judge([row(stalls=[(KILL + 2, 800.0)])], KILL, {}).passed is False


def test_admin_post_refuses_non_loopback() -> None:
    d = drills.PublicationStall(at_s=1, origin_url="http://10.0.0.1:8080", seconds=2)
    with pytest.raises(Exception, match="only 127.0.0.1"):
        d.fire()


def test_cli_refuses_a_drill_it_cannot_run(capsys: pytest.CaptureFixture[str], tmp_path) -> None:  # type: ignore[no-untyped-def]
    from flowcast.cli import main

    rc = main(["loadtest", "--viewers", "2", "--duration", "10", "--drill", "origin-kill", "--out", str(tmp_path / "r")])
    assert rc == 2 and "--drill-pid" in capsys.readouterr().err
    rc = main(["loadtest", "--viewers", "2", "--duration", "10", "--drill", "publication-stall", "--drill-at", "30",
               "--port", "9", "--out", str(tmp_path / "r")])
    assert rc == 2 and "at_s must be within the run" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
