"""Scenario files: the planner's validates, bad ones name the field, a scaled one runs live."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from flowcast.loadtest import LoadTestRefused
from flowcast.loadtest import drills as engine
from flowcast.loadtest.scenario import (
    MIN_STAGE_S, ScenarioError, dump_scenario, groups, load_scenario, parse_scenario, run_scenario, scale,
)
from flowcast.plan import build_pack
from tests.e2e.livestack import LiveProcess
from tests.plan.conftest import CH247, DAY, PSS

GOOD = {
    "scenario": 1,
    "pipeline": "t",
    "target": {"stream": "t", "port": 8080},
    "stages": [{"viewers": 10, "duration_s": 30}],
    "protocol_mix": {"ll-hls": 1.0},
    "network_profiles": {"loopback": 1.0},
}


def _with(**kw):
    return {**GOOD, **kw}


@pytest.fixture(scope="module")
def planned(tmp_path_factory):
    out = tmp_path_factory.mktemp("packs")
    return {name: build_pack(brief, out / name, today=DAY) for name, brief in (("pss", PSS), ("ch", CH247))}


@pytest.mark.parametrize("which", ["pss", "ch"])
def test_planner_scenario_validates(planned, which):
    res = planned[which]
    path = res.files["loadplan.yaml"]
    assert path.name == f"stream_loadplan_{res.plan.brief.pipeline}_20261125_v1.yaml"
    sc = load_scenario(path)
    assert sc.pipeline == sc.target.stream == res.plan.brief.pipeline
    peak = res.plan.brief.inputs.audience.peak_concurrent_viewers
    assert [st.viewers for st in sc.stages] == [peak // 5, 2 * peak // 5, 3 * peak // 5, 4 * peak // 5, peak, peak]
    assert sum(sc.protocol_mix.values()) == pytest.approx(1) and sum(sc.network_profiles.values()) == pytest.approx(1)
    for d in sc.drills:
        assert d.status == "not-automated" or d.name in engine.DRILLS
        # every engine drill the plan can parameterise is automated (origin-kill needs a second origin's PID)
        if d.name in engine.DRILLS and d.name != "origin-kill":
            assert d.status == "automated" and d.at_s is not None
    assert {"encoder-kill", "origin-kill"} <= {d.name for d in sc.drills}
    assert sc.acceptance.startup_p95_ms == 2000 and sc.acceptance.mos_min == 4.0
    if which == "pss":
        assert set(sc.protocol_mix) == {"ll-hls", "ll-dash"} and sc.acceptance.latency_p95_ms == 3000
        assert {"turn-exhaustion", "webrtc-session-load", "license-outage"} <= {d.name for d in sc.drills}
        assert sc.network_profiles["4g"] == pytest.approx(0.40)
    else:
        assert sc.protocol_mix == {"hls": 1.0} and sc.acceptance.latency_p95_ms is None


@pytest.mark.parametrize("raw,field", [
    (_with(stages=[{"viewers": 0, "duration_s": 30}]), "stages.0.viewers"),
    (_with(stages=[]), "stages"),
    (_with(network_profiles={"5g": 1.0}), "network_profiles"),
    (_with(protocol_mix={"webrtc": 1.0}), "protocol_mix.webrtc"),
    (_with(protocol_mix={"ll-hls": 0.5}), "protocol_mix"),
    (_with(drills=[{"name": "dns-outage", "at_s": 1}]), "drills.0"),
    (_with(drills=[{"name": "dns-outage", "status": "sometimes"}]), "drills.0.status"),
    (_with(drills=[{"name": "dns-outage", "status": "not-automated", "stage": 3}]), "drills.0.stage"),
    (_with(acceptance={"rebuffer_ratio_max": 2}), "acceptance.rebuffer_ratio_max"),
    (_with(viewers=5), "viewers"),
])
def test_bad_scenario_names_the_field(raw, field):
    with pytest.raises(ScenarioError) as err:
        parse_scenario(raw)
    first = str(err.value).splitlines()[1].strip()
    assert first.startswith(field + ":"), str(err.value)


def test_not_automated_drill_is_accepted_and_automated_needs_the_engine():
    sc = parse_scenario(_with(drills=[{"name": "dns-outage", "status": "not-automated", "note": "by hand"}]))
    assert sc.drills[0].status == "not-automated"
    name = next(n for n in ("encoder-kill", "dns-outage", "cdn-pathway-block") if n not in engine.DRILLS)
    with pytest.raises(ScenarioError, match=r"drills\.0: .*status: not-automated"):
        parse_scenario(_with(drills=[{"name": name, "at_s": 5}]))
    with pytest.raises(ScenarioError, match=r"drills\.0\.at_s"):
        parse_scenario(_with(drills=[{"name": name, "status": "not-automated", "at_s": 45}]))


def test_scale_shrinks_viewers_and_durations(planned):
    sc = load_scenario(planned["pss"].files["loadplan.yaml"])
    small = scale(sc, 0.005)
    assert [st.viewers for st in small.stages] == [1, 2, 3, 4, 5, 5]
    assert all(st.duration_s >= MIN_STAGE_S for st in small.stages) and small.stages[-1].duration_s == pytest.approx(18)
    for before, after in zip(sc.drills, small.drills):
        if before.at_s is not None:
            assert after.at_s == pytest.approx(before.at_s * 18 / 3600)
    assert sum(groups(small, 5).values()) == 5
    with pytest.raises(ScenarioError, match="scale"):
        scale(sc, 2.0)


def test_engine_guard_still_refuses_an_unscaled_run(planned, tmp_path):
    sc = load_scenario(planned["ch"].files["loadplan.yaml"])  # 200,000 viewers
    with pytest.raises(LoadTestRefused, match=r"stages\.0: .*200000|stages\.0: 40000 viewers"):
        run_scenario(sc, tmp_path)
    assert not list(tmp_path.iterdir())  # refused before anything started
    # the CLI says the same and exits 2
    out = subprocess.run([sys.executable, "-m", "flowcast.cli", "loadtest", "--scenario", str(planned["ch"].files["loadplan.yaml"]),
                          "--out", str(tmp_path / "r")], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "stages.0" in out.stderr and "--scale" in out.stderr


ONE_RUNG = """
stream: pss
ladder:
  rungs:
    - {name: 360p, width: 640, height: 360, video_bitrate_kbps: 600, profile: main, level: "3.0"}
"""


@pytest.mark.slow
def test_scaled_planner_scenario_runs_live(planned, tmp_path, monkeypatch):
    """The planner's soak stage scaled to 5 viewers x 18 s, with its automated drills, run by
    `flowcast loadtest --scenario` against a live `flowcast up` (one rung to spare the CPU)."""
    monkeypatch.setenv("FLOWCAST_TELEMETRY_ADMIN_TOKEN", "scenario-test-admin-token")  # chaos drills need it; not in any file
    sc = load_scenario(planned["pss"].files["loadplan.yaml"])
    soak = sc.model_copy(update={"stages": sc.stages[-1:], "drills": tuple(d.model_copy(update={"stage": 0}) for d in sc.drills)})
    path = tmp_path / "soak.yaml"
    path.write_text(dump_scenario(parse_scenario(soak.model_dump(mode="json"))))
    cfg = tmp_path / "one_rung.yaml"
    cfg.write_text(ONE_RUNG)
    live = LiveProcess(tmp_path, "--config", str(cfg))
    try:
        live.wait_ready("/live/pss/master.m3u8", timeout=60)
        time.sleep(3.0)
        t0 = time.monotonic()
        run = subprocess.run(
            [sys.executable, "-m", "flowcast.cli", "loadtest", "--scenario", str(path), "--scale", "0.005",
             "--port", str(live.port), "--origin-pid", str(live.proc.pid), "--out", str(tmp_path / "report")],
            capture_output=True, text=True, timeout=180, env=os.environ.copy(),
        )
        elapsed = time.monotonic() - t0
    finally:
        live.stop()
    assert run.returncode in (0, 1), run.stderr
    doc = json.loads((tmp_path / "report" / "scenario_report.json").read_text())
    (stage,) = doc["stages"]
    assert stage["viewers"] == 5 and stage["duration_s"] == pytest.approx(18) and stage["sessions"] == 5
    assert elapsed < 120, elapsed
    rows = []
    for g in stage["groups"]:
        assert g["error"] is None, g
        rep = json.loads((tmp_path / "report" / g["report"]).read_text())
        assert rep["run"]["protocol"] == g["protocol"] and rep["run"]["profile"] == g["profile"]
        assert len(rep["viewers"]) == g["viewers"]
        if g["profile"] == "loopback":  # the unimpaired viewers really played
            assert all(r["startup_time_ms"] is not None for r in rep["viewers"]), rep["viewers"]
        rows += rep["viewers"]
    assert sum(g["viewers"] for g in stage["groups"]) == 5 and len(rows) == 5
    assert {g["protocol"] for g in stage["groups"]} == {"ll-hls", "ll-dash"}
    # the scenario's verdicts are the raw rows judged against its targets
    v = {x["criterion"]: x for x in doc["verdicts"]}
    startups = sorted(r["startup_time_ms"] if r["startup_time_ms"] is not None else float("inf") for r in rows)
    p95 = startups[min(len(startups) - 1, int(0.95 * len(startups)))]
    assert v["startup time p95"]["measured"] == (p95 if p95 != float("inf") else "viewers that never started")
    assert v["startup time p95"]["verdict"] == ("PASS" if p95 <= 2000 else "FAIL")
    errors = sum(1 for r in rows if r["error_code"])
    assert v["critical player errors"]["measured"] == errors
    assert v["MOS"]["verdict"] == "n/a"
    # every planned drill is in the report: automated ones fired, the others listed as planned
    by_name = {d["name"]: d for d in doc["drills"]}
    for d in sc.drills:
        assert d.name in by_name, d.name
        if d.status == "automated":
            assert by_name[d.name]["verdict"] in ("PASS", "FAIL", "n/a") and by_name[d.name]["fired_at"], by_name[d.name]
        else:
            assert by_name[d.name]["verdict"] == "not-automated"
    md = (tmp_path / "report" / "scenario_report.md").read_text()
    assert "startup time p95" in md and "encoder-kill" in md
    assert "scenario-test-admin-token" not in (tmp_path / "report" / "scenario_report.json").read_text()
    assert run.stdout.strip().splitlines()[-1].startswith("report")


from hypothesis import given
from hypothesis import strategies as st


@given(st.integers(min_value=1, max_value=5000),
       st.lists(st.floats(min_value=0.01, max_value=1.0), min_size=1, max_size=12))
def test_split_viewers_is_a_fair_partition(viewers, weights):
    from flowcast.loadtest.scenario import split_viewers

    total = sum(weights)
    shares = {(f"p{i}", "loopback"): w / total for i, w in enumerate(weights)}
    out = split_viewers(viewers, shares)
    assert sum(out.values()) == viewers
    for k, n in out.items():  # largest remainder: each group within one of its exact share
        assert abs(n - viewers * shares[k]) < 1 + 1e-9


def test_scale_one_is_identity(planned):
    sc = load_scenario(planned["pss"].files["loadplan.yaml"])
    assert scale(sc, 1.0) == sc
