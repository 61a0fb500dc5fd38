"""Load and chaos scenario files: what `flowcast plan` writes and `flowcast loadtest --scenario` runs.

A scenario is the acceptance test of a deployment written down: a viewer ramp in stages,
the protocol mix and network profiles of the audience, the chaos drills, and the targets
the run is judged against. Example (YAML)::

    scenario: 1
    pipeline: pss
    target: {stream: pss, port: 8080}
    stages:                       # run one after the other; viewers join over ramp_up_s
      - {viewers: 200, duration_s: 600}
      - {viewers: 1000, duration_s: 3600}
    protocol_mix: {ll-hls: 0.7, ll-dash: 0.3}
    network_profiles: {loopback: 0.6, 4g: 0.3, 3g-lossy: 0.1}   # names of loadtest.profiles
    drills:
      - {name: publication-stall, stage: 1, at_s: 1800, params: {seconds: 4}}
      - {name: encoder-kill, status: not-automated, note: "..."}
    acceptance: {startup_p95_ms: 2000, rebuffer_ratio_max: 0.005, latency_p95_ms: 3000}

Each stage runs one `run_loadtest` per (protocol, profile) group at the same time, viewers
split by the shares (largest remainder). A drill is `automated` only if the engine has it
(`loadtest.drills.DRILLS`); anything else must say `status: not-automated` and is listed in
the report as planned, never silently skipped. `scale(scenario, f)` shrinks viewer counts
and durations for a small machine; the engine's guard still refuses what it cannot run.
"""

from __future__ import annotations

import json
import math
import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from flowcast.loadtest import drills as drill_engine
from flowcast.loadtest import guard
from flowcast.loadtest.profiles import PROFILES, Ramp
from flowcast.loadtest.report import quantile, rebuffer_ratio

__all__ = [
    "MIN_STAGE_S", "Scenario", "ScenarioError", "ScenarioReport", "load_scenario", "parse_scenario",
    "run_scenario", "scale", "split_viewers",
]

Protocol = Literal["ll-hls", "hls", "ll-dash"]
MIN_STAGE_S = 15.0  # a scaled stage still lasts long enough for startup plus a few segments
ADMIN_TOKEN_ENV = "FLOWCAST_TELEMETRY_ADMIN_TOKEN"  # chaos drills authenticate with it (never in the file)


class ScenarioError(ValueError):
    """A scenario that cannot be run; the message names each bad field and what is allowed."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Target(_Model):
    stream: str = Field(default="live", pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
    port: int = Field(default=8080, ge=1, le=65535)


class Stage(_Model):
    viewers: int = Field(ge=1, description="concurrent viewers at the stage's plateau")
    duration_s: float = Field(gt=0, le=guard.MAX_DURATION_S)
    ramp_up_s: float | None = Field(default=None, ge=0, description="default: loadtest.profiles.Ramp.default")
    name: str = ""


class Drill(_Model):
    name: str = Field(min_length=1)
    status: Literal["automated", "not-automated"] = "automated"
    stage: int = Field(default=0, ge=0, description="index into stages")
    at_s: float | None = Field(default=None, ge=0, description="offset in the stage")
    params: dict[str, Any] = Field(default_factory=dict)
    note: str = ""

    @model_validator(mode="after")
    def _runnable(self) -> "Drill":
        if self.status == "automated":
            if self.name not in drill_engine.DRILLS:
                raise ValueError(
                    f"drill {self.name!r} is not one the engine runs (automated: {', '.join(drill_engine.DRILLS)}); "
                    "list it with status: not-automated"
                )
            if self.at_s is None:
                raise ValueError("at_s is required for an automated drill")
        return self


class Acceptance(_Model):
    startup_p95_ms: float = Field(default=2000.0, gt=0)
    rebuffer_ratio_max: float = Field(default=0.005, ge=0, le=1)
    latency_p95_ms: float | None = Field(default=3000.0, gt=0, description="near-live modes; None for broadcast")
    critical_errors_max: int = Field(default=0, ge=0)
    mos_min: float | None = Field(default=None, ge=1, le=5, description="reported as not measured: the engine has no MOS model")


def _shares(name: str, d: dict[str, float]) -> dict[str, float]:
    if not d:
        raise ValueError(f"{name} must list at least one entry")
    if any(v < 0 for v in d.values()):
        raise ValueError(f"{name} shares must be >= 0")
    total = sum(d.values())
    if abs(total - 1.0) > 0.01:
        raise ValueError(f"{name} shares must add up to 1.0, got {total:g}")
    return d


class Scenario(_Model):
    scenario: Literal[1] = 1
    pipeline: str = Field(default="live", min_length=1)
    target: Target = Target()
    stages: tuple[Stage, ...] = Field(min_length=1)
    protocol_mix: dict[Protocol, float]
    network_profiles: dict[str, float]
    drills: tuple[Drill, ...] = ()
    acceptance: Acceptance = Acceptance()
    notes: tuple[str, ...] = ()

    @field_validator("protocol_mix")
    @classmethod
    def _mix(cls, v: dict[str, float]) -> dict[str, float]:
        return _shares("protocol_mix", v)

    @field_validator("network_profiles")
    @classmethod
    def _profiles(cls, v: dict[str, float]) -> dict[str, float]:
        unknown = [k for k in v if k not in PROFILES]
        if unknown:
            raise ValueError(f"unknown network profile {unknown[0]!r} (allowed: {', '.join(PROFILES)})")
        return _shares("network_profiles", v)

    @model_validator(mode="after")
    def _drills_fit(self) -> "Scenario":
        for i, d in enumerate(self.drills):
            if d.stage >= len(self.stages):
                raise ValueError(f"drills.{i}.stage: {d.stage} is past the last stage ({len(self.stages) - 1})")
            if d.at_s is not None and d.at_s >= self.stages[d.stage].duration_s:
                raise ValueError(f"drills.{i}.at_s: {d.at_s:g} s is not within stage {d.stage} ({self.stages[d.stage].duration_s:g} s)")
        return self


def _field(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in loc if p != "[key]") or "(top level)"


def parse_scenario(raw: Any) -> Scenario:
    """Validate a scenario mapping; each error line is `dotted.field: what is wrong`."""
    if not isinstance(raw, dict):
        raise ScenarioError("a scenario must be a YAML mapping at the top level")
    try:
        return Scenario.model_validate(raw)
    except ValidationError as exc:
        lines = []
        for e in exc.errors():
            msg = e["msg"].removeprefix("Value error, ")
            if e["type"] == "extra_forbidden":
                msg = "unknown field (not in the scenario schema; check spelling)"
            ctx = e.get("ctx") or {}
            allowed = f" (allowed: {ctx['expected']})" if "expected" in ctx and str(ctx["expected"]) not in msg else ""
            where = _field(e["loc"])
            if where == "(top level)" and re.match(r"^[\w.]+: ", msg):  # a cross-field check names its field itself
                where, msg = msg.split(": ", 1)
            lines.append(f"{where}: {msg}{allowed}")
        raise ScenarioError("invalid scenario:\n  " + "\n  ".join(lines)) from None


def load_scenario(path: str | Path) -> Scenario:
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise ScenarioError(f"cannot read scenario {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ScenarioError(f"{path}: not valid YAML: {exc}") from None
    return parse_scenario(raw)


def dump_scenario(sc: Scenario, header: str = "") -> str:
    """YAML text of a scenario (what the planner writes); round-trips through parse_scenario."""
    body = yaml.safe_dump(sc.model_dump(mode="json", exclude_defaults=False), sort_keys=False, allow_unicode=True)
    return (header if header.endswith("\n") or not header else header + "\n") + body


def scale(sc: Scenario, factor: float) -> Scenario:
    """Viewers x factor (at least 1), durations x factor (at least MIN_STAGE_S, at most the
    original); drill offsets move with their stage. factor 1 leaves the scenario as is."""
    if not (0 < factor <= 1):
        raise ScenarioError(f"scale must be within (0, 1], got {factor}")
    if factor == 1:
        return sc
    stages, ratio = [], []
    for st in sc.stages:
        dur = min(st.duration_s, max(MIN_STAGE_S, st.duration_s * factor))
        ratio.append(dur / st.duration_s)
        ramp = None if st.ramp_up_s is None else st.ramp_up_s * dur / st.duration_s
        stages.append(st.model_copy(update={"viewers": max(1, round(st.viewers * factor)), "duration_s": dur, "ramp_up_s": ramp}))
    drills = [d.model_copy(update={"at_s": None if d.at_s is None else d.at_s * ratio[d.stage]}) for d in sc.drills]
    notes = (*sc.notes, f"scaled by {factor:g}: viewers x {factor:g} (>= 1), durations x {factor:g} (>= {MIN_STAGE_S:g} s)")
    return parse_scenario(sc.model_copy(update={"stages": tuple(stages), "drills": tuple(drills), "notes": notes}).model_dump(mode="json"))


def split_viewers(viewers: int, shares: dict[tuple[str, str], float]) -> dict[tuple[str, str], int]:
    """Largest-remainder split of `viewers` over groups; groups that get 0 are left out."""
    exact = {k: viewers * s for k, s in shares.items()}
    out = {k: math.floor(v) for k, v in exact.items()}
    left = viewers - sum(out.values())
    for k in sorted(exact, key=lambda k: (-(exact[k] - out[k]), -shares[k]))[:left]:
        out[k] += 1
    return {k: n for k, n in out.items() if n > 0}


def groups(sc: Scenario, viewers: int) -> dict[tuple[str, str], int]:
    shares = {(p, n): ps * ns for p, ps in sc.protocol_mix.items() for n, ns in sc.network_profiles.items() if ps * ns > 0}
    return split_viewers(viewers, shares)


# ---- running -------------------------------------------------------------------------------

@dataclass
class ScenarioReport:
    out_dir: Path
    json_path: Path
    md_path: Path
    stages: list[dict[str, Any]]
    verdicts: list[dict[str, Any]]
    drills: list[dict[str, Any]] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(v["verdict"] != "FAIL" for v in self.verdicts) and all(d.get("verdict") != "FAIL" for d in self.drills)


def _verdicts(acc: Acceptance, rows: list[dict[str, Any]], low_latency: bool) -> list[dict[str, Any]]:
    """The scenario's own targets, judged from the raw viewer rows of a stage (report.py maths)."""
    startups = [v["startup_time_ms"] for v in rows if v["startup_time_ms"] is not None]
    never = sum(v["startup_time_ms"] is None for v in rows)
    st95 = quantile(startups + [math.inf] * never, 0.95) if rows else None  # a viewer that never started counts as infinitely slow
    reb = rebuffer_ratio(sum(v["rebuffer_ms"] for v in rows), sum(v["play_time_ms"] for v in rows))
    lat = [x for v in rows if v["protocol"] in ("ll-hls", "ll-dash") for x in v["latency_ms"]]
    lat95 = quantile(lat, 0.95)
    errors = sum(1 for v in rows if v["error_code"])

    def v(criterion: str, threshold: str, measured: Any, ok: bool | None) -> dict[str, Any]:
        return {"criterion": criterion, "threshold": threshold, "measured": measured,
                "verdict": {True: "PASS", False: "FAIL", None: "n/a"}[ok]}

    out = [
        v("startup time p95", f"<= {acc.startup_p95_ms:g} ms", st95 if st95 is None or math.isfinite(st95) else "viewers that never started",
          None if st95 is None else st95 <= acc.startup_p95_ms),
        v("rebuffer ratio", f"<= {acc.rebuffer_ratio_max:g}", reb, None if reb is None else reb <= acc.rebuffer_ratio_max),
    ]
    if acc.latency_p95_ms is not None:
        out.append(v("latency p95 (near-live viewers)", f"< {acc.latency_p95_ms:g} ms", lat95,
                     None if lat95 is None or not low_latency else lat95 < acc.latency_p95_ms))
    out.append(v("critical player errors", f"<= {acc.critical_errors_max}", errors, errors <= acc.critical_errors_max))
    if acc.mos_min is not None:
        out.append(v("MOS", f">= {acc.mos_min:g}", "not measured (the engine has no MOS model)", None))
    return out


def _url(sc: Scenario, protocol: str, port: int | None) -> str:
    manifest = "manifest.mpd" if protocol == "ll-dash" else "master.m3u8"
    return f"http://127.0.0.1:{port or sc.target.port}/live/{sc.target.stream}/{manifest}"


def _engine_drill(d: Drill, base_url: str, target_duration_s: float) -> drill_engine.Drill:
    params = dict(d.params)
    fields = getattr(drill_engine.DRILLS[d.name], "__dataclass_fields__", {})
    if "origin_url" in fields:
        params.setdefault("origin_url", base_url)
    if "token" in fields and os.environ.get(ADMIN_TOKEN_ENV):
        params.setdefault("token", os.environ[ADMIN_TOKEN_ENV])  # from the environment, never the file
    if "target_duration_s" in fields:
        params.setdefault("target_duration_s", target_duration_s)
    try:
        return drill_engine.make_drill(d.name, at_s=float(d.at_s or 0.0), **params)
    except drill_engine.DrillError as exc:
        raise ScenarioError(str(exc)) from None


def run_scenario(
    sc: Scenario,
    out_dir: str | Path,
    *,
    port: int | None = None,
    origin_pid: int | None = None,
    target_duration_s: float = 2.0,
) -> ScenarioReport:
    """Run every stage (groups side by side, stages one after the other) and write
    scenario_report.json / .md plus one engine report per group under stage_<i>/.
    Raises ScenarioError or guard.LoadTestRefused before anything starts when a stage is
    beyond this machine (scale it first)."""
    out = Path(out_dir)
    plan: list[dict[tuple[str, str], int]] = []
    for i, st in enumerate(sc.stages):
        try:
            guard.check_size(st.viewers, st.duration_s)  # all of a stage's groups run at once
        except guard.LoadTestRefused as exc:
            raise guard.LoadTestRefused(f"stages.{i}: {exc} (use --scale)") from None
        plan.append(groups(sc, st.viewers))
    base_url = f"http://127.0.0.1:{port or sc.target.port}"
    engine = [(i, d, _engine_drill(d, base_url, target_duration_s)) for i, d in enumerate(sc.drills) if d.status == "automated"]

    from flowcast.loadtest.runner import TOP_RENDITION_BPS, plan_workers, run_loadtest

    # Pre-flight with the engine's own checks, so a group that would be refused stops the whole
    # scenario before any viewer starts (run_loadtest repeats them for itself).
    loopback_bps = guard.measure_loopback()
    for i, grp in enumerate(plan):
        for (protocol, profile), n in grp.items():
            guard.loopback_only(_url(sc, protocol, port))
            down = PROFILES[profile].down_kbps
            per_viewer = min(TOP_RENDITION_BPS, (down or 10**9) * 1000)
            try:
                guard.check_bandwidth(n, per_viewer, loopback_bps, plan_workers(n, None))
            except guard.LoadTestRefused as exc:
                raise guard.LoadTestRefused(f"stages.{i} ({protocol}, {profile}): {exc} (use --scale)") from None

    stage_results: list[dict[str, Any]] = []
    verdicts: list[dict[str, Any]] = []
    drill_results: list[dict[str, Any]] = []
    for si, (st, grp) in enumerate(zip(sc.stages, plan)):
        ramp = Ramp(up_s=st.ramp_up_s, down_s=min(5.0, 0.1 * st.duration_s)) if st.ramp_up_s is not None else Ramp.default(st.duration_s)
        reports: dict[tuple[str, str], Any] = {}
        errors: dict[tuple[str, str], str] = {}
        # drills hit the whole origin, so they fire once, from the stage's largest group
        owner = max(grp, key=lambda k: grp[k]) if grp else None

        def one(key: tuple[str, str], n: int) -> None:
            protocol, profile = key
            mine = [e for _, d, e in engine if d.stage == si] if key == owner else []
            try:
                reports[key] = run_loadtest(
                    _url(sc, protocol, port), n, st.duration_s, profile, protocol,
                    out / f"stage_{si}" / f"{protocol}_{profile}", origin_pid=origin_pid, ramp=ramp, drills=mine,
                )
            except Exception as exc:  # noqa: BLE001 - reported per group; the other groups' results stand
                errors[key] = f"{type(exc).__name__}: {exc}"

        threads = [threading.Thread(target=one, args=(k, n)) for k, n in grp.items()]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        rows = [r for rep in reports.values() for r in rep.viewers]
        low = any(p in ("ll-hls", "ll-dash") for p, _ in grp)
        sv = _verdicts(sc.acceptance, rows, low)
        if errors:
            sv.append({"criterion": "groups ran", "threshold": "all", "measured": errors, "verdict": "FAIL"})
        for v in sv:
            verdicts.append({"stage": si, **v})
        stage_drills = []
        for rep in reports.values():
            stage_drills += json.loads(rep.json_path.read_text()).get("drills", [])
        drill_results += [{"stage": si, **d} for d in stage_drills]
        stage_results.append({
            "stage": si, "name": st.name, "viewers": st.viewers, "duration_s": st.duration_s,
            "groups": [{"protocol": p, "profile": n, "viewers": grp[(p, n)],
                        "report": str(reports[(p, n)].json_path.relative_to(out)) if (p, n) in reports else None,
                        "error": errors.get((p, n))} for p, n in grp],
            "sessions": len(rows),
        })
    planned = [{"stage": d.stage, "name": d.name, "verdict": "not-automated", "note": d.note}
               for d in sc.drills if d.status == "not-automated"]
    out.mkdir(parents=True, exist_ok=True)
    doc = {"scenario": sc.model_dump(mode="json"), "stages": stage_results, "verdicts": verdicts,
           "drills": drill_results + planned}
    doc["passed"] = all(v["verdict"] != "FAIL" for v in verdicts) and all(d.get("verdict") != "FAIL" for d in drill_results)
    json_path = out / "scenario_report.json"
    json_path.write_text(json.dumps(doc, indent=1, default=str))
    md_path = out / "scenario_report.md"
    md_path.write_text(_markdown(sc, doc))
    return ScenarioReport(out, json_path, md_path, stage_results, verdicts, drill_results + planned)


def _markdown(sc: Scenario, doc: dict[str, Any]) -> str:
    s = f"# Load and chaos scenario: {sc.pipeline}\n\n**{'PASS' if doc['passed'] else 'FAIL'}**\n\n"
    s += "".join(f"- {n}\n" for n in sc.notes)
    s += "\n| stage | criterion | threshold | measured | verdict |\n|---|---|---|---|---|\n"
    s += "".join(f"| {v['stage']} | {v['criterion']} | {v['threshold']} | {v['measured']} | {v['verdict']} |\n" for v in doc["verdicts"])
    s += "\n| stage | drill | verdict | note |\n|---|---|---|---|\n"
    s += "".join(f"| {d['stage']} | {d['name']} | {d['verdict']} | {d.get('note') or d.get('expectation', '')} |\n" for d in doc["drills"])
    s += "\n| stage | protocol | profile | viewers | report |\n|---|---|---|---|---|\n"
    s += "".join(f"| {st['stage']} | {g['protocol']} | {g['profile']} | {g['viewers']} | {g['report'] or g['error']} |\n"
                 for st in doc["stages"] for g in st["groups"])
    return s
