"""`run_loadtest`: check the request, spread the viewers over worker processes, sample the
origin from /proc while they run, and write the report."""

from __future__ import annotations

import math
import os
import time
from concurrent.futures import ProcessPoolExecutor, wait
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from flowcast.loadtest import guard
from flowcast.loadtest.drills import Drill, due
from flowcast.loadtest.procstats import TreeSampler, flowcast_groups, tree
from flowcast.loadtest.profiles import PROFILES, Ramp, get_profile
from flowcast.loadtest.report import Report, active_series, quantile, summarise, write_report
from flowcast.loadtest.worker import WorkerPlan, worker_main

TOP_RENDITION_BPS = 2_846_000  # the default ladder's 720p BANDWIDTH (what a viewer pulls on loopback)
VIEWERS_PER_WORKER = 100
START_DELAY_S = 2.0  # spawn + import time of the workers, so every viewer joins on schedule
GRACE_S = 30.0
SATURATED_LAG_MS = 50.0  # after the run's end, how long to wait for workers before giving up


def plan_workers(viewers: int, workers: int | None) -> int:
    cores = os.cpu_count() or 1
    n = workers or min(cores, max(1, math.ceil(viewers / VIEWERS_PER_WORKER)))
    return max(1, min(n, viewers, 2 * cores))


def run_loadtest(
    target_url: str,
    viewers: int,
    duration: float,
    profile: str,
    protocol: str,
    out_dir: str | Path,
    origin_pid: int | None = None,
    *,
    ramp: Ramp | None = None,
    workers: int | None = None,
    seed: int = 1,
    drills: list[Drill] | tuple[Drill, ...] = (),
    netns: Any = None,
) -> Report:
    """Run `viewers` virtual viewers of `protocol` ("ll-hls", "hls", "ll-dash") for `duration`
    seconds through network `profile` (see profiles.PROFILES) against `target_url` (the
    multivariant playlist or the MPD on 127.0.0.1), and write report.json, report.html and
    PNG charts to `out_dir`. Raises guard.LoadTestRefused before starting anything when the
    target is not loopback or the run is beyond this machine.

    `drills` (drills.py) fire at their offsets from the run's start and are judged from the
    per-viewer rows; `netns` (netns.Namespace, set up by the caller) runs the viewers inside
    that network namespace, reaching the origin over its veth pair: the namespace applies
    its impairment on the kernel's path, and the relay only what it leaves
    (netns.relay_part: connection resets, and delay when the namespace does not delay)."""
    target = guard.loopback_only(target_url)
    guard.check_size(viewers, duration)
    if protocol not in guard.PROTOCOLS:
        raise guard.LoadTestRefused(f"protocol must be one of {', '.join(guard.PROTOCOLS)}, got {protocol!r}")
    try:
        net = get_profile(profile)
    except ValueError as exc:
        raise guard.LoadTestRefused(str(exc)) from None
    ramp = ramp or Ramp.default(duration)
    try:
        windows = [ramp.window(i, viewers, duration) for i in range(viewers)]
    except ValueError as exc:
        raise guard.LoadTestRefused(str(exc)) from None
    for d in drills:
        if not 0 <= d.at_s < duration:
            raise guard.LoadTestRefused(f"drill {d.name}: at_s must be within the run (0..{duration} s), got {d.at_s}")
    n_workers = plan_workers(viewers, workers)
    per_viewer = min(TOP_RENDITION_BPS, (net.down_kbps or 10**9) * 1000)
    loopback_bps = guard.measure_loopback()
    guard.check_bandwidth(viewers, per_viewer, loopback_bps, n_workers)

    link = net
    if netns is not None:
        from flowcast.loadtest.netns import relay_part  # noqa: PLC0415 - Linux-only, namespace runs only

        link = relay_part(net, netns.impairment)
    start_wall = time.time() + START_DELAY_S
    plans = [
        WorkerPlan(
            host=netns.host_ip if netns is not None else target.host,
            netns=netns.name if netns is not None else None,
            port=target.port,
            path=target.path,
            protocol=protocol,
            profile=net.name,
            link=link,
            start_wall=start_wall,
            windows=tuple((i, *windows[i]) for i in range(w, viewers, n_workers)),
            seed=seed * 1000 + w,
        )
        for w in range(n_workers)
    ]
    groups: dict[str, object] = {}
    if origin_pid is not None:
        groups.update(flowcast_groups(origin_pid))
    own = os.getpid()
    groups["generator"] = lambda: [p for p in tree(own) if p != own]
    sampler = TreeSampler(start_wall, groups)
    results: list[dict[str, Any]] = []
    drills = list(drills)
    fired: dict[int, float] = {}
    fire_details: dict[int, dict[str, Any]] = {}
    with ProcessPoolExecutor(max_workers=n_workers, mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(worker_main, p) for p in plans]
        deadline = start_wall + duration + GRACE_S
        while time.time() < deadline:
            sampler.sample()
            for i in due(drills, fired, start_wall):
                fired[i] = time.time()
                try:
                    fire_details[i] = drills[i].fire()
                except Exception as exc:  # noqa: BLE001 - a drill that failed to fire is reported, the run goes on
                    fire_details[i] = {"error": f"{type(exc).__name__}: {exc}"}
                    fired[i] = float("nan")
            pending_drills = [start_wall + d.at_s - time.time() for i, d in enumerate(drills) if i not in fired]
            done, pending = wait(futures, timeout=max(0.05, min([1.0, *pending_drills])))
            if not pending:
                break
        for f in futures:
            results.append(f.result(timeout=max(0.1, deadline - time.time())))
    seconds = int(math.ceil(duration))
    viewers_rows = sorted((v for r in results for v in r["viewers"]), key=lambda v: v["viewer_index"])
    req: dict[int, int] = {}
    byt: dict[int, int] = {}
    for r in results:
        for k, v in r["requests"].items():
            req[int(k)] = req.get(int(k), 0) + v
        for k, v in r["bytes"].items():
            byt[int(k)] = byt.get(int(k), 0) + v
    lags = [x for r in results for x in r["loop_lag_ms"]]
    relay = {k: sum(r["relay"][k] for r in results) for k in ("dropped_connections", "lost_packets")}
    data: dict[str, Any] = {
        "run": {
            "target_url": target_url,
            "viewers": viewers,
            "duration_s": duration,
            "profile": net.name,
            "network": net.as_dict(),
            "protocol": protocol,
            "ramp": {"up_s": ramp.up_s, "down_s": ramp.down_s},
            "workers": n_workers,
            "http_client": "flowcast.loadtest.http (asyncio streams, HTTP/1.1 keep-alive)",
            "start_ts": start_wall,
            "origin_pid": origin_pid,
            "loopback_capacity_bps": round(loopback_bps),
            "known_profiles": list(PROFILES),
        },
        "summary": summarise(viewers_rows),
        "generator": {
            "loop_lag_p95_ms": quantile(lags, 0.95),
            "loop_lag_max_ms": max(lags) if lags else None,
            # a worker loop late by more than a tenth of a part target delays every viewer's
            # reads: stalls and startup then partly measure the generator, not the origin
            "saturated": (quantile(lags, 0.95) or 0.0) > SATURATED_LAG_MS,
            "relay": relay,
            "relay_link": link.as_dict(),  # what of the profile the relay applied
        },
        "timeseries": {
            "requests_per_s": [req.get(i, 0) for i in range(seconds)],
            "bytes_per_s": [byt.get(i, 0) for i in range(seconds)],
            "active_viewers": active_series(viewers_rows, start_wall, seconds),
        },
        "processes": {k: vars(s) for k, s in sampler.series.items()},
        "viewers": viewers_rows,
    }
    if netns is not None:
        data["run"]["netns"] = netns.describe()
    if drills:
        outcomes = []
        for i, d in enumerate(drills):
            at = fired.get(i)
            at = None if at is None or at != at else at  # NaN: it failed to fire
            res = d.judge(viewers_rows, at, fire_details.get(i, {}))
            res.measured.update({f"fire_{k}": v for k, v in fire_details.get(i, {}).items()})
            outcomes.append(res.as_dict())
        data["drills"] = outcomes
    return write_report(Path(out_dir), data)
