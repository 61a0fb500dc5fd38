"""The Pixel Streaming signalling server as a state machine: events in, actions out.

Three roles connect over WebSocket, as in Epic's signalling server
(PixelStreamingInfrastructure `Signalling/src`): *streamers* (Unreal Engine, or our
simulated streamer), *players* (browsers running Epic's frontend library) and *SFUs*
(which subscribe to a streamer like a player and are subscribed to like a streamer).

    hub = SignallingHub(options)
    conn, actions = hub.connect("player", grant=...)   # -> Send(config)
    actions = hub.receive(conn, text, now)             # -> Send(...) / Close(...)
    actions = hub.disconnect(conn)                     # -> notifications for the others

No sockets here: `server.py` turns `Send` into a text frame and `Close` into a close
frame with the code and reason. A protocol violation closes only the connection that
committed it; everything it was part of (subscriptions, player counts) is cleaned up
exactly as for a normal disconnect, so other connections see an ordinary departure.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from flowcast.webrtc.pixelstreaming.messages import (
    CLOSE_PLAYER_KICKED,
    CLOSE_STREAMER_GONE,
    ProtocolViolation,
    RateLimit,
    RateLimited,
    InvalidMessage,
    TokenBucket,
    parse_message,
)

log = logging.getLogger("flowcast.pixelstreaming")

Role = Literal["streamer", "player", "sfu"]
# grant(streamer_id) -> None if this player may watch that streamer, else a refusal reason
Grant = Callable[[str], "str | None"]
DEFAULT_STREAMER_ID = "DefaultStreamer"


@dataclass(frozen=True, slots=True)
class Send:
    conn: int
    message: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Close:
    conn: int
    code: int
    reason: str


Action = Send | Close


@dataclass(frozen=True, slots=True)
class HubLimits:
    max_players_per_streamer: int = 0  # 0 = unlimited, as in Epic's `maxSubscribers`
    max_message_bytes: int = 64 * 1024  # an SDP with many candidates is ~10 KB
    rate: RateLimit = RateLimit()


@dataclass(eq=False)
class _Conn:
    id: int
    role: Role
    bucket: TokenBucket
    remote: str | None = None
    grant: Grant | None = None
    player_id: str | None = None  # players and SFUs
    streamer_id: str | None = None  # streamers and SFUs, once identified
    subscribed: str | None = None  # streamer id this player/SFU watches
    subscribers: set[int] = field(default_factory=set)  # conn ids subscribed to this streamer
    closed: bool = False


class SignallingHub:
    """All connections of one signalling server and the routes between them."""

    def __init__(
        self,
        peer_connection_options: Callable[[Role], dict[str, Any]] | dict[str, Any] | None = None,
        limits: HubLimits = HubLimits(),
    ) -> None:
        self._options = peer_connection_options
        self.limits = limits
        self._conns: dict[int, _Conn] = {}
        self._streamers: dict[str, int] = {}  # streamer id -> conn id (streamers and SFUs)
        self._players: dict[str, int] = {}  # player id -> conn id (players and SFUs)
        self._next_conn = 1
        self._next_player = 1

    # ---- queries (for logs, tests and the page) -------------------------------------

    def streamer_ids(self) -> list[str]:
        return list(self._streamers)

    def player_count(self, streamer_id: str) -> int:
        conn = self._conns.get(self._streamers.get(streamer_id, -1))
        return len(conn.subscribers) if conn else 0

    def role(self, conn: int) -> Role | None:
        c = self._conns.get(conn)
        return c.role if c else None

    def player_id(self, conn: int) -> str | None:
        c = self._conns.get(conn)
        return c.player_id if c else None

    # ---- events -------------------------------------------------------------------------

    def connect(self, role: Role, *, now: float, remote: str | None = None, grant: Grant | None = None) -> tuple[int, list[Action]]:
        """A new authenticated WebSocket; returns its id and the greeting to send."""
        cid = self._next_conn
        self._next_conn += 1
        conn = _Conn(cid, role, TokenBucket(self.limits.rate, now), remote=remote, grant=grant)
        self._conns[cid] = conn
        if role in ("player", "sfu"):
            conn.player_id = str(self._next_player) if role == "player" else f"SFU{self._next_player}"
            self._next_player += 1
            self._players[conn.player_id] = cid
        actions: list[Action] = [Send(cid, {"type": "config", "peerConnectionOptions": self._peer_options(role), "protocolVersion": "1.0.0"})]
        if role in ("streamer", "sfu"):
            actions.append(Send(cid, {"type": "identify"}))
        log.info("%s connected (conn %d%s)", role, cid, f", player {conn.player_id}" if conn.player_id else "")
        return cid, actions

    def receive(self, conn_id: int, data: str | bytes, now: float) -> list[Action]:
        """One frame from a connection."""
        conn = self._conns.get(conn_id)
        if conn is None or conn.closed:
            return []
        try:
            if not conn.bucket.take(now):
                lim = self.limits.rate
                raise RateLimited(f"rate limit exceeded ({lim.per_second:g} messages/s, burst {lim.burst})")
            message = parse_message(data, max_bytes=self.limits.max_message_bytes)
            return self._dispatch(conn, message)
        except ProtocolViolation as exc:
            log.warning("closing %s conn %d (%s): %s", conn.role, conn.id, exc.code, exc.reason)
            return self._close(conn, exc.code, exc.reason)

    def disconnect(self, conn_id: int) -> list[Action]:
        """The WebSocket is gone (either side closed it)."""
        conn = self._conns.pop(conn_id, None)
        if conn is None:
            return []
        conn.closed = True
        return self._forget(conn)

    # ---- internals ------------------------------------------------------------------------

    def _peer_options(self, role: Role) -> dict[str, Any]:
        if callable(self._options):
            return self._options(role)
        return dict(self._options or {})

    def _close(self, conn: _Conn, code: int, reason: str) -> list[Action]:
        if conn.closed:
            return []
        actions: list[Action] = [Close(conn.id, code, reason)]
        self._conns.pop(conn.id, None)
        conn.closed = True
        return actions + self._forget(conn)

    def _forget(self, conn: _Conn) -> list[Action]:
        actions: list[Action] = []
        if conn.player_id is not None:
            actions += self._unsubscribe(conn)
            self._players.pop(conn.player_id, None)
        if conn.streamer_id is not None and self._streamers.get(conn.streamer_id) == conn.id:
            del self._streamers[conn.streamer_id]
            for sub_id in sorted(conn.subscribers):
                sub = self._conns.get(sub_id)
                if sub is None:
                    continue
                sub.subscribed = None
                actions.append(Send(sub.id, {"type": "streamerDisconnected"}))
                if sub.role == "player":
                    # Epic's frontend reconnects on close (any code but 1001) and, with
                    # WaitForStreamer, polls listStreamers until the streamer is back.
                    actions += self._close(sub, CLOSE_STREAMER_GONE, "streamer disconnected")
            conn.subscribers.clear()
            log.info("streamer %r left", conn.streamer_id)
        return actions

    def _dispatch(self, conn: _Conn, msg: dict[str, Any]) -> list[Action]:
        mtype = msg["type"]
        if mtype == "ping":
            return [Send(conn.id, {"type": "pong", "time": msg["time"]})]
        if mtype in ("pong", "stats"):
            return []
        if conn.role == "streamer":
            return self._from_streamer(conn, msg)
        if conn.role == "player":
            return self._from_player(conn, msg)
        return self._from_sfu(conn, msg)

    # streamer -> server
    def _from_streamer(self, conn: _Conn, msg: dict[str, Any]) -> list[Action]:
        mtype = msg["type"]
        if mtype == "endpointId":
            return self._identify(conn, msg["id"])
        if conn.streamer_id is None:
            raise InvalidMessage(f"{mtype}: a streamer must send endpointId first")
        if mtype in ("offer", "answer", "iceCandidate"):
            return self._to_player(conn, msg, strip_player_id=False)
        if mtype == "disconnectPlayer":
            target = self._conns.get(self._players.get(msg["playerId"], -1))
            if target is None or target.subscribed != conn.streamer_id:
                return []
            return self._close(target, CLOSE_PLAYER_KICKED, msg.get("reason") or "disconnected by the streamer")
        if mtype == "layerPreference":
            # meant for an SFU serving this streamer's players
            return [Send(sid, msg) for sid in sorted(conn.subscribers) if self._conns[sid].role == "sfu"]
        if mtype in ("startStreaming", "stopStreaming"):
            return []
        raise InvalidMessage(f"{mtype}: not a message a streamer sends")

    # player -> server
    def _from_player(self, conn: _Conn, msg: dict[str, Any]) -> list[Action]:
        mtype = msg["type"]
        if mtype == "listStreamers":
            return [Send(conn.id, {"type": "streamerList", "ids": self.streamer_ids()})]
        if mtype == "subscribe":
            return self._subscribe(conn, msg["streamerId"])
        if mtype == "unsubscribe":
            return self._unsubscribe(conn)
        if mtype in ("offer", "answer", "iceCandidate", "dataChannelRequest", "peerDataChannelsReady", "layerPreference"):
            return self._to_streamer(conn, msg)
        raise InvalidMessage(f"{mtype}: not a message a player sends")

    # SFU -> server: a player towards its streamer, a streamer towards its players
    def _from_sfu(self, conn: _Conn, msg: dict[str, Any]) -> list[Action]:
        mtype = msg["type"]
        if mtype == "endpointId":
            return self._identify(conn, msg["id"])
        if mtype == "listStreamers":
            return [Send(conn.id, {"type": "streamerList", "ids": [s for s in self.streamer_ids() if s != conn.streamer_id]})]
        if mtype == "subscribe":
            return self._subscribe(conn, msg["streamerId"])
        if mtype == "unsubscribe":
            return self._unsubscribe(conn)
        if mtype in ("offer", "peerDataChannels"):
            return self._to_player(conn, msg, strip_player_id=True)
        if mtype == "iceCandidate" and msg.get("playerId") in self._players and msg.get("playerId") != conn.player_id:
            return self._to_player(conn, msg, strip_player_id=True)
        if mtype in ("answer", "iceCandidate"):
            return self._to_streamer(conn, msg)
        if mtype == "streamerDataChannels":
            return self._to_streamer(conn, {**msg, "sfuId": conn.player_id})
        if mtype == "startStreaming":
            return []
        if mtype == "stopStreaming":
            actions = []
            if conn.streamer_id is not None:
                # as if the SFU-as-streamer left; it stays connected and may identify again
                sid = conn.streamer_id
                actions = self._forget_streamer_side(conn)
                log.info("SFU %r stopped streaming", sid)
            return actions
        raise InvalidMessage(f"{mtype}: not a message an SFU sends")

    def _forget_streamer_side(self, conn: _Conn) -> list[Action]:
        player_id, conn.player_id = conn.player_id, None
        actions = self._forget(conn)
        conn.player_id = player_id
        conn.streamer_id = None
        return actions

    def _identify(self, conn: _Conn, wanted: str) -> list[Action]:
        wanted = wanted.strip() or DEFAULT_STREAMER_ID
        if len(wanted) > 64 or not wanted.isprintable():
            raise InvalidMessage("endpointId: field 'id' must be 1-64 printable characters")
        old = conn.streamer_id
        if old is not None and self._streamers.get(old) == conn.id:
            del self._streamers[old]
        committed = wanted
        n = 1
        while committed in self._streamers:  # Epic appends a suffix to a duplicate id
            committed = f"{wanted}{n}"
            n += 1
        conn.streamer_id = committed
        self._streamers[committed] = conn.id
        actions: list[Action] = [Send(conn.id, {"type": "endpointIdConfirm", "committedId": committed})]
        if old is not None and old != committed:
            for sid in sorted(conn.subscribers):
                self._conns[sid].subscribed = committed
                actions.append(Send(sid, {"type": "streamerIdChanged", "newID": committed}))
        log.info("%s conn %d identified as %r", conn.role, conn.id, committed)
        return actions

    def _subscribe(self, conn: _Conn, streamer_id: str) -> list[Action]:
        target_id = self._streamers.get(streamer_id)
        if target_id is None or target_id == conn.id:
            return [Send(conn.id, {"type": "subscribeFailed", "message": f"Streamer {streamer_id[:64]} does not exist."})]
        if conn.grant is not None:
            refusal = conn.grant(streamer_id)
            if refusal is not None:
                return [Send(conn.id, {"type": "subscribeFailed", "message": refusal})]
        actions: list[Action] = []
        if conn.subscribed is not None:
            actions += self._unsubscribe(conn)
        target = self._conns[target_id]
        limit = self.limits.max_players_per_streamer
        players = sum(1 for s in target.subscribers if self._conns[s].role == "player")
        if conn.role == "player" and limit > 0 and players >= limit:
            return actions + [Send(conn.id, {"type": "subscribeFailed", "message": f"Streamer {streamer_id} is full. Max players = {limit}."})]
        conn.subscribed = streamer_id
        target.subscribers.add(conn.id)
        actions.append(Send(target.id, {"type": "playerConnected", "playerId": conn.player_id, "dataChannel": True, "sfu": conn.role == "sfu"}))
        actions += self._player_count(target)
        return actions

    def _unsubscribe(self, conn: _Conn) -> list[Action]:
        if conn.subscribed is None:
            return []
        target = self._conns.get(self._streamers.get(conn.subscribed, -1))
        conn.subscribed = None
        if target is None:
            return []
        target.subscribers.discard(conn.id)
        return [Send(target.id, {"type": "playerDisconnected", "playerId": conn.player_id})] + self._player_count(target)

    def _player_count(self, streamer: _Conn) -> list[Action]:
        count = len(streamer.subscribers)
        return [Send(sid, {"type": "playerCount", "count": count}) for sid in sorted(streamer.subscribers)]

    def _to_streamer(self, conn: _Conn, msg: dict[str, Any]) -> list[Action]:
        target = self._conns.get(self._streamers.get(conn.subscribed or "", -1))
        if target is None:
            log.debug("dropping %s from conn %d: not subscribed", msg["type"], conn.id)
            return []
        out = dict(msg)
        if conn.role == "player" or "playerId" not in out:
            out["playerId"] = conn.player_id  # a player cannot speak for another player
        return [Send(target.id, out)]

    def _to_player(self, conn: _Conn, msg: dict[str, Any], *, strip_player_id: bool) -> list[Action]:
        player_id = msg.get("playerId")
        if not player_id:
            raise InvalidMessage(f"{msg['type']}: field 'playerId' is required from a {conn.role}")
        target = self._conns.get(self._players.get(player_id, -1))
        if target is None or target.subscribed != conn.streamer_id:
            return []  # the player left meanwhile, or is someone else's
        out = dict(msg)
        if strip_player_id:
            del out["playerId"]
        return [Send(target.id, out)]
