"""The telemetry event model: field names exactly as in reference/schema.md.

Rows here are what the collector produces and the store writes; they are plain frozen
dataclasses so that the collector stays sans-I/O and fast (no model validation per row
beyond what `collector.py` does by hand).

Units are in the names (`_ms`, `_kbps`); `ts`, `start_ts` and `end_ts` are Unix epoch
seconds as floats (millisecond precision on the wire: players send integer epoch ms).
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import asdict, dataclass
from typing import Any, Final, Literal

Protocol = Literal["ll-hls", "hls", "ll-dash", "dash", "webrtc", "pixel-streaming"]
Codec = Literal["h264", "h265", "av1"]
EventType = Literal[
    "session_start",
    "startup",
    "stall",
    "bitrate_switch",
    "latency",
    "error",
    "heartbeat",
    "session_end",
]

PROTOCOLS: Final = ("ll-hls", "hls", "ll-dash", "dash", "webrtc", "pixel-streaming")
CODECS: Final = ("h264", "h265", "av1")
EVENT_TYPES: Final = (
    "session_start",
    "startup",
    "stall",
    "bitrate_switch",
    "latency",
    "error",
    "heartbeat",
    "session_end",
)

# Session and stream-variant fields: a batch may carry them once in its `session` object,
# every event may carry them itself. They are denormalised onto every stored event so that
# QoE aggregates group by them without a join (ClickHouse's strength is wide rows).
SESSION_FIELDS: Final = ("session_id", "user_id", "protocol", "cdn", "region", "player_version")
STREAM_FIELDS: Final = (
    "stream_id",
    "codec",
    "profile",
    "level",
    "gop_s",
    "b_frames",
    "audio_codec",
    "channels",
)
# QoE metric fields an event may carry, by event type: (required, optional). Semantics:
# - startup.startup_time_ms: request to first frame.
# - stall.rebuffer_ms: the duration of that one stall (one stall = one rebuffer).
# - bitrate_switch.avg_bitrate_kbps: the bitrate of the rendition switched to.
# - latency.latency_ms: one glass-to-glass (or live-edge) latency sample.
# - heartbeat / session_end: play_time_ms, dropped_frames are DELTAS since the previous
#   heartbeat of the session, avg_bitrate_kbps the average over that interval. Deltas keep
#   every aggregate a plain sum over any time range. turn_relay_ratio (schema.md, Infra;
#   WebRTC only): the share of that interval's play time spent on a TURN relay pair.
METRICS_BY_TYPE: Final[dict[str, tuple[tuple[str, ...], tuple[str, ...]]]] = {
    "session_start": ((), ()),
    "startup": (("startup_time_ms",), ()),
    "stall": (("rebuffer_ms",), ()),
    "bitrate_switch": (("avg_bitrate_kbps",), ()),
    "latency": (("latency_ms",), ()),
    "error": (("error_code",), ()),
    "heartbeat": (("play_time_ms",), ("avg_bitrate_kbps", "dropped_frames", "turn_relay_ratio")),
    "session_end": (("play_time_ms",), ("avg_bitrate_kbps", "dropped_frames", "error_code", "turn_relay_ratio")),
}
METRIC_FIELDS: Final = (
    "startup_time_ms",
    "rebuffer_count",
    "rebuffer_ms",
    "avg_bitrate_kbps",
    "dropped_frames",
    "latency_ms",
    "play_time_ms",
    "error_code",
)


def hash_user_id(user_id: str, key: bytes) -> str:
    """Pseudonymise a user id (LGPD Art. 13 §4): keyed HMAC-SHA256, hex.

    The key stays on the server, apart from the data, so the stored hash cannot be tied
    back to a person without it; a plain hash could be reversed by hashing candidate ids.
    """
    if not key:
        raise ValueError("user id HMAC key is empty")
    return hmac.new(key, user_id.encode("utf-8"), hashlib.sha256).hexdigest()


@dataclass(frozen=True, slots=True)
class PlayerEvent:
    """One consented player event, as stored (`player_events` table)."""

    event_id: str
    type: str
    ts: float
    session_id: str
    user_id: str  # HMAC-SHA256 hex of the raw id, or "" when the player sent none
    protocol: str
    cdn: str = ""
    region: str = ""
    player_version: str = ""
    stream_id: str = ""
    codec: str = ""
    profile: str = ""
    level: str = ""
    gop_s: float = 0.0
    b_frames: int = 0
    audio_codec: str = ""
    channels: int = 0
    startup_time_ms: float = 0.0
    rebuffer_ms: float = 0.0
    avg_bitrate_kbps: float = 0.0
    dropped_frames: int = 0
    latency_ms: float = 0.0
    play_time_ms: float = 0.0
    error_code: str = ""
    turn_relay_ratio: float | None = None  # WebRTC heartbeats only; None: not measured

    def as_row(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class SessionRow:
    """Session attributes (`sessions` table), written from session_start / session_end.

    `start_ts` / `end_ts` are 0.0 when not known yet; the store keeps min(start_ts) and
    max(end_ts), so a retried batch or the two halves of a session merge idempotently.
    """

    session_id: str
    user_id: str
    protocol: str
    cdn: str
    region: str
    player_version: str
    stream_id: str
    codec: str
    start_ts: float
    end_ts: float

    def as_row(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class AnonymousCount:
    """What is kept of events sent without consent (LGPD Art. 6 III, 7 I): counts per
    minute, type and coarse dimensions, no session, user or event ids."""

    minute: float  # epoch seconds, start of the minute
    type: str
    protocol: str
    cdn: str
    region: str
    events: int
    value_sum: float  # sum of the event's main metric (e.g. stall rebuffer_ms), 0 if none

    def as_row(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class OriginRequest:
    """One origin access event (`origin_requests` table), correlated by CMCD `sid`."""

    ts: float
    path: str
    status: int
    bytes: int
    ttfb_ms: float
    session_id: str = ""  # CMCD sid
    object_type: str = ""  # CMCD ot: m, a, v, av, i, c, tt, k, o
    buffer_length_ms: int = 0  # CMCD bl
    throughput_kbps: int = 0  # CMCD mtp
    bitrate_kbps: int = 0  # CMCD br
    content_id: str = ""  # CMCD cid
    origin_id: str = ""

    def as_row(self) -> dict[str, Any]:
        return asdict(self)


# The main metric of each type, summed into AnonymousCount.value_sum.
MAIN_METRIC: Final = {
    "startup": "startup_time_ms",
    "stall": "rebuffer_ms",
    "bitrate_switch": "avg_bitrate_kbps",
    "latency": "latency_ms",
    "heartbeat": "play_time_ms",
    "session_end": "play_time_ms",
}
