"""The telemetry store: one ClickHouse DDL and one set of queries, two backends.

- EmbeddedStore(path): chDB (ClickHouse in-process), data under `path`, survives restarts.
- ClickHouseHttpStore(url): a ClickHouse server or cluster over its HTTP interface
  (urllib, no driver), for the scale-out path (ARCHITECTURE.md, "Scale beyond one machine").

Both speak the same SQL with `{name:Type}` query parameters (chDB's `params=` and the HTTP
interface's `param_<name>=` bind them server-side: no value is ever formatted into SQL).
Only identifiers we own (database and table names, TTL days as validated ints) are.

Idempotency: `player_events` is a ReplacingMergeTree whose sorting key ends in `event_id`,
so a retried batch collapses to one row; every read of it uses FINAL. `sessions` is an
AggregatingMergeTree of max() columns, idempotent by construction. `anon_counters` (events
without consent) has no ids to dedupe on, by design: a retried anonymous batch counts twice.
"""

from __future__ import annotations

import json
import operator
import re
import threading
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Final

from flowcast.telemetry.collector import Batch
from flowcast.telemetry.schema import AnonymousCount, OriginRequest, PlayerEvent, SessionRow

_IDENT: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


class StoreError(Exception):
    """The store rejected a statement or could not be reached."""


@dataclass(frozen=True)
class Retention:
    """TTL per table, in days (LGPD Art. 15/16: processing ends when the period ends)."""

    player_events_days: int = 90
    sessions_days: int = 90
    origin_requests_days: int = 30
    anon_counters_days: int = 400
    # Consent proofs outlive the data they justify (LGPD Art. 8 par. 2, Art. 16 I): the
    # controller must be able to show consent for processing that already happened.
    consent_proofs_days: int = 1825

    def __post_init__(self) -> None:
        for name in ("player_events_days", "sessions_days", "origin_requests_days", "anon_counters_days",
                     "consent_proofs_days"):
            v = getattr(self, name)
            if type(v) is not int or not 1 <= v <= 3650:
                raise ValueError(f"Retention.{name} must be an integer from 1 to 3650")


def ddl(database: str, retention: Retention) -> list[str]:
    """CREATE statements for every table (idempotent: IF NOT EXISTS)."""
    db = database
    return [
        f"CREATE DATABASE IF NOT EXISTS {db}",
        f"""CREATE TABLE IF NOT EXISTS {db}.player_events (
    event_id String,
    type LowCardinality(String),
    ts DateTime64(3, 'UTC'),
    session_id String,
    user_id String,
    protocol LowCardinality(String),
    cdn LowCardinality(String),
    region LowCardinality(String),
    player_version LowCardinality(String),
    stream_id LowCardinality(String),
    codec LowCardinality(String),
    profile LowCardinality(String),
    level LowCardinality(String),
    gop_s Float32,
    b_frames UInt8,
    audio_codec LowCardinality(String),
    channels UInt8,
    startup_time_ms Float64,
    rebuffer_ms Float64,
    avg_bitrate_kbps Float64,
    dropped_frames UInt32,
    latency_ms Float64,
    play_time_ms Float64,
    error_code LowCardinality(String),
    turn_relay_ratio Nullable(Float32)
) ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMMDD(ts)
ORDER BY (type, ts, event_id)
TTL toDateTime(ts) + INTERVAL {retention.player_events_days} DAY""",
        # Stores made before turn_relay_ratio was a beacon field get the column (NULL).
        f"ALTER TABLE {db}.player_events ADD COLUMN IF NOT EXISTS turn_relay_ratio Nullable(Float32)",
        f"""CREATE TABLE IF NOT EXISTS {db}.sessions (
    session_id String,
    user_id SimpleAggregateFunction(max, String),
    protocol SimpleAggregateFunction(max, String),
    cdn SimpleAggregateFunction(max, String),
    region SimpleAggregateFunction(max, String),
    player_version SimpleAggregateFunction(max, String),
    stream_id SimpleAggregateFunction(max, String),
    codec SimpleAggregateFunction(max, String),
    start_ts SimpleAggregateFunction(max, DateTime64(3, 'UTC')),
    end_ts SimpleAggregateFunction(max, DateTime64(3, 'UTC')),
    last_ts SimpleAggregateFunction(max, DateTime64(3, 'UTC'))
) ENGINE = AggregatingMergeTree
ORDER BY session_id
TTL toDateTime(last_ts) + INTERVAL {retention.sessions_days} DAY""",
        f"""CREATE TABLE IF NOT EXISTS {db}.origin_requests (
    ts DateTime64(3, 'UTC'),
    path String,
    status UInt16,
    bytes UInt64,
    ttfb_ms Float64,
    session_id String,
    object_type LowCardinality(String),
    buffer_length_ms UInt32,
    throughput_kbps UInt32,
    bitrate_kbps UInt32,
    content_id LowCardinality(String),
    origin_id LowCardinality(String)
) ENGINE = MergeTree
PARTITION BY toYYYYMMDD(ts)
ORDER BY (ts, session_id)
TTL toDateTime(ts) + INTERVAL {retention.origin_requests_days} DAY""",
        f"""CREATE TABLE IF NOT EXISTS {db}.anon_counters (
    minute DateTime('UTC'),
    type LowCardinality(String),
    protocol LowCardinality(String),
    cdn LowCardinality(String),
    region LowCardinality(String),
    events UInt64,
    value_sum Float64
) ENGINE = SummingMergeTree((events, value_sum))
ORDER BY (minute, type, protocol, cdn, region)
TTL minute + INTERVAL {retention.anon_counters_days} DAY""",
        f"""CREATE TABLE IF NOT EXISTS {db}.consent_proofs (
    ts DateTime64(3, 'UTC'),
    session_id String,
    choice LowCardinality(String),
    banner_version LowCardinality(String),
    banner_hash String,
    language LowCardinality(String),
    purposes Array(LowCardinality(String)),
    user_id String
) ENGINE = MergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (session_id, ts)
TTL toDateTime(ts) + INTERVAL {retention.consent_proofs_days} DAY""",
        *rollup_ddl(db, retention),
    ]


# --- per-minute QoE rollup --------------------------------------------------------------
# qoe.py's aggregates over 10 M events took 0.7-2.1 s on chDB reading player_events FINAL;
# the rollup keeps one row per (minute, every grouping dimension) with the partial state of
# each aggregate, so a report reads ~1 row per minute and group instead of every event.
# States are exact (uniqExact, quantilesExact, sums), not sketches: the quantile state keeps
# the values themselves (a few per row), so a report from the rollup equals the raw one.
ROLLUP: Final = "qoe_minute"
ROLLUP_MV: Final = "qoe_minute_mv"
ROLLUP_DIMS: Final = ("protocol", "cdn", "region", "player_version", "stream_id", "codec")
_PLAY_TYPES: Final = "type IN ('heartbeat', 'session_end')"

# (column, state type, expression over player_events): the same expressions feed the
# materialized view, a rebuild after erasure, and the raw edges of a hybrid query.
ROLLUP_STATES: Final = (
    ("sessions", "AggregateFunction(uniqExact, String)", "uniqExactState(session_id)"),
    ("startups", "SimpleAggregateFunction(sum, UInt64)", "countIf(type = 'startup')"),
    (
        "startup_q",
        "AggregateFunction(quantilesExactIf(0.5, 0.95, 0.99), Float64, UInt8)",
        "quantilesExactIfState(0.5, 0.95, 0.99)(startup_time_ms, type = 'startup')",
    ),
    ("stalls", "SimpleAggregateFunction(sum, UInt64)", "countIf(type = 'stall')"),
    ("sum_rebuffer_ms", "SimpleAggregateFunction(sum, Float64)", "sumIf(rebuffer_ms, type = 'stall')"),
    ("sum_play_time_ms", "SimpleAggregateFunction(sum, Float64)", f"sumIf(play_time_ms, {_PLAY_TYPES})"),
    (
        "bitrate_time",
        "SimpleAggregateFunction(sum, Float64)",
        f"sumIf(avg_bitrate_kbps * play_time_ms, {_PLAY_TYPES} AND avg_bitrate_kbps > 0)",
    ),
    (
        "bitrate_play_time",
        "SimpleAggregateFunction(sum, Float64)",
        f"sumIf(play_time_ms, {_PLAY_TYPES} AND avg_bitrate_kbps > 0)",
    ),
    ("latency_samples", "SimpleAggregateFunction(sum, UInt64)", "countIf(type = 'latency')"),
    (
        "latency_q",
        "AggregateFunction(quantilesExactIf(0.5, 0.95), Float64, UInt8)",
        "quantilesExactIfState(0.5, 0.95)(latency_ms, type = 'latency')",
    ),
    (
        "error_sessions",
        "AggregateFunction(uniqExactIf, String, UInt8)",
        "uniqExactIfState(session_id, type = 'error' OR (type = 'session_end' AND error_code != ''))",
    ),
    ("sum_dropped_frames", "SimpleAggregateFunction(sum, UInt64)", f"sumIf(dropped_frames, {_PLAY_TYPES})"),
)


def rollup_select(source: str, where: str = "") -> str:
    """SELECT of rollup rows (minute, dims, states) from `source` (player_events [FINAL])."""
    dims = ", ".join(ROLLUP_DIMS)
    states = ",\n    ".join(f"{expr} AS {name}" for name, _, expr in ROLLUP_STATES)
    return (
        f"SELECT toStartOfMinute(ts) AS minute, {dims},\n    {states}\n"
        f"FROM {source} {where}\nGROUP BY minute, {dims}"
    )


def rollup_ddl(db: str, retention: Retention) -> list[str]:
    """The rollup table and the materialized view that fills it on every insert."""
    dims = ",\n    ".join(f"{d} LowCardinality(String)" for d in ROLLUP_DIMS)
    states = ",\n    ".join(f"{name} {typ}" for name, typ, _ in ROLLUP_STATES)
    return [
        f"""CREATE TABLE IF NOT EXISTS {db}.{ROLLUP} (
    minute DateTime('UTC'),
    {dims},
    {states}
) ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMMDD(minute)
ORDER BY (minute, {', '.join(ROLLUP_DIMS)})
TTL minute + INTERVAL {retention.player_events_days} DAY""",
        f"CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.{ROLLUP_MV} TO {db}.{ROLLUP} AS\n"
        + rollup_select(f"{db}.player_events"),
    ]


def _columns(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in fields(cls))


@dataclass(frozen=True)
class ConsentProof:
    """One consent decision as shown to the viewer (LGPD Art. 8 par. 2: demonstrable)."""

    ts: float
    session_id: str
    choice: str  # granted | declined | withdrawn
    banner_version: str
    banner_hash: str  # SHA-256 hex of the banner text shown
    language: str
    purposes: tuple[str, ...]
    user_id: str = ""  # HMAC of the user id, when the player had one


_CONSENT_COLS: Final = _columns(ConsentProof)
_consent_tuple = operator.attrgetter(*_CONSENT_COLS)
_EVENT_COLS: Final = _columns(PlayerEvent)
_SESSION_COLS: Final = _columns(SessionRow)
_COUNTER_COLS: Final = _columns(AnonymousCount)
_ORIGIN_COLS: Final = _columns(OriginRequest)
_event_tuple = operator.attrgetter(*_EVENT_COLS)
_session_tuple = operator.attrgetter(*_SESSION_COLS)
_counter_tuple = operator.attrgetter(*_COUNTER_COLS)
_origin_tuple = operator.attrgetter(*_ORIGIN_COLS)

_INT_TYPES: Final = re.compile(r"^(Nullable\()?(U?Int(64|128|256))\)?$")


class Store:
    """Shared SQL; subclasses provide `_run(sql, params, data_format)` -> bytes."""

    database: str
    retention: Retention

    def _run(self, sql: str, params: Mapping[str, Any] | None, fmt: str) -> bytes:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- schema -------------------------------------------------------------------------
    def create_schema(self) -> None:
        had_view = bool(
            self.query(
                "SELECT count() AS n FROM system.tables WHERE database = {db:String} AND name = {mv:String}",
                {"db": self.database, "mv": ROLLUP_MV},
            )[0]["n"]
        )
        for stmt in ddl(self.database, self.retention):
            self.execute(stmt)
        if not had_view:
            # A store made before the rollup existed: fill it once from what is stored
            # (a materialized view only sees inserts made after it was created).
            self.execute(f"INSERT INTO {self.t(ROLLUP)} " + rollup_select(f"{self.t('player_events')} FINAL"))

    def rebuild_rollup(self, minutes: Sequence[int]) -> None:
        """Recompute the rollup rows of these minutes (epoch seconds) from player_events,
        after rows were deleted there (erasure, withdrawal): the view only sees inserts."""
        if not minutes:
            return
        p = {"mins": [int(m) for m in minutes]}
        cond = "toUnixTimestamp(minute) IN {mins:Array(UInt32)}"
        self.execute(f"ALTER TABLE {self.t(ROLLUP)} DELETE WHERE {cond} SETTINGS mutations_sync = 2", p)
        self.execute(
            f"INSERT INTO {self.t(ROLLUP)} "
            + rollup_select(
                f"{self.t('player_events')} FINAL",
                "WHERE toUnixTimestamp(toStartOfMinute(ts)) IN {mins:Array(UInt32)}",
            ),
            p,
        )

    def minutes_of(self, where: str, params: Mapping[str, Any]) -> list[int]:
        """Distinct minutes (epoch seconds) of the player_events rows matching `where`."""
        rows = self.query(
            f"SELECT DISTINCT toUnixTimestamp(toStartOfMinute(ts)) AS m FROM {self.t('player_events')} WHERE {where}",
            params,
        )
        return [int(r["m"]) for r in rows]

    # --- primitives ---------------------------------------------------------------------
    def execute(self, sql: str, params: Mapping[str, Any] | None = None) -> None:
        self._run(sql, params, "TabSeparated")

    def query(self, sql: str, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """Run a SELECT; rows as dicts. 64-bit integers come back as ints, not strings."""
        raw = self._run(sql, params, "JSONCompact")
        if not raw.strip():
            return []
        doc = json.loads(raw)
        names = [m["name"] for m in doc["meta"]]
        ints = [bool(_INT_TYPES.match(m["type"])) for m in doc["meta"]]
        out = []
        for row in doc["data"]:
            out.append(
                {n: (int(v) if isint and isinstance(v, str) else v) for n, v, isint in zip(names, row, ints)}
            )
        return out

    def t(self, table: str) -> str:
        """Qualified table name for queries (`{store.t('player_events')}`)."""
        return f"{self.database}.{table}"

    def _insert(self, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> int:
        # JSONCompactEachRow with an explicit column list: one json.dumps of a tuple per row
        # is ~3x cheaper than dicts (asdict + JSONEachRow), measured in benchmarks/telemetry.py.
        dumps = json.JSONEncoder(separators=(",", ":")).encode
        lines = [dumps(r) for r in rows]
        if not lines:
            return 0
        cols = ", ".join(columns)
        self._run(
            f"INSERT INTO {self.t(table)} ({cols}) FORMAT JSONCompactEachRow\n" + "\n".join(lines),
            None,
            "TabSeparated",
        )
        return len(lines)

    # --- writes -------------------------------------------------------------------------
    def insert_events(self, events: Sequence[PlayerEvent]) -> int:
        """Insert events whose event_id is not stored yet; returns how many were new.

        FINAL already hides a retried event from raw reads, but the rollup's view sees
        every insert, so a retry is dropped here, before it reaches the table (checked
        within the batch's time range, which the primary key and partitions prune to).
        Two writers inserting the same event at the same instant can still both pass:
        only the rollup would count it twice; the raw path stays exact."""
        fresh: dict[str, PlayerEvent] = {}
        for e in events:
            fresh.setdefault(e.event_id, e)
        if not fresh:
            return 0
        lo = min(e.ts for e in fresh.values())
        hi = max(e.ts for e in fresh.values())
        seen = self.query(
            f"SELECT event_id FROM {self.t('player_events')} "
            "WHERE ts >= fromUnixTimestamp64Milli(toInt64({lo:Int64}), 'UTC') "
            "AND ts <= fromUnixTimestamp64Milli(toInt64({hi:Int64}), 'UTC') "
            "AND event_id IN {ids:Array(String)}",
            {"lo": int(lo * 1000) - 1, "hi": int(hi * 1000) + 1, "ids": list(fresh)},
        )
        for r in seen:
            fresh.pop(r["event_id"], None)
        return self._insert("player_events", _EVENT_COLS, map(_event_tuple, fresh.values()))

    def insert_sessions(self, sessions: Sequence[SessionRow]) -> int:
        return self._insert(
            "sessions",
            (*_SESSION_COLS, "last_ts"),
            ((*_session_tuple(s), max(s.start_ts, s.end_ts)) for s in sessions),
        )

    def insert_counters(self, counters: Sequence[AnonymousCount]) -> int:
        return self._insert("anon_counters", _COUNTER_COLS, map(_counter_tuple, counters))

    def insert_origin_requests(self, requests: Sequence[OriginRequest]) -> int:
        return self._insert("origin_requests", _ORIGIN_COLS, map(_origin_tuple, requests))

    def write_batch(self, batch: Batch) -> None:
        """Store a collector batch. Retrying the same batch after an error is safe for
        events and sessions (deduplicated), see the module docstring for counters."""
        self.insert_events(batch.events)
        self.insert_sessions(batch.sessions)
        self.insert_counters(batch.counters)

    def insert_consent(self, proof: ConsentProof) -> None:
        """Record one consent decision (granted, declined, withdrawn): append-only."""
        self._insert("consent_proofs", _CONSENT_COLS, [_consent_tuple(proof)])

    def consent_proofs(self, session_id: str | None = None, user_id_hash: str | None = None) -> list[dict[str, Any]]:
        """Every recorded decision of one session or one pseudonymised user, oldest first."""
        if (session_id is None) == (user_id_hash is None):
            raise ValueError("give exactly one of session_id and user_id_hash")
        col, val = ("session_id", session_id) if session_id is not None else ("user_id", user_id_hash)
        return self.query(
            f"SELECT toUnixTimestamp64Milli(ts) / 1000 AS ts, session_id, choice, banner_version, banner_hash, "
            f"language, purposes, user_id FROM {self.t('consent_proofs')} WHERE {col} = {{v:String}} ORDER BY ts",
            {"v": val},
        )

    # --- reads --------------------------------------------------------------------------
    def count_events(self, start: float | None = None, end: float | None = None) -> int:
        where, params = _range(start, end)
        rows = self.query(f"SELECT count() AS n FROM {self.t('player_events')} FINAL {where}", params)
        return int(rows[0]["n"])

    def session(self, session_id: str) -> dict[str, Any] | None:
        rows = self.query(
            f"""SELECT session_id, max(user_id) AS user_id, max(protocol) AS protocol,
       max(cdn) AS cdn, max(region) AS region, max(player_version) AS player_version,
       max(stream_id) AS stream_id, max(codec) AS codec,
       toUnixTimestamp64Milli(max(start_ts)) / 1000 AS start_ts,
       toUnixTimestamp64Milli(max(end_ts)) / 1000 AS end_ts
FROM {self.t('sessions')} WHERE session_id = {{sid:String}} GROUP BY session_id""",
            {"sid": session_id},
        )
        return rows[0] if rows else None

    def user_data(self, user_id_hash: str) -> dict[str, list[dict[str, Any]]]:
        """Everything stored about one pseudonymised user (LGPD Art. 18 II access, V portability)."""
        p = {"u": user_id_hash}
        sessions = self.query(
            f"SELECT DISTINCT session_id FROM {self.t('sessions')} WHERE user_id = {{u:String}}", p
        )
        ids = [r["session_id"] for r in sessions]
        q = {"u": user_id_hash, "ids": ids}
        return {
            "sessions": [self.session(i) or {} for i in ids],
            "player_events": self.query(
                f"SELECT * FROM {self.t('player_events')} FINAL "
                f"WHERE user_id = {{u:String}} OR has({{ids:Array(String)}}, session_id) ORDER BY ts",
                q,
            ),
            "origin_requests": self.query(
                f"SELECT * FROM {self.t('origin_requests')} "
                f"WHERE has({{ids:Array(String)}}, session_id) ORDER BY ts",
                {"ids": ids},
            ),
        }

    def delete_user(self, user_id_hash: str) -> int:
        """Erase one user's data (LGPD Art. 18 VI): their sessions, every event of those
        sessions (also beacons sent without the user id) and the origin requests that carry
        those session ids (CMCD sid). Synchronous: returns once the data is gone. Returns the
        number of sessions erased. Anonymous counters hold nothing to erase.

        Consent proofs are kept (docs/telemetry.md, "Consent proofs"): the controller must
        be able to demonstrate consent (Art. 8 par. 2) for the processing that happened, and
        Art. 16 I allows keeping data for that legal obligation; they hold no viewing data,
        only the decision, and expire with their own retention."""
        p = {"u": user_id_hash}
        ids = [
            r["session_id"]
            for r in self.query(
                f"SELECT DISTINCT session_id FROM {self.t('player_events')} WHERE user_id = {{u:String}} "
                f"UNION DISTINCT SELECT session_id FROM {self.t('sessions')} WHERE user_id = {{u:String}}",
                p,
            )
            if r["session_id"]
        ]
        q = {"u": user_id_hash, "ids": ids}
        minutes = self.minutes_of("user_id = {u:String} OR has({ids:Array(String)}, session_id)", q)
        # mutations_sync = 2: wait for the mutation on every replica, not only this one.
        self.execute(
            f"ALTER TABLE {self.t('player_events')} DELETE "
            f"WHERE user_id = {{u:String}} OR has({{ids:Array(String)}}, session_id) "
            f"SETTINGS mutations_sync = 2",
            q,
        )
        self.execute(
            f"ALTER TABLE {self.t('sessions')} DELETE "
            f"WHERE user_id = {{u:String}} OR has({{ids:Array(String)}}, session_id) "
            f"SETTINGS mutations_sync = 2",
            q,
        )
        if ids:
            self.execute(
                f"ALTER TABLE {self.t('origin_requests')} DELETE "
                f"WHERE has({{ids:Array(String)}}, session_id) SETTINGS mutations_sync = 2",
                {"ids": ids},
            )
        # The rollup's states hold these sessions' ids (hashed) and values: recompute them.
        self.rebuild_rollup(minutes)
        return len(ids)


def _range(start: float | None, end: float | None) -> tuple[str, dict[str, Any]]:
    """`WHERE ts >= start AND ts < end` on epoch seconds, bound as parameters."""
    conds, params = [], {}
    if start is not None:
        conds.append("ts >= fromUnixTimestamp64Milli(toInt64({start_ms:Int64}), 'UTC')")
        params["start_ms"] = int(round(start * 1000))
    if end is not None:
        conds.append("ts < fromUnixTimestamp64Milli(toInt64({end_ms:Int64}), 'UTC')")
        params["end_ms"] = int(round(end * 1000))
    return ("WHERE " + " AND ".join(conds)) if conds else "", params


def _check_ident(name: str) -> str:
    if not _IDENT.match(name):
        raise ValueError(f"not a valid ClickHouse identifier: {name!r}")
    return name


# chDB keeps one engine per process (its sessions share global state), so two stores on
# two paths in one process cannot be open at once; the lock makes that a clear error.
_EMBEDDED_LOCK = threading.Lock()
_EMBEDDED_OPEN: dict[str, "EmbeddedStore"] = {}


class EmbeddedStore(Store):
    """chDB under `path` (created if missing); the default single-machine store."""

    def __init__(self, path: str | Path, *, database: str = "flowcast", retention: Retention | None = None) -> None:
        from chdb import session as chdb_session  # imported here: the HTTP store needs no chDB

        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.database = _check_ident(database)
        self.retention = retention or Retention()
        with _EMBEDDED_LOCK:
            if _EMBEDDED_OPEN:
                other = next(iter(_EMBEDDED_OPEN))
                raise StoreError(f"an EmbeddedStore is already open in this process ({other}); close it first")
            self._session = chdb_session.Session(str(self.path))
            _EMBEDDED_OPEN[str(self.path)] = self
        self._lock = threading.Lock()
        try:
            self.create_schema()
        except Exception:
            self.close()
            raise

    def _run(self, sql: str, params: Mapping[str, Any] | None, fmt: str) -> bytes:
        with self._lock:
            if self._session is None:
                raise StoreError("store is closed")
            try:
                res = self._session.query(
                    sql, fmt, params={k: _http_param(v) for k, v in params.items()} if params else None
                )
            except Exception as exc:  # chDB raises RuntimeError with ClickHouse's message
                raise StoreError(str(exc)) from exc
        return res.bytes() if hasattr(res, "bytes") else bytes(res)

    def close(self) -> None:
        with _EMBEDDED_LOCK:
            if getattr(self, "_session", None) is not None:
                self._session.close()
                self._session = None
                _EMBEDDED_OPEN.pop(str(self.path), None)


class ClickHouseHttpStore(Store):
    """A ClickHouse server over its HTTP interface (default port 8123)."""

    def __init__(
        self,
        url: str,
        *,
        database: str = "flowcast",
        retention: Retention | None = None,
        user: str | None = None,
        password: str | None = None,
        timeout: float = 30.0,
        create: bool = True,
    ) -> None:
        self.url = url.rstrip("/") + "/"
        self.database = _check_ident(database)
        self.retention = retention or Retention()
        self.timeout = timeout
        self._headers = {"Content-Type": "text/plain; charset=utf-8"}
        if user is not None:
            self._headers["X-ClickHouse-User"] = user
        if password is not None:
            self._headers["X-ClickHouse-Key"] = password
        if create:
            self.create_schema()

    def _run(self, sql: str, params: Mapping[str, Any] | None, fmt: str) -> bytes:
        qs: dict[str, str] = {"default_format": fmt}
        for k, v in (params or {}).items():
            qs[f"param_{k}"] = _http_param(v)
        req = urllib.request.Request(
            self.url + "?" + urllib.parse.urlencode(qs),
            data=sql.encode("utf-8"),
            headers=self._headers,
            method="POST",
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return resp.read()
        except urllib.error.HTTPError as exc:
            raise StoreError(f"ClickHouse HTTP {exc.code}: {exc.read()[:500].decode('utf-8', 'replace')}") from None
        except OSError as exc:
            raise StoreError(f"ClickHouse unreachable at {self.url}: {exc}") from None


def _http_param(v: Any) -> str:
    """Parameter values in the HTTP interface's text form (arrays as ClickHouse literals)."""
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(
            str(x) if type(x) is int else "'" + str(x).replace("\\", "\\\\").replace("'", "\\'") + "'" for x in v
        ) + "]"
    return str(v)
