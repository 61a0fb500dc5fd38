"""QoE aggregates as SQL on the store, over a time range and any grouping.

Definitions (reference/schema.md; event semantics in schema.METRICS_BY_TYPE):
- sessions: distinct session_id with any event in the range;
- startup p50/p95/p99: exact quantiles of `startup` events' startup_time_ms;
- rebuffer ratio: rebuffer_ms / (play_time_ms + rebuffer_ms), rebuffer_ms summed over
  `stall` events and play_time_ms over heartbeat/session_end deltas;
- stalls per hour: stall events per hour of play time;
- average bitrate: play-time-weighted mean of heartbeat/session_end avg_bitrate_kbps;
- latency p50/p95: exact quantiles of `latency` samples;
- error rate: sessions with an `error` event (or session_end error_code) / sessions.

Quantiles are `quantileExact`: the element at floor(level x n) of the sorted values, so a
test can compare them with ground truth (and a dashboard never shows an estimate as exact).

Where they are read (`plan`): whole minutes come from the per-minute rollup (store.ROLLUP,
exact states filled by a materialized view), the sub-minute edges of the range from
player_events FINAL as the same states, merged in one query ("hybrid"); a range with no
whole minute inside, or `source="raw"`, reads player_events only. Every grouping field is a
rollup dimension, so no grouping forces the raw path today; one that is not would.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Final, Literal

from flowcast.telemetry.slo import Slo
from flowcast.telemetry.store import ROLLUP, ROLLUP_DIMS, ROLLUP_STATES, Store, _range

GROUP_FIELDS: Final = ("protocol", "cdn", "region", "player_version", "stream_id", "codec")
_PLAY: Final = "type IN ('heartbeat', 'session_end')"


@dataclass(frozen=True)
class QoeRow:
    group: dict[str, str] = field(hash=False)
    sessions: int
    startups: int
    startup_p50_ms: float | None
    startup_p95_ms: float | None
    startup_p99_ms: float | None
    rebuffer_count: int  # stall events (schema.md name)
    rebuffer_ms: float
    play_time_ms: float
    rebuffer_ratio: float | None
    stalls_per_hour: float | None
    avg_bitrate_kbps: float | None
    latency_samples: int
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    error_sessions: int
    error_rate: float | None
    dropped_frames: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _sql(store: Store, group_by: tuple[str, ...], where: str) -> str:
    cols = "".join(f"{g}, " for g in group_by)
    tail = f"GROUP BY {', '.join(group_by)} ORDER BY {', '.join(group_by)}" if group_by else ""
    return f"""SELECT {cols}
    uniqExact(session_id) AS sessions,
    countIf(type = 'startup') AS startups,
    quantilesExactIf(0.5, 0.95, 0.99)(startup_time_ms, type = 'startup') AS startup_q,
    countIf(type = 'stall') AS stalls,
    sumIf(rebuffer_ms, type = 'stall') AS sum_rebuffer_ms,
    sumIf(play_time_ms, {_PLAY}) AS sum_play_time_ms,
    sumIf(avg_bitrate_kbps * play_time_ms, {_PLAY} AND avg_bitrate_kbps > 0) AS bitrate_time,
    sumIf(play_time_ms, {_PLAY} AND avg_bitrate_kbps > 0) AS bitrate_play_time,
    countIf(type = 'latency') AS latency_samples,
    quantilesExactIf(0.5, 0.95)(latency_ms, type = 'latency') AS latency_q,
    uniqExactIf(session_id, type = 'error' OR (type = 'session_end' AND error_code != '')) AS error_sessions,
    sumIf(dropped_frames, {_PLAY}) AS sum_dropped_frames
FROM {store.t('player_events')} FINAL
{where}
{tail}"""


Source = Literal["auto", "raw"]
Plan = Literal["rollup", "hybrid", "raw"]

# How each rollup column is merged back into the figure of the same name.
_MERGE: Final = {
    "sessions": "uniqExactMerge(sessions)",
    "startup_q": "quantilesExactIfMerge(0.5, 0.95, 0.99)(startup_q)",
    "latency_q": "quantilesExactIfMerge(0.5, 0.95)(latency_q)",
    "error_sessions": "uniqExactIfMerge(error_sessions)",
}


def plan(start: float | None, end: float | None, group_by: tuple[str, ...], source: Source = "auto") -> Plan:
    """Which tables answer qoe_aggregates (see the module docstring)."""
    if source == "raw" or any(g not in ROLLUP_DIMS for g in group_by):
        return "raw"
    m0, m1 = _whole_minutes(start, end)
    if m0 is not None and m1 is not None and m1 - m0 < 60:
        return "raw"  # no whole minute inside: nothing to gain
    exact_start = start is None or m0 == start
    exact_end = end is None or m1 == end
    return "rollup" if exact_start and exact_end else "hybrid"


def _whole_minutes(start: float | None, end: float | None) -> tuple[float | None, float | None]:
    """[m0, m1): the whole minutes inside [start, end) (epoch seconds, ms precision)."""
    m0 = None if start is None else -(-round(start * 1000) // 60_000) * 60.0
    m1 = None if end is None else (round(end * 1000) // 60_000) * 60.0
    return m0, m1


def _rollup_sql(store: Store, group_by: tuple[str, ...], start: float | None, end: float | None) -> tuple[str, dict[str, Any]]:
    m0, m1 = _whole_minutes(start, end)
    params: dict[str, Any] = {}
    conds = []
    if m0 is not None:
        conds.append("minute >= toDateTime({m0:Int64}, 'UTC')")
        params["m0"] = int(m0)
    if m1 is not None:
        conds.append("minute < toDateTime({m1:Int64}, 'UTC')")
        params["m1"] = int(m1)
    rollup_where = ("WHERE " + " AND ".join(conds)) if conds else ""
    names = [name for name, _, _ in ROLLUP_STATES]
    dims = "".join(f"{g}, " for g in group_by)
    branches = [f"SELECT {dims}{', '.join(names)} FROM {store.t(ROLLUP)} {rollup_where}"]
    # Sub-minute edges of the range: the same states from the raw events.
    edges = []
    if start is not None and m0 is not None and m0 > start:
        edges.append(
            "(ts >= fromUnixTimestamp64Milli(toInt64({start_ms:Int64}), 'UTC') "
            "AND ts < fromUnixTimestamp64Milli(toInt64({m0_ms:Int64}), 'UTC'))"
        )
        params.update(start_ms=int(round(start * 1000)), m0_ms=int(m0 * 1000))
    if end is not None and m1 is not None and end > m1:
        edges.append(
            "(ts >= fromUnixTimestamp64Milli(toInt64({m1_ms:Int64}), 'UTC') "
            "AND ts < fromUnixTimestamp64Milli(toInt64({end_ms:Int64}), 'UTC'))"
        )
        params.update(m1_ms=int(m1 * 1000), end_ms=int(round(end * 1000)))
    if edges:
        states = ", ".join(f"{expr} AS {name}" for name, _, expr in ROLLUP_STATES)
        group = f" GROUP BY {', '.join(group_by)}" if group_by else ""
        branches.append(
            f"SELECT {dims}{states} FROM {store.t('player_events')} FINAL WHERE {' OR '.join(edges)}{group}"
        )
    merged = ",\n    ".join(f"{_MERGE.get(n, f'sum({n})')} AS {n}" for n in names)
    tail = f"GROUP BY {', '.join(group_by)} ORDER BY {', '.join(group_by)}" if group_by else ""
    union = "\n  UNION ALL\n  ".join(branches)
    return f"SELECT {dims}\n    {merged}\nFROM (\n  {union}\n)\n{tail}", params


def _q(values: list[Any] | None, i: int, n: int) -> float | None:
    if not n or values is None or values[i] is None:
        return None
    return float(values[i])


def qoe_aggregates(
    store: Store,
    start: float | None = None,
    end: float | None = None,
    group_by: tuple[str, ...] | list[str] = (),
    source: Source = "auto",
) -> list[QoeRow]:
    """QoE over [start, end) (epoch seconds), one row per group (one row if no grouping).

    `source="raw"` forces the exact raw-table path; "auto" reads the rollup where it can
    (`plan`), with identical results."""
    group_by = tuple(group_by)
    for g in group_by:
        if g not in GROUP_FIELDS:
            raise ValueError(f"group_by: {g!r} is not one of {', '.join(GROUP_FIELDS)}")
    if source not in ("auto", "raw"):
        raise ValueError(f"source: {source!r} is not auto or raw")
    if plan(start, end, group_by, source) == "raw":
        where, params = _range(start, end)
        sql = _sql(store, group_by, where)
    else:
        sql, params = _rollup_sql(store, group_by, start, end)
    out = []
    for r in store.query(sql, params):
        sessions = int(r["sessions"])
        if not group_by and sessions == 0 and not r["startups"]:
            return []
        play, rebuf = float(r["sum_play_time_ms"]), float(r["sum_rebuffer_ms"])
        startups, lat_n = int(r["startups"]), int(r["latency_samples"])
        out.append(
            QoeRow(
                group={g: r[g] for g in group_by},
                sessions=sessions,
                startups=startups,
                startup_p50_ms=_q(r["startup_q"], 0, startups),
                startup_p95_ms=_q(r["startup_q"], 1, startups),
                startup_p99_ms=_q(r["startup_q"], 2, startups),
                rebuffer_count=int(r["stalls"]),
                rebuffer_ms=rebuf,
                play_time_ms=play,
                rebuffer_ratio=rebuf / (play + rebuf) if play + rebuf > 0 else None,
                stalls_per_hour=int(r["stalls"]) / (play / 3_600_000.0) if play > 0 else None,
                avg_bitrate_kbps=(
                    float(r["bitrate_time"]) / float(r["bitrate_play_time"]) if r["bitrate_play_time"] else None
                ),
                latency_samples=lat_n,
                latency_p50_ms=_q(r["latency_q"], 0, lat_n),
                latency_p95_ms=_q(r["latency_q"], 1, lat_n),
                error_sessions=int(r["error_sessions"]),
                error_rate=int(r["error_sessions"]) / sessions if sessions else None,
                dropped_frames=int(r["sum_dropped_frames"]),
            )
        )
    return out


def turn_relay(
    store: Store, start: float | None = None, end: float | None = None, group_by: tuple[str, ...] | list[str] = ()
) -> list[dict[str, Any]]:
    """Infra (schema.md): `turn_relay_ratio`, the share of WebRTC play time spent on a TURN
    relay pair, weighted by play time over the heartbeats that measured it. Read from the
    raw events: WebRTC heartbeats are a small share of them, and the rollup stays as it is."""
    group_by = tuple(group_by)
    for g in group_by:
        if g not in GROUP_FIELDS:
            raise ValueError(f"group_by: {g!r} is not one of {', '.join(GROUP_FIELDS)}")
    where, params = _range(start, end)
    cond = f"{_PLAY} AND protocol = 'webrtc' AND turn_relay_ratio IS NOT NULL"
    where = f"{where} AND {cond}" if where else f"WHERE {cond}"
    cols = "".join(f"{g}, " for g in group_by)
    tail = f"GROUP BY {', '.join(group_by)} ORDER BY {', '.join(group_by)}" if group_by else ""
    sql = (
        f"SELECT {cols}sum(play_time_ms) AS play, sum(turn_relay_ratio * play_time_ms) AS relayed "
        f"FROM {store.t('player_events')} FINAL {where} {tail}"
    )
    out = []
    for r in store.query(sql, params):
        play = float(r["play"] or 0.0)
        if play <= 0:
            continue
        out.append({
            "group": {g: r[g] for g in group_by},
            "webrtc_play_time_ms": play,
            "turn_relay_ratio": round(float(r["relayed"]) / play, 4),
        })
    return out


def sli_counts(store: Store, slo: Slo, start: float, end: float) -> tuple[float, float]:
    """(good, total) for one SLO over [start, end): the input of slo.BurnRateEvaluator."""
    where, params = _range(start, end)
    pe = store.t("player_events")
    if slo.sli == "startup":
        params["thr"] = float(slo.threshold_ms or 0)
        sql = (
            f"SELECT countIf(startup_time_ms <= {{thr:Float64}}) AS good, count() AS total "
            f"FROM {pe} FINAL {where} AND type = 'startup'"
        )
    elif slo.sli == "latency":
        params["thr"] = float(slo.threshold_ms or 0)
        params["proto"] = slo.protocol or ""
        sql = (
            f"SELECT countIf(latency_ms < {{thr:Float64}}) AS good, count() AS total "
            f"FROM {pe} FINAL {where} AND type = 'latency' AND protocol = {{proto:String}}"
        )
    elif slo.sli == "rebuffer":
        sql = (
            f"SELECT sumIf(play_time_ms, {_PLAY}) AS good, "
            f"sumIf(play_time_ms, {_PLAY}) + sumIf(rebuffer_ms, type = 'stall') AS total "
            f"FROM {pe} FINAL {where}"
        )
    else:  # playback_success
        sql = (
            f"SELECT uniqExact(session_id) - uniqExactIf(session_id, type = 'error' OR "
            f"(type = 'session_end' AND error_code != '')) AS good, uniqExact(session_id) AS total "
            f"FROM {pe} FINAL {where}"
        )
    row = store.query(sql, params)[0]
    return float(row["good"]), float(row["total"])


def anonymous_counts(store: Store, start: float | None = None, end: float | None = None) -> list[dict[str, Any]]:
    """Counts of events sent without consent, per type and protocol."""
    conds, params = [], {}
    if start is not None:
        conds.append("minute >= toDateTime({start:Int64}, 'UTC')")
        params["start"] = int(start)
    if end is not None:
        conds.append("minute < toDateTime({end:Int64}, 'UTC')")
        params["end"] = int(end)
    where = ("WHERE " + " AND ".join(conds)) if conds else ""
    return store.query(
        f"SELECT type, protocol, sum(events) AS events, sum(value_sum) AS value_sum "
        f"FROM {store.t('anon_counters')} {where} GROUP BY type, protocol ORDER BY type, protocol",
        params,
    )
