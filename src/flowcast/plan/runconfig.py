"""The flowcast config the pack ships: what `flowcast up --config` runs on one small machine."""

from __future__ import annotations

from typing import Any

import yaml

from flowcast.config import FlowcastConfig, parse_config
from flowcast.plan.decide import Plan
from flowcast.transcode.ladder import Ladder

LOCAL_MAX_RUNGS = 3
LOCAL_MAX_HEIGHT = 720
LOCAL_ENCODER = "libx264"


def local_ladder(ladder: Ladder) -> Ladder:
    """At most 3 rungs up to 720p: the top one that fits, the bottom one, and one in the middle."""
    fit = [r for r in ladder.rungs if r.height <= LOCAL_MAX_HEIGHT] or [ladder.rungs[-1]]
    if len(fit) > LOCAL_MAX_RUNGS:
        fit = [fit[0], fit[len(fit) // 2], fit[-1]]
    return Ladder(rungs=tuple(fit), audio=ladder.audio)


def local_config(plan: Plan) -> tuple[FlowcastConfig, list[str]]:
    """The validated config and the notes (scale-downs) to print at the top of the file."""
    dist = plan.distribution
    notes = [
        f"flowcast config for pipeline {plan.brief.pipeline!r}, written by `flowcast plan`; run: flowcast up --config <this file>",
        "Scaled to run on one 2-core machine: <= 3 rungs up to 720p with libx264 (veryfast), test source input.",
    ]
    if dist is None:
        notes.append("The brief has only the interactive mode (WebRTC), which this config does not run; it runs the LL-HLS pipeline with the default ladder as a smoke test.")
        raw: dict[str, Any] = {"stream": plan.brief.pipeline, "packaging": {"mode": "low-latency"}}
        return parse_config(raw), notes
    ladder = local_ladder(dist.ladder)
    dropped = [r.name for r in dist.ladder.rungs if r not in ladder.rungs]
    if dropped:
        notes.append(f"Production ladder rungs left out here: {', '.join(dropped)} (see the encoding ladder document).")
    if plan.mode("interactive"):
        notes.append("The interactive mode (WebRTC / Pixel Streaming) is not part of this config.")
    mode = "low-latency" if dist.mode == "near-live" else "broadcast"
    packaging: dict[str, Any] = {"mode": mode, "segment_duration": dist.segment_s.value if dist.segment_s else 6.0}
    if dist.part_s:
        packaging["part_target"] = dist.part_s.value
    dvr = plan.brief.latency_targets.broadcast.dvr_window_s if (mode == "broadcast" and plan.brief.latency_targets.broadcast) else 60.0
    # locally the DVR window is capped at 10 minutes to keep the in-memory store small
    packaging["dvr_window"] = min(dvr, 600.0) if dvr >= 3 * packaging["segment_duration"] else 3 * packaging["segment_duration"]
    raw = {
        "stream": plan.brief.pipeline,
        **_protection(plan, packaging["segment_duration"]),
        "ingest": {"input": "testsrc"},
        "encoder": LOCAL_ENCODER,
        "ladder": ladder.model_dump(mode="json", exclude_none=True),
        "packaging": packaging,
        "origin": {"host": "127.0.0.1", "port": 8080, "workers": 1},
        "data_dir": "data",
    }
    return parse_config(raw), notes


def render_config(plan: Plan) -> str:
    cfg, notes = local_config(plan)
    body = yaml.safe_dump(cfg.model_dump(mode="json", exclude_none=True), sort_keys=False)
    return "".join(f"# {n}\n" for n in notes) + body


def _protection(plan: Plan, segment_s: float) -> dict[str, Any]:
    """DRM in the brief -> encryption and signed URLs locally (ClearKey licences stand in for the DRM systems)."""
    sec = plan.security
    if sec is None or "protection" not in FlowcastConfig.model_fields:
        return {}
    return {
        "protection": {
            "scheme": sec.scheme,
            "key_rotation_interval": max(1, round(sec.key_rotation_hours.value * 3600 / segment_s)),
            "require_token": True,
            "token_ttl": max(60, int(sec.signed_url_expiry_s.value)),
        }
    }
