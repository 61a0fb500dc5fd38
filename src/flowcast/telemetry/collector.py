"""Beacon batch validation, sans-I/O: bytes in, typed rows out, or a CollectorError.

Modelled on h11: no sockets here; the HTTP endpoint (wired elsewhere) hands the body and
the client key in and maps CollectorError.status to the response. Validation is written
out by hand rather than through a model library because it is the ingest hot path
(see docs/benchmarks.md, "QoE telemetry").

Wire format (JSON): either an array of events, or an object
`{"session": {<session / stream fields>}, "events": [...]}` whose `session` fields apply to
every event unless the event carries the field itself. Every event needs `event_id`,
`type`, `ts` (integer Unix epoch milliseconds), `consent` (boolean), `session_id` and
`protocol`, plus the metrics its type requires (schema.METRICS_BY_TYPE). Unknown fields
are rejected, so that a player bug or a renamed field shows up at once instead of as
silently missing data.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from flowcast.telemetry.schema import (
    CODECS,
    EVENT_TYPES,
    MAIN_METRIC,
    METRICS_BY_TYPE,
    PROTOCOLS,
    SESSION_FIELDS,
    STREAM_FIELDS,
    AnonymousCount,
    PlayerEvent,
    SessionRow,
    hash_user_id,
)

HMAC_KEY_ENV: Final = "FLOWCAST_TELEMETRY_HMAC_KEY"


class CollectorError(Exception):
    """A rejected batch: `status` is the HTTP status to answer, `field` the JSON path."""

    def __init__(self, status: int, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.status = status
        self.field = field
        self.message = message


@dataclass(frozen=True)
class CollectorConfig:
    hmac_key: bytes = field(repr=False)  # never printed, logged or stored
    max_bytes: int = 256 * 1024
    max_events: int = 500
    max_skew_s: float = 60.0  # how far in the future a client clock may be
    max_age_s: float = 24 * 3600.0  # beacons older than this are dropped as stale
    rate_events_per_s: float = 200.0  # per client key; 0 disables the limit
    rate_burst: float = 2000.0

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, **overrides: Any) -> "CollectorConfig":
        """Key from FLOWCAST_TELEMETRY_HMAC_KEY (hex, at least 32 bytes of key)."""
        env = dict(os.environ) if env is None else env
        raw = env.get(HMAC_KEY_ENV, "")
        try:
            key = bytes.fromhex(raw)
        except ValueError:
            raise ValueError(f"{HMAC_KEY_ENV} must be hex") from None
        if len(key) < 32:
            raise ValueError(f"{HMAC_KEY_ENV} must hold at least 32 bytes (64 hex digits)")
        return cls(hmac_key=key, **overrides)


@dataclass(frozen=True)
class Batch:
    """What one accepted batch becomes, ready for Store.write_batch."""

    events: list[PlayerEvent]
    sessions: list[SessionRow]
    counters: list[AnonymousCount]
    received: int


class RateLimiter:
    """Token bucket per client key, sans-I/O (the caller passes `now`)."""

    def __init__(self, rate: float, burst: float, max_clients: int = 100_000) -> None:
        self.rate = rate
        self.burst = burst
        self.max_clients = max_clients
        self._buckets: dict[str, tuple[float, float]] = {}

    def take(self, client: str, n: int, now: float) -> bool:
        tokens, last = self._buckets.get(client, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        ok = tokens >= n
        if ok:
            tokens -= n
        if len(self._buckets) >= self.max_clients and client not in self._buckets:
            self._buckets.clear()  # bounded memory; a reset only ever lets clients through
        self._buckets[client] = (tokens, now)
        return ok


# Field kinds: (checker, max string length). Checkers return the value or raise _Bad.
class _Bad(Exception):
    pass


def _str(maxlen: int) -> Callable[[Any], str]:
    def check(v: Any) -> str:
        if type(v) is not str:
            raise _Bad("must be a string")
        if len(v) > maxlen:
            raise _Bad(f"longer than {maxlen} characters")
        return v

    return check


def _id(v: Any) -> str:
    if type(v) is not str or not v:
        raise _Bad("must be a non-empty string")
    if len(v) > 64:
        raise _Bad("longer than 64 characters")
    return v


def _enum(values: tuple[str, ...]) -> Callable[[Any], str]:
    def check(v: Any) -> str:
        if v not in values or type(v) is not str:
            raise _Bad(f"must be one of {', '.join(values)}")
        return v

    return check


def _count(limit: int) -> Callable[[Any], int]:
    def check(v: Any) -> int:
        if type(v) is not int:  # bool is an int subclass: rejected by the exact type test
            raise _Bad("must be an integer")
        if not 0 <= v <= limit:
            raise _Bad(f"must be between 0 and {limit}")
        return v

    return check


def _number(limit: float) -> Callable[[Any], float]:
    def check(v: Any) -> float:
        t = type(v)
        if t is not int and t is not float:
            raise _Bad("must be a number")
        if not (0 <= v <= limit) or (t is float and math.isnan(v)):
            raise _Bad(f"must be between 0 and {limit:g}")
        return float(v)

    return check


def _bool(v: Any) -> bool:
    if type(v) is not bool:
        raise _Bad("must be true or false")
    return v


_HOUR_MS: Final = 3_600_000.0
# Bounds are generous sanity limits, not policy: they stop garbage, not real players.
_CONTEXT_FIELDS: Final[dict[str, Callable[[Any], Any]]] = {
    "session_id": _id,
    "user_id": _str(256),
    "protocol": _enum(PROTOCOLS),
    "cdn": _str(64),
    "region": _str(64),
    "player_version": _str(64),
    "stream_id": _str(128),
    "codec": _enum(CODECS),
    "profile": _str(32),
    "level": _str(16),
    "gop_s": _number(60.0),
    "b_frames": _count(16),
    "audio_codec": _str(32),
    "channels": _count(64),
    "consent": _bool,
}
assert set(SESSION_FIELDS) | set(STREAM_FIELDS) | {"consent"} == set(_CONTEXT_FIELDS)

_METRIC_CHECKS: Final[dict[str, Callable[[Any], Any]]] = {
    "startup_time_ms": _number(_HOUR_MS),
    "rebuffer_ms": _number(_HOUR_MS),
    "avg_bitrate_kbps": _number(1_000_000.0),
    "dropped_frames": _count(10_000_000),
    "latency_ms": _number(_HOUR_MS),
    "play_time_ms": _number(24 * _HOUR_MS),
    "error_code": _str(64),
    "turn_relay_ratio": _number(1.0),
}

# Per type: every allowed field with its checker, and the required ones.
_ALLOWED: Final[dict[str, dict[str, Callable[[Any], Any]]]] = {}
_REQUIRED: Final[dict[str, tuple[str, ...]]] = {}
for _t, (_req, _opt) in METRICS_BY_TYPE.items():
    _ALLOWED[_t] = {
        **_CONTEXT_FIELDS,
        "event_id": _id,
        "type": _enum(EVENT_TYPES),
        "ts": _count(2**53),
        **{m: _METRIC_CHECKS[m] for m in _req + _opt},
    }
    _REQUIRED[_t] = ("event_id", "ts", "consent", "session_id", "protocol", *_req)

_ROW_DEFAULTS: Final = {
    "cdn": "",
    "region": "",
    "player_version": "",
    "stream_id": "",
    "codec": "",
    "profile": "",
    "level": "",
    "gop_s": 0.0,
    "b_frames": 0,
    "audio_codec": "",
    "channels": 0,
    "startup_time_ms": 0.0,
    "rebuffer_ms": 0.0,
    "avg_bitrate_kbps": 0.0,
    "dropped_frames": 0,
    "latency_ms": 0.0,
    "play_time_ms": 0.0,
    "error_code": "",
    "turn_relay_ratio": None,
}


class Collector:
    """Validates beacon batches. One instance per process; `collect` is the whole API."""

    def __init__(self, config: CollectorConfig) -> None:
        if not config.hmac_key:
            raise ValueError("CollectorConfig.hmac_key is empty")
        self.config = config
        self._limiter = (
            RateLimiter(config.rate_events_per_s, config.rate_burst)
            if config.rate_events_per_s > 0
            else None
        )
        self._hash_cache: dict[str, str] = {}

    def _hash(self, user_id: str) -> str:
        # Players repeat the same user id in every beacon; the cache keeps HMAC off the
        # per-event cost. Bounded, and holds only what this process already received.
        h = self._hash_cache.get(user_id)
        if h is None:
            if len(self._hash_cache) > 50_000:
                self._hash_cache.clear()
            h = self._hash_cache[user_id] = hash_user_id(user_id, self.config.hmac_key)
        return h

    def collect(self, body: bytes, *, now: float, client: str = "") -> Batch:
        """Validate one POSTed batch received at `now` (epoch seconds) from `client`."""
        cfg = self.config
        if len(body) > cfg.max_bytes:
            raise CollectorError(413, "(body)", f"larger than {cfg.max_bytes} bytes")
        try:
            doc = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise CollectorError(400, "(body)", f"not JSON: {exc}") from None
        context: dict[str, Any] = {}
        if type(doc) is dict:
            extra = set(doc) - {"session", "events"}
            if extra:
                name = sorted(extra)[0]
                raise CollectorError(400, name, "unknown field")
            if "events" not in doc:
                raise CollectorError(400, "events", "required")
            events = doc["events"]
            session = doc.get("session", {})
            if type(session) is not dict:
                raise CollectorError(400, "session", "must be an object")
            for key, value in session.items():
                check = _CONTEXT_FIELDS.get(key)
                if check is None:
                    raise CollectorError(400, f"session.{key}", "unknown field")
                try:
                    context[key] = check(value)
                except _Bad as exc:
                    raise CollectorError(400, f"session.{key}", str(exc)) from None
            prefix = "events"
        else:
            events = doc
            prefix = "events"
        if type(events) is not list:
            raise CollectorError(400, prefix, "must be an array")
        if len(events) > cfg.max_events:
            raise CollectorError(413, prefix, f"more than {cfg.max_events} events")
        if self._limiter is not None and not self._limiter.take(client, len(events), now):
            raise CollectorError(429, prefix, "rate limit exceeded, retry later")

        newest_ms = (now + cfg.max_skew_s) * 1000.0
        oldest_ms = (now - cfg.max_age_s) * 1000.0
        rows: list[PlayerEvent] = []
        sessions: list[SessionRow] = []
        anon: dict[tuple[float, str, str, str, str], list[float]] = {}
        seen: set[str] = set()
        for i, ev in enumerate(events):
            where = f"{prefix}[{i}]"
            if type(ev) is not dict:
                raise CollectorError(400, where, "must be an object")
            etype = ev.get("type")
            allowed = _ALLOWED.get(etype) if type(etype) is str else None
            if allowed is None:
                raise CollectorError(400, f"{where}.type", f"must be one of {', '.join(EVENT_TYPES)}")
            merged = dict(context)
            for key, value in ev.items():
                check = allowed.get(key)
                if check is None:
                    raise CollectorError(400, f"{where}.{key}", f"unknown field for {etype}")
                try:
                    merged[key] = check(value)
                except _Bad as exc:
                    raise CollectorError(400, f"{where}.{key}", str(exc)) from None
            for key in _REQUIRED[etype]:
                if key not in merged:
                    raise CollectorError(400, f"{where}.{key}", "required")
            ts_ms = merged["ts"]
            if ts_ms > newest_ms:
                raise CollectorError(400, f"{where}.ts", "in the future")
            if ts_ms < oldest_ms:
                raise CollectorError(400, f"{where}.ts", "too old")
            event_id = merged["event_id"]
            if event_id in seen:
                raise CollectorError(400, f"{where}.event_id", "repeated within the batch")
            seen.add(event_id)
            ts = ts_ms / 1000.0

            if not merged["consent"]:
                # No consent: keep only an anonymous count (no ids, no user, no stream).
                metric = MAIN_METRIC.get(etype)
                key4 = (
                    float(int(ts // 60) * 60),
                    etype,
                    merged["protocol"],
                    merged.get("cdn", ""),
                    merged.get("region", ""),
                )
                acc = anon.get(key4)
                if acc is None:
                    acc = anon[key4] = [0, 0.0]
                acc[0] += 1
                if metric is not None:
                    acc[1] += merged.get(metric, 0.0)
                continue

            raw_user = merged.pop("user_id", "")
            merged["user_id"] = self._hash(raw_user) if raw_user else ""
            del merged["consent"]
            merged["ts"] = ts
            row = PlayerEvent(**{**_ROW_DEFAULTS, **merged})
            rows.append(row)
            if etype == "session_start" or etype == "session_end":
                sessions.append(
                    SessionRow(
                        session_id=row.session_id,
                        user_id=row.user_id,
                        protocol=row.protocol,
                        cdn=row.cdn,
                        region=row.region,
                        player_version=row.player_version,
                        stream_id=row.stream_id,
                        codec=row.codec,
                        start_ts=ts if etype == "session_start" else 0.0,
                        end_ts=ts if etype == "session_end" else 0.0,
                    )
                )
        counters = [
            AnonymousCount(
                minute=k[0], type=k[1], protocol=k[2], cdn=k[3], region=k[4], events=int(v[0]), value_sum=v[1]
            )
            for k, v in anon.items()
        ]
        return Batch(events=rows, sessions=sessions, counters=counters, received=len(events))
