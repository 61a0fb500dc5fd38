"""Chaos drills a load test runs mid-run: each states what should happen, does the damage at
its time, and is judged from the raw per-viewer rows afterwards.

- `origin-kill`: SIGKILL one of two redundant origins; every viewer on it must be playing
  again (from the other pathway / BaseURL) within 2 target durations, the media it gets
  there must continue where the dead origin's stopped (decode times within a frame: nothing
  skipped or repeated, which epoch-locked origins guarantee), and no viewer may stop with an
  error.
- `license-outage`: the ClearKey license endpoint fails for N seconds (the origin's admin
  chaos control); viewers already licensed keep playing until the next key period.
- `publication-stall`: the origin holds publication for S seconds (admin chaos control);
  viewers stall for about S minus their buffer, and all recover.

`DRILLS` maps the names a scenario file or `flowcast loadtest --drill` uses to factories.
The runner calls `fire()` at `start + at_s` from its own process and `judge(rows)` once
the viewers are done.
"""

from __future__ import annotations

import os
import signal
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit

from flowcast.loadtest import guard


class DrillError(ValueError):
    """A drill that cannot run as asked (bad parameters, unknown name)."""


@dataclass
class DrillResult:
    name: str
    expectation: str
    fired_at: float | None
    passed: bool | None  # None: could not be judged (e.g. never fired)
    measured: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return {True: "PASS", False: "FAIL", None: "n/a"}[self.passed]

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "expectation": self.expectation,
            "fired_at": self.fired_at,
            "verdict": self.label,
            "measured": self.measured,
        }


def origin_at(row: dict[str, Any], ts: float) -> str:
    """The origin (pathway / BaseURL id) a viewer was using at wall time `ts`."""
    cur = row.get("origin", "")
    for f in row.get("failovers", []):
        if f["at"] <= ts:
            cur = f["to"]
    return cur


def resumed_after(row: dict[str, Any], ts: float) -> float | None:
    """Seconds from `ts` until the viewer was playing again: media arrived after `ts` and any
    stall that began around `ts` had ended. None: it never played again."""
    arrivals = [f["resumed_at"] for f in row.get("failovers", []) if f["at"] >= ts - 0.5 and f["resumed_at"]]
    if arrivals:
        media = min(arrivals) - ts
    elif row.get("last_media_ts", 0.0) > ts:
        media = 0.0  # kept receiving without needing to switch
    else:
        return None
    stall_end = max(
        ((start + ms / 1000.0) - ts for start, ms in row.get("stalls", []) if start + ms / 1000.0 >= ts - 0.5),
        default=0.0,
    )
    return max(media, stall_end, 0.0)


def failover_media_gap(row: dict[str, Any], ts: float, origin_id: str) -> tuple[float, float] | None:
    """(decode-time gap, frame duration) of the first media a viewer got after leaving
    `origin_id` at or after `ts` (ViewerBase.note_media); None: no such failover was measured."""
    for f in row.get("failovers", []):
        if f["from"] == origin_id and f["at"] >= ts - 0.5 and f.get("media_gap_s") is not None:
            return float(f["media_gap_s"]), float(f.get("frame_s") or 0.0)
    return None


@dataclass
class Drill:
    """Base: `at_s` seconds after the run's start."""

    name = ""
    at_s: float

    @property
    def expectation(self) -> str:
        raise NotImplementedError

    def fire(self) -> dict[str, Any]:
        raise NotImplementedError

    def judge(self, rows: list[dict[str, Any]], fired_at: float | None, details: dict[str, Any]) -> DrillResult:
        raise NotImplementedError


@dataclass
class OriginKill(Drill):
    """SIGKILL the origin process `pid`, which serves pathway / BaseURL `origin_id`."""

    pid: int = 0
    origin_id: str = "origin-1"
    target_duration_s: float = 2.0
    name = "origin-kill"

    def __post_init__(self) -> None:
        if self.pid <= 1:
            raise DrillError("origin-kill: pid must be the PID of a `flowcast up` process")
        if self.pid == os.getpid():
            raise DrillError("origin-kill: refusing to kill the load tester itself")

    @property
    def expectation(self) -> str:
        return (
            f"100% of viewers on the killed origin ({self.origin_id}) play again within 2 target durations "
            f"({2 * self.target_duration_s:g} s) on media that continues the dead origin's within a frame "
            "(nothing skipped or repeated), no viewer stops with an error"
        )

    def fire(self) -> dict[str, Any]:
        os.kill(self.pid, signal.SIGKILL)
        return {"pid": self.pid, "origin": self.origin_id}

    def judge(self, rows: list[dict[str, Any]], fired_at: float | None, details: dict[str, Any]) -> DrillResult:
        limit = 2 * self.target_duration_s
        if fired_at is None:
            return DrillResult(self.name, self.expectation, None, None, {"why": "the drill did not fire"})
        active = [r for r in rows if r["start_ts"] < fired_at < r["end_ts"] and r.get("startup_time_ms") is not None]
        on_it = [r for r in active if origin_at(r, fired_at - 1e-3) == self.origin_id]
        times = [resumed_after(r, fired_at) for r in on_it]
        ok = [t for t in times if t is not None and t <= limit]
        errors = [r["error_code"] for r in rows if r["error_code"]]
        gaps = [failover_media_gap(r, fired_at, self.origin_id) for r in on_it]
        measured_gaps = [g for g in gaps if g is not None]
        continuous = [g for g in measured_gaps if abs(g[0]) <= g[1] + 1e-6]
        measured = {
            "viewers_active": len(active),
            "viewers_on_killed_origin": len(on_it),
            "resumed_within_limit": len(ok),
            "worst_resume_s": max((t for t in times if t is not None), default=None),
            "never_resumed": sum(t is None for t in times),
            "viewers_with_error": len(errors),
            "limit_s": limit,
            "media_continuous": len(continuous),
            "worst_media_gap_s": max((g[0] for g in measured_gaps), key=abs, default=None),
        }
        passed = bool(on_it) and len(ok) == len(on_it) and not errors and len(continuous) == len(on_it)
        return DrillResult(self.name, self.expectation, fired_at, passed, measured)


def _admin_post(base_url: str, path: str, params: dict[str, Any], token: str | None) -> dict[str, Any]:
    """POST to a loopback origin's admin chaos control (the token in a header, never the URL)."""
    u = urlsplit(base_url)
    guard.check_viewer_host(u.hostname or "")
    req = urllib.request.Request(f"{base_url.rstrip('/')}{path}?{urlencode(params)}", method="POST", data=b"")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=5) as resp:  # noqa: S310 - loopback only, checked above
        return {"status": resp.status}


@dataclass
class PublicationStall(Drill):
    """Hold publication for `seconds` (POST /admin/chaos/hold-publication)."""

    origin_url: str = ""
    seconds: float = 4.0
    buffer_s: float = 1.5  # what a viewer holds at the live edge (LL-HLS PART-HOLD-BACK)
    token: str | None = field(default=None, repr=False)
    name = "publication-stall"

    @property
    def expectation(self) -> str:
        return (
            f"a {self.seconds:g} s publication stall causes stalls of about {max(0.0, self.seconds - self.buffer_s):g} s "
            f"(stall minus the {self.buffer_s:g} s buffer) and every viewer recovers without an error"
        )

    def fire(self) -> dict[str, Any]:
        return _admin_post(self.origin_url, "/admin/chaos/hold-publication", {"seconds": self.seconds}, self.token)

    def judge(self, rows: list[dict[str, Any]], fired_at: float | None, details: dict[str, Any]) -> DrillResult:
        if fired_at is None:
            return DrillResult(self.name, self.expectation, None, None, {"why": "the drill did not fire"})
        end = fired_at + self.seconds
        active = [r for r in rows if r["start_ts"] < fired_at and r["end_ts"] > end + 4.0 and r.get("startup_time_ms")]
        stalls = [
            sum(ms for ts, ms in r["stalls"] if fired_at - 0.5 <= ts <= end + 2.0) / 1000.0 for r in active
        ]
        recovered = [r for r in active if r["last_media_ts"] > end + 1.0]
        errors = [r["error_code"] for r in rows if r["error_code"]]
        expected = max(0.0, self.seconds - self.buffer_s)
        median = sorted(stalls)[len(stalls) // 2] if stalls else None
        measured = {
            "viewers_active": len(active),
            "expected_stall_s": expected,
            "median_stall_s": median,
            "max_stall_s": max(stalls, default=None),
            "recovered": len(recovered),
            "viewers_with_error": len(errors),
        }
        # "about": within one second plus a part or two of the expectation
        passed = bool(active) and len(recovered) == len(active) and not errors and median is not None and abs(median - expected) <= 1.5
        return DrillResult(self.name, self.expectation, fired_at, passed, measured)


@dataclass
class LicenseOutage(Drill):
    """The license endpoint answers errors for `seconds` (POST /admin/chaos/license-outage)."""

    origin_url: str = ""
    seconds: float = 6.0
    token: str | None = field(default=None, repr=False)
    name = "license-outage"

    @property
    def expectation(self) -> str:
        return (
            f"during a {self.seconds:g} s license-server outage, viewers already licensed keep playing "
            "(no stall beyond the run's normal, no error) until the next key period"
        )

    def fire(self) -> dict[str, Any]:
        return _admin_post(self.origin_url, "/admin/chaos/license-outage", {"seconds": self.seconds}, self.token)

    def judge(self, rows: list[dict[str, Any]], fired_at: float | None, details: dict[str, Any]) -> DrillResult:
        if fired_at is None:
            return DrillResult(self.name, self.expectation, None, None, {"why": "the drill did not fire"})
        end = fired_at + self.seconds
        licensed = [r for r in rows if r.get("startup_time_ms") is not None and r["start_ts"] < fired_at and r["end_ts"] > end]
        stalled = [r for r in licensed if any(fired_at <= ts <= end for ts, _ in r["stalls"])]
        errors = [r["error_code"] for r in licensed if r["error_code"]]
        kept = [r for r in licensed if r["last_media_ts"] > end - 0.5]
        measured = {
            "viewers_licensed_before": len(licensed),
            "stalled_during_outage": len(stalled),
            "kept_playing": len(kept),
            "viewers_with_error": len(errors),
        }
        passed = bool(licensed) and not stalled and not errors and len(kept) == len(licensed)
        return DrillResult(self.name, self.expectation, fired_at, passed, measured)


DRILLS: dict[str, Callable[..., Drill]] = {
    OriginKill.name: OriginKill,
    PublicationStall.name: PublicationStall,
    LicenseOutage.name: LicenseOutage,
}


def make_drill(name: str, **params: Any) -> Drill:
    """A drill by the name a scenario or the CLI gives; parameters as the class's fields."""
    try:
        factory = DRILLS[name]
    except KeyError:
        raise DrillError(f"unknown drill {name!r}; known: {', '.join(DRILLS)}") from None
    try:
        return factory(**params)
    except TypeError as exc:
        raise DrillError(f"drill {name}: {exc}") from None


def drill_for_target(
    name: str,
    url: str,
    *,
    at_s: float,
    pid: int | None = None,
    origin_id: str = "origin-1",
    seconds: float = 4.0,
    target_duration_s: float = 2.0,
    admin_token: str | None = None,
) -> Drill:
    """The drill `flowcast loadtest --drill NAME` runs against the stream at `url`: an
    origin kill needs the PID to kill; the chaos drills talk to that origin's admin routes."""
    if name == "origin-kill":
        if pid is None:
            raise DrillError("--drill origin-kill needs --drill-pid (or --origin-pid): the origin to kill")
        return make_drill(name, at_s=at_s, pid=pid, origin_id=origin_id, target_duration_s=target_duration_s)
    u = urlsplit(url)
    base = f"{u.scheme}://{u.hostname}:{u.port or 80}"
    return make_drill(name, at_s=at_s, origin_url=base, seconds=seconds, token=admin_token)


def due(drills: list[Drill], fired: dict[int, float], start_wall: float) -> list[int]:
    """Indexes of drills whose time has come and that have not fired yet."""
    now = time.time()
    return [i for i, d in enumerate(drills) if i not in fired and now >= start_wall + d.at_s]
