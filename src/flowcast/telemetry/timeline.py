"""Per-session reads and erasure, and time series for the live dashboard.

One session's player events and the origin requests that carry its CMCD `sid` are put on
one timeline (the "correlation id" of reference/schema.md's acceptance criteria). Same SQL
on both store backends, values bound as parameters (see store.py).
"""

from __future__ import annotations

from typing import Any, Final

from flowcast.telemetry.store import Store, _range

# Series the dashboard draws, per time bucket.
SERIES: Final = (
    "sessions",
    "startup_p95_ms",
    "rebuffer_ratio",
    "stalls",
    "latency_p95_ms",
    "avg_bitrate_kbps",
    "origin_requests",
    "origin_ttfb_p95_ms",
)


def session_timeline(store: Store, session_id: str) -> dict[str, Any] | None:
    """The session row, its player events and its origin requests, each list by time.

    Returns None when nothing at all is stored under the id.
    """
    p = {"sid": session_id}
    events = store.query(
        f"SELECT * EXCEPT ts, toUnixTimestamp64Milli(ts) / 1000 AS ts FROM {store.t('player_events')} FINAL "
        f"WHERE session_id = {{sid:String}} ORDER BY ts, event_id",
        p,
    )
    requests = store.query(
        f"SELECT * EXCEPT ts, toUnixTimestamp64Milli(ts) / 1000 AS ts FROM {store.t('origin_requests')} "
        f"WHERE session_id = {{sid:String}} ORDER BY ts",
        p,
    )
    session = store.session(session_id)
    if session is None and not events and not requests:
        return None
    timeline = [{"source": "player", "ts": e["ts"], "type": e["type"], "event": e} for e in events]
    timeline += [{"source": "origin", "ts": r["ts"], "type": "request", "request": r} for r in requests]
    timeline.sort(key=lambda x: x["ts"])
    return {
        "session": session,
        "player_events": events,
        "origin_requests": requests,
        "timeline": timeline,
    }


def delete_session(store: Store, session_id: str) -> None:
    """Erase one session (consent withdrawn, LGPD Art. 8 §5 and 15 III): its events, its
    session row and the origin requests carrying its sid. Synchronous."""
    p = {"sid": session_id}
    minutes = store.minutes_of("session_id = {sid:String}", p)
    for table in ("player_events", "sessions", "origin_requests"):
        store.execute(
            f"ALTER TABLE {store.t(table)} DELETE WHERE session_id = {{sid:String}} SETTINGS mutations_sync = 2",
            p,
        )
    store.rebuild_rollup(minutes)  # the per-minute QoE states held this session too


def recent_sessions(store: Store, start: float, limit: int = 50) -> list[dict[str, Any]]:
    """Sessions with player events since `start`, newest first, with headline figures."""
    where, params = _range(start, None)
    params["limit"] = int(limit)
    rows = store.query(
        f"""SELECT session_id, any(protocol) AS protocol, any(cdn) AS cdn,
    toUnixTimestamp64Milli(min(ts)) / 1000 AS first_ts, toUnixTimestamp64Milli(max(ts)) / 1000 AS last_ts,
    maxIf(startup_time_ms, type = 'startup') AS s_startup_time_ms,
    countIf(type = 'stall') AS rebuffer_count, sumIf(rebuffer_ms, type = 'stall') AS s_rebuffer_ms,
    sumIf(play_time_ms, type IN ('heartbeat', 'session_end')) AS s_play_time_ms
FROM {store.t('player_events')} FINAL {where}
GROUP BY session_id ORDER BY last_ts DESC LIMIT {{limit:UInt32}}""",
        params,
    )
    return [
        {k[2:] if k.startswith("s_") else k: v for k, v in r.items()}
        for r in rows
    ]


def timeseries(store: Store, start: float, end: float, step_s: int) -> list[dict[str, Any]]:
    """QoE and origin figures per `step_s` bucket over [start, end), oldest first."""
    if step_s < 1:
        raise ValueError("step_s must be at least 1")
    where, params = _range(start, end)
    params["step"] = int(step_s)
    bucket = "toUnixTimestamp(toStartOfInterval(ts, toIntervalSecond({step:UInt32})))"
    players = store.query(
        f"""SELECT {bucket} AS t,
    uniqExact(session_id) AS sessions,
    quantileExactIf(0.95)(startup_time_ms, type = 'startup') AS startup_p95_ms,
    countIf(type = 'startup') AS startups,
    countIf(type = 'stall') AS stalls,
    sumIf(rebuffer_ms, type = 'stall') AS sum_rebuffer_ms,
    sumIf(play_time_ms, type IN ('heartbeat', 'session_end')) AS sum_play_time_ms,
    quantileExactIf(0.95)(latency_ms, type = 'latency') AS latency_p95_ms,
    countIf(type = 'latency') AS latency_samples,
    sumIf(avg_bitrate_kbps * play_time_ms, type IN ('heartbeat', 'session_end') AND avg_bitrate_kbps > 0) AS bt,
    sumIf(play_time_ms, type IN ('heartbeat', 'session_end') AND avg_bitrate_kbps > 0) AS bpt
FROM {store.t('player_events')} FINAL {where} GROUP BY t ORDER BY t""",
        params,
    )
    origin = store.query(
        f"""SELECT {bucket} AS t, count() AS origin_requests, quantileExact(0.95)(ttfb_ms) AS origin_ttfb_p95_ms
FROM {store.t('origin_requests')} {where} GROUP BY t ORDER BY t""",
        params,
    )
    out: dict[int, dict[str, Any]] = {}
    for r in players:
        play, rebuf = float(r["sum_play_time_ms"]), float(r["sum_rebuffer_ms"])
        out[int(r["t"])] = {
            "t": int(r["t"]),
            "sessions": int(r["sessions"]),
            "startup_p95_ms": float(r["startup_p95_ms"]) if int(r["startups"]) else None,
            "rebuffer_ratio": rebuf / (play + rebuf) if play + rebuf > 0 else None,
            "stalls": int(r["stalls"]),
            "latency_p95_ms": float(r["latency_p95_ms"]) if int(r["latency_samples"]) else None,
            "avg_bitrate_kbps": float(r["bt"]) / float(r["bpt"]) if float(r["bpt"]) else None,
        }
    for r in origin:
        row = out.setdefault(int(r["t"]), {"t": int(r["t"])})
        row["origin_requests"] = int(r["origin_requests"])
        row["origin_ttfb_p95_ms"] = float(r["origin_ttfb_p95_ms"])
    return [{k: row.get(k) for k in ("t", *SERIES)} for _, row in sorted(out.items())]
