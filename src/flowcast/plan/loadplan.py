"""The pack's load and chaos plan as a `flowcast loadtest --scenario` file.

Rules (each also written into the scenario's notes):
- Ramp: the planned peak of HTTP viewers in 5 steps of 10 minutes (20 % .. 100 %), then a
  1-hour soak at the peak.
- Protocol mix, near-live: LL-HLS for the mobile + tablet share (iOS-heavy assumption) plus
  half of the rest, LL-DASH for the other half; broadcast: HLS (the engine has no plain-DASH
  viewer).
- Network profiles: fiber -> loopback, Wi-Fi -> 80 % loopback + 20 % wifi-congested, 4G -> 4g,
  3G -> 3g-lossy (loadtest.profiles).
- Drills the engine runs (loadtest.drills.DRILLS) are automated during the soak; the rest of
  the runbooks' incidents are listed with status not-automated.

The scenario is validated by flowcast.loadtest.scenario before it is written.
"""

from __future__ import annotations

from flowcast.loadtest import drills as engine
from flowcast.loadtest.scenario import Scenario, dump_scenario, parse_scenario
from flowcast.plan.decide import Plan

STEPS = (0.2, 0.4, 0.6, 0.8, 1.0)
STEP_S = 600.0
SOAK_S = 3600.0
MOS_MIN = 4.0  # "good" on the 5-point ACR scale (ITU-T P.800 / P.1203 output)
NETWORK_PROFILE = {"fiber": {"loopback": 1.0}, "wifi": {"loopback": 0.8, "wifi-congested": 0.2},
                   "4g": {"4g": 1.0}, "3g": {"3g-lossy": 1.0}}


def _normalise(d: dict[str, float]) -> dict[str, float]:
    d = {k: round(v, 4) for k, v in d.items() if v > 0}
    top = max(d, key=lambda k: d[k])
    d[top] = round(d[top] + 1.0 - sum(d.values()), 4)
    return d


def scenario_for(plan: Plan) -> Scenario:
    b = plan.brief
    a = b.inputs.audience
    dist = plan.distribution
    peak = max(1, a.peak_concurrent_viewers) if dist else 10
    stages = [{"name": f"ramp {int(f * 100)}%", "viewers": max(1, round(peak * f)), "duration_s": STEP_S, "ramp_up_s": 60.0}
              for f in STEPS]
    stages.append({"name": "soak", "viewers": peak, "duration_s": SOAK_S, "ramp_up_s": 60.0})
    soak = len(stages) - 1
    if dist is None or dist.mode == "broadcast":
        mix = {"hls": 1.0}
    else:
        apple = a.devices.get("mobile", 0) + a.devices.get("tablet", 0)
        mix = _normalise({"ll-hls": 0.5 + 0.5 * apple, "ll-dash": 0.5 - 0.5 * apple})
    profiles: dict[str, float] = {}
    for net, share in a.networks.items():
        for prof, part in NETWORK_PROFILE[net].items():
            profiles[prof] = profiles.get(prof, 0.0) + share * part
    profiles = _normalise(profiles)

    seg = dist.segment_s.value if dist and dist.segment_s else 2.0
    drills: list[dict[str, object]] = []

    def drill(name: str, at_s: float, params: dict[str, object], note: str) -> None:
        if name in engine.DRILLS:
            drills.append({"name": name, "stage": soak, "at_s": at_s, "params": params, "note": note})
        else:
            drills.append({"name": name, "status": "not-automated", "stage": soak, "note": note + " (the load engine has no such drill yet)"})

    drill("publication-stall", 900.0, {"seconds": 2 * seg}, "encoder crash seen from the origin: publication stops for 2 segments; runbook 'Encoder crash'")
    drills.append({"name": "encoder-kill", "status": "not-automated", "stage": soak,
                   "note": "SIGKILL one FFmpeg encoder; the supervisor restarts it and viewers resume within 2 target durations (tests/loadtest/test_loadtest_live.py does it by hand)"})
    drills.append({"name": "origin-kill", "status": "not-automated", "stage": soak,
                   "note": "engine drill origin-kill needs the PID of the second origin: set params.pid (and origin_id), status automated and at_s"})
    drills.append({"name": "cdn-pathway-block", "status": "not-automated", "stage": soak,
                   "note": "block one CDN pathway; Content Steering moves viewers; runbook 'CDN failover'"})
    if plan.security:
        drill("license-outage", 2400.0, {"seconds": 6.0}, "licence server down for 6 s; licensed viewers keep playing; runbook 'DRM / licence outage'")
        drills.append({"name": "key-rotation", "status": "not-automated", "stage": soak, "note": "rotate the content key mid-soak; runbook 'Key rotation'"})
    if plan.rtc:
        drills.append({"name": "webrtc-session-load", "status": "not-automated", "stage": soak,
                       "note": f"{a.peak_interactive_sessions} concurrent WebRTC / Pixel Streaming sessions: the load engine has HTTP viewers only"})
        drills.append({"name": "turn-exhaustion", "status": "not-automated", "stage": soak, "note": "fill TURN allocations to 100 %; runbook 'TURN exhaustion'"})
    near = plan.mode("near-live")
    acceptance = {"startup_p95_ms": 2000.0, "rebuffer_ratio_max": 0.005,
                  "latency_p95_ms": near.target.value * 1000 if near else None, "critical_errors_max": 0, "mos_min": MOS_MIN}
    notes = [
        f"ramp: planned peak {peak} HTTP viewers in 5 steps of {STEP_S:g} s, then a {SOAK_S:g} s soak",
        "protocol mix: LL-HLS = mobile + tablet share + half of the rest, LL-DASH the other half (near-live); HLS only (broadcast)",
        "network profiles: fiber -> loopback, wifi -> 0.8 loopback + 0.2 wifi-congested, 4g -> 4g, 3g -> 3g-lossy",
        "MOS: target only, reported as not measured (the engine has no MOS model)",
        "run scaled on one machine: flowcast loadtest --scenario <this file> --scale 0.005 --port <flowcast up port>",
    ]
    raw = {"scenario": 1, "pipeline": b.pipeline, "target": {"stream": b.pipeline, "port": 8080}, "stages": stages,
           "protocol_mix": mix, "network_profiles": profiles, "drills": drills, "acceptance": acceptance, "notes": notes}
    return parse_scenario(raw)


def render_loadplan(plan: Plan) -> str:
    return dump_scenario(scenario_for(plan), f"# Load and chaos scenario for pipeline {plan.brief.pipeline!r}, written by `flowcast plan`.\n"
                                               "# Run: flowcast loadtest --scenario <this file> [--scale F] --port <flowcast up port>")
