"""Synthetic player beacons with known distributions, and their ground truth in Python."""

from __future__ import annotations

import json
import random
from collections import defaultdict
from typing import Any

PROTOCOLS = ("ll-hls", "hls", "ll-dash", "dash", "webrtc", "pixel-streaming")
CDNS = ("cloudfront", "fastly", "akamai")
REGIONS = ("sa-east-1", "us-east-1", "eu-west-1", "ap-south-1")


def sessions(n_events: int, t0_ms: int, span_ms: int, seed: int = 7) -> list[dict[str, Any]]:
    """Sessions as {"session": {...}, "events": [...]} until n_events events in total.

    Startup ~ lognormal (median ~900 ms), stall durations ~ exponential (mean 400 ms),
    latency ~ normal per protocol, 2 % of sessions end with an error.
    """
    rnd = random.Random(seed)
    out: list[dict[str, Any]] = []
    total = 0
    s = 0
    while total < n_events:
        proto = rnd.choice(PROTOCOLS)
        sess = {
            "session_id": f"s{s:06d}",
            "user_id": f"user-{s % 997}",
            "protocol": proto,
            "cdn": rnd.choice(CDNS),
            "region": rnd.choice(REGIONS),
            "player_version": rnd.choice(("hls.js 1.7.4", "dash.js 5.2.1", "shaka 5.2.12")),
            "stream_id": rnd.choice(("live", "sports")),
            "codec": rnd.choice(("h264", "h265", "av1")),
            "consent": True,
        }
        start = t0_ms + rnd.randrange(span_ms - 600_000)
        t = start
        events: list[dict[str, Any]] = []

        def add(type_: str, **kw: Any) -> None:
            nonlocal t
            t += rnd.randrange(1, 3000)
            events.append({"event_id": f"{sess['session_id']}-{len(events)}", "type": type_, "ts": t, **kw})

        add("session_start")
        add("startup", startup_time_ms=round(rnd.lognormvariate(6.8, 0.5), 1))
        lat_mu = 300.0 if proto in ("webrtc", "pixel-streaming") else 2000.0
        for _ in range(rnd.randrange(10, 80)):
            r = rnd.random()
            if r < 0.08:
                add("stall", rebuffer_ms=round(rnd.expovariate(1 / 400.0), 2))
            elif r < 0.3:
                add("latency", latency_ms=round(max(1.0, rnd.gauss(lat_mu, lat_mu / 4)), 1))
            elif r < 0.35:
                add("bitrate_switch", avg_bitrate_kbps=rnd.choice((400, 1000, 2500, 4500)))
            else:
                add(
                    "heartbeat",
                    play_time_ms=rnd.randrange(1000, 10_001),
                    avg_bitrate_kbps=float(rnd.choice((400, 1000, 2500, 4500))),
                    dropped_frames=rnd.randrange(0, 5),
                )
        if rnd.random() < 0.02:
            add("error", error_code="MEDIA_ERR_NETWORK")
        add("session_end", play_time_ms=rnd.randrange(0, 5000))
        out.append({"session": sess, "events": events})
        total += len(events)
        s += 1
    return out


def batches(sess: list[dict[str, Any]], size: int = 100) -> list[bytes]:
    """Batches of at most `size` events, one session per batch (as a player sends them)."""
    out = []
    for s in sess:
        ev = s["events"]
        for i in range(0, len(ev), size):
            out.append(json.dumps({"session": s["session"], "events": ev[i : i + size]}).encode())
    return out


def qexact(values: list[float], level: float) -> float:
    """ClickHouse quantileExact: the element at floor(level * n) of the sorted values."""
    v = sorted(values)
    return v[min(len(v) - 1, int(level * len(v)))]


def ground_truth(sess: list[dict[str, Any]], start_ms: int, end_ms: int, group_by: tuple[str, ...] = ()) -> dict:
    g: dict[tuple, dict[str, Any]] = defaultdict(
        lambda: {"sessions": set(), "startup": [], "latency": [], "stalls": 0, "rebuffer": 0.0,
                 "play": 0.0, "bitrate_time": 0.0, "bitrate_play": 0.0, "errors": set(), "dropped": 0}
    )
    for s in sess:
        key = tuple(s["session"][k] for k in group_by)
        for e in s["events"]:
            if not start_ms <= e["ts"] < end_ms:
                continue
            a = g[key]
            sid = s["session"]["session_id"]
            a["sessions"].add(sid)
            t = e["type"]
            if t == "startup":
                a["startup"].append(e["startup_time_ms"])
            elif t == "latency":
                a["latency"].append(e["latency_ms"])
            elif t == "stall":
                a["stalls"] += 1
                a["rebuffer"] += e["rebuffer_ms"]
            elif t == "error":
                a["errors"].add(sid)
            elif t in ("heartbeat", "session_end"):
                a["play"] += e["play_time_ms"]
                a["dropped"] += e.get("dropped_frames", 0)
                if e.get("avg_bitrate_kbps", 0) > 0:
                    a["bitrate_time"] += e["avg_bitrate_kbps"] * e["play_time_ms"]
                    a["bitrate_play"] += e["play_time_ms"]
    out = {}
    for key, a in g.items():
        out[key] = {
            "sessions": len(a["sessions"]),
            "startups": len(a["startup"]),
            "startup_p50_ms": qexact(a["startup"], 0.5) if a["startup"] else None,
            "startup_p95_ms": qexact(a["startup"], 0.95) if a["startup"] else None,
            "startup_p99_ms": qexact(a["startup"], 0.99) if a["startup"] else None,
            "latency_p50_ms": qexact(a["latency"], 0.5) if a["latency"] else None,
            "latency_p95_ms": qexact(a["latency"], 0.95) if a["latency"] else None,
            "rebuffer_count": a["stalls"],
            "rebuffer_ratio": a["rebuffer"] / (a["play"] + a["rebuffer"]),
            "stalls_per_hour": a["stalls"] / (a["play"] / 3_600_000),
            "avg_bitrate_kbps": a["bitrate_time"] / a["bitrate_play"] if a["bitrate_play"] else None,
            "error_rate": len(a["errors"]) / len(a["sessions"]),
            "play_time_ms": a["play"],
            "dropped_frames": a["dropped"],
        }
    return out
