"""Pixel Streaming signalling messages: JSON text frames, validated field by field, sans-I/O.

The schema below follows the message registry of Epic's common library
(`@epicgames-ps/lib-pixelstreamingcommon-ue5.5`, `Messages/signalling_messages`): each
message is a JSON object with a `type` and the fields listed for it. Epic's own clients
reject a message that carries a field they do not know, so we never forward one: unknown
fields are dropped by `parse_message`, missing required fields and wrong types are refused.

Refusals are `ProtocolViolation`s carrying the WebSocket close code (RFC 6455 section 7.4.1)
and a reason that names the message type and field; the I/O edge closes that one
connection with them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

FieldKind = Literal["string", "int", "bool", "object", "strings"]

# type -> {field: (kind, required)}; `type` itself is implied.
SCHEMA: dict[str, dict[str, tuple[FieldKind, bool]]] = {
    "config": {"peerConnectionOptions": ("object", False), "protocolVersion": ("string", False)},
    "identify": {},
    "endpointId": {"id": ("string", True), "protocolVersion": ("string", False)},
    "endpointIdConfirm": {"committedId": ("string", True)},
    "streamerIdChanged": {"newID": ("string", True)},
    "listStreamers": {},
    "streamerList": {"ids": ("strings", True)},
    "subscribe": {"streamerId": ("string", True)},
    "unsubscribe": {},
    "subscribeFailed": {"message": ("string", True)},
    "playerConnected": {"dataChannel": ("bool", True), "sfu": ("bool", True), "playerId": ("string", True)},
    "playerDisconnected": {"playerId": ("string", True)},
    "offer": {
        "sdp": ("string", True),
        "playerId": ("string", False),
        "sfu": ("bool", False),
        "multiplex": ("bool", False),
        "scalabilityMode": ("string", False),
    },
    "answer": {
        "sdp": ("string", True),
        "playerId": ("string", False),
        "minBitrateBps": ("int", False),
        "maxBitrateBps": ("int", False),
    },
    "iceCandidate": {"candidate": ("object", False), "playerId": ("string", False)},
    "disconnectPlayer": {"playerId": ("string", True), "reason": ("string", False)},
    "ping": {"time": ("int", True)},
    "pong": {"time": ("int", True)},
    "streamerDisconnected": {},
    "layerPreference": {"spatialLayer": ("int", True), "temporalLayer": ("int", True), "playerId": ("string", False)},
    "dataChannelRequest": {},
    "peerDataChannels": {"playerId": ("string", True), "sendStreamId": ("int", True), "recvStreamId": ("int", True)},
    "peerDataChannelsReady": {},
    "streamerDataChannels": {"sfuId": ("string", False), "sendStreamId": ("int", True), "recvStreamId": ("int", True)},
    "startStreaming": {},
    "stopStreaming": {},
    "playerCount": {"count": ("int", True)},
    "stats": {"data": ("string", True)},
}
# `layerPreference.playerId` and `streamerDataChannels.sfuId` are required on the wire
# *to the streamer*; players and SFUs may leave them out and the server fills them in.

# RFC 6455 close codes used at the edge.
CLOSE_NORMAL = 1000
CLOSE_UNSUPPORTED_DATA = 1003  # binary frame on a text protocol
CLOSE_INVALID_PAYLOAD = 1007  # not UTF-8 / not JSON
CLOSE_POLICY = 1008  # schema, role or rate violations
CLOSE_TOO_BIG = 1009
CLOSE_INTERNAL = 1011
# Application codes (4000-4999 are private use, RFC 6455 section 7.4.2).
CLOSE_PLAYER_KICKED = 4001  # the streamer asked us to drop this player (disconnectPlayer)
CLOSE_STREAMER_GONE = 4002  # the subscribed streamer disconnected; reconnect to resubscribe

MAX_ICE_CANDIDATE_FIELDS = {"candidate": str, "sdpMid": str, "sdpMLineIndex": int, "usernameFragment": str}


class ProtocolViolation(Exception):
    """A message that closes its connection: `code` and `reason` go into the close frame."""

    code: int = CLOSE_POLICY

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        # RFC 6455: the close reason must fit a 125-byte control frame with the code.
        self.reason = reason.encode("utf-8")[:123].decode("utf-8", "ignore")


class MessageTooLarge(ProtocolViolation):
    code = CLOSE_TOO_BIG


class BinaryNotAllowed(ProtocolViolation):
    code = CLOSE_UNSUPPORTED_DATA


class MalformedMessage(ProtocolViolation):
    """Not UTF-8 JSON, or not a JSON object."""

    code = CLOSE_INVALID_PAYLOAD


class InvalidMessage(ProtocolViolation):
    """Valid JSON that breaks the schema: unknown type, missing or mistyped field."""

    code = CLOSE_POLICY


class RateLimited(ProtocolViolation):
    code = CLOSE_POLICY


def _check(kind: FieldKind, value: Any) -> bool:
    if kind == "string":
        return isinstance(value, str)
    if kind == "int":
        # JSON numbers; bool is an int subclass in Python and never a number on the wire.
        return isinstance(value, (int, float)) and not isinstance(value, bool) and float(value).is_integer()
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "object":
        return isinstance(value, dict)
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _check_candidate(candidate: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, typ in MAX_ICE_CANDIDATE_FIELDS.items():
        if name not in candidate or candidate[name] is None:
            continue
        value = candidate[name]
        if typ is int and (isinstance(value, bool) or not isinstance(value, int)):
            raise InvalidMessage(f"iceCandidate: field candidate.{name} must be an integer")
        if typ is str and not isinstance(value, str):
            raise InvalidMessage(f"iceCandidate: field candidate.{name} must be a string")
        out[name] = value
    if "candidate" not in out:
        raise InvalidMessage("iceCandidate: field candidate.candidate is required")
    return out


def parse_message(data: str | bytes, *, max_bytes: int) -> dict[str, Any]:
    """One text frame -> a validated message dict holding only schema fields.

    Raises `MessageTooLarge`, `BinaryNotAllowed`, `MalformedMessage` or `InvalidMessage`.
    """
    if isinstance(data, (bytes, bytearray, memoryview)):
        raise BinaryNotAllowed("binary frames are not part of the signalling protocol")
    size = len(data.encode("utf-8", "surrogatepass"))
    if size > max_bytes:
        raise MessageTooLarge(f"message of {size} bytes exceeds the limit of {max_bytes} bytes")
    try:
        obj = json.loads(data)
    except (ValueError, RecursionError):
        raise MalformedMessage("message is not valid JSON") from None
    if not isinstance(obj, dict):
        raise MalformedMessage("message must be a JSON object")
    mtype = obj.get("type")
    if not isinstance(mtype, str):
        raise InvalidMessage("message has no string field 'type'")
    fields = SCHEMA.get(mtype)
    if fields is None:
        raise InvalidMessage(f"unknown message type {mtype[:40]!r}")
    out: dict[str, Any] = {"type": mtype}
    for name, (kind, required) in fields.items():
        if name not in obj or obj[name] is None:
            if required:
                raise InvalidMessage(f"{mtype}: required field {name!r} is missing")
            continue
        value = obj[name]
        if not _check(kind, value):
            raise InvalidMessage(f"{mtype}: field {name!r} must be of type {kind}")
        out[name] = int(value) if kind == "int" else value
    if mtype == "iceCandidate" and "candidate" in out:
        out["candidate"] = _check_candidate(out["candidate"])
    return out


def encode(message: dict[str, Any]) -> str:
    """The text frame for a message we send."""
    return json.dumps(message, separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class RateLimit:
    """Token bucket: `burst` messages at once, refilled at `per_second`."""

    per_second: float = 50.0
    burst: int = 100


class TokenBucket:
    def __init__(self, limit: RateLimit, now: float) -> None:
        self.limit = limit
        self.tokens = float(limit.burst)
        self.stamp = now

    def take(self, now: float) -> bool:
        elapsed = max(0.0, now - self.stamp)
        self.stamp = now
        self.tokens = min(float(self.limit.burst), self.tokens + elapsed * self.limit.per_second)
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True
