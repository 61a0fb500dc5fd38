"""The I/O edge of the signalling hub: WebSocket listeners (websockets) and the player page.

One port serves players: `GET /` answers the page that runs Epic's frontend library, any
WebSocket upgrade is a player. Streamers (and SFUs) get their own ports, as in Epic's
server (defaults 80/8888/8889), so they can stay on a private interface.

Players authenticate with flowcast's signed URL token (`?token=`, the same token as the
media): a missing, forged or expired token is refused at the upgrade (HTTP 403/410); the
token's ACL must grant `/live/<streamerId>/` for `subscribe` to succeed.
"""

from __future__ import annotations

import asyncio
import http
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from flowcast.protect.tokens import TokenError, TokenInvalid, TokenVerifier, token_from_request
from flowcast.webrtc.pixelstreaming.messages import CLOSE_POLICY, encode
from flowcast.webrtc.pixelstreaming.signalling import Close, Role, Send, SignallingHub

log = logging.getLogger("flowcast.pixelstreaming")

WEB_DIR = Path(__file__).resolve().parents[2] / "web"
PAGE = "pixelstreaming.html"
BUNDLE = "pixelstreaming.bundle.js"
STREAM_PREFIX = "/live/"


def _response(status: int, body: bytes, content_type: str, extra: dict[str, str] | None = None) -> Response:
    headers = Headers({"Content-Type": content_type, "Content-Length": str(len(body)), "Cache-Control": "no-cache"})
    for k, v in (extra or {}).items():
        headers[k] = v
    return Response(status, http.HTTPStatus(status).phrase, headers, body)


@dataclass(frozen=True, slots=True)
class Listen:
    host: str = "127.0.0.1"
    port: int = 8090  # players and the page
    streamer_port: int = 8888
    sfu_port: int | None = None


class PixelStreamingServer:
    """Runs a `SignallingHub` on real sockets."""

    def __init__(self, hub: SignallingHub, *, verifier: TokenVerifier | None = None, web_dir: Path = WEB_DIR) -> None:
        self.hub = hub
        self.verifier = verifier
        self.web_dir = web_dir
        self._sockets: dict[int, _Peer] = {}
        self._servers: list[Server] = []
        self.ports: dict[str, int] = {}

    async def start(self, listen: Listen) -> None:
        limit = self.hub.limits.max_message_bytes
        # websockets' own cap sits above the hub's, so the hub's clearer 1009 reason is what
        # clients normally see; the cap still bounds memory for absurd frames.
        common: dict[str, Any] = {"max_size": 2 * limit + 1024, "ping_interval": 20, "ping_timeout": 20, "close_timeout": 2}
        targets: list[tuple[str, int, Role]] = [("player", listen.port, "player"), ("streamer", listen.streamer_port, "streamer")]
        if listen.sfu_port is not None:
            targets.append(("sfu", listen.sfu_port, "sfu"))
        for name, port, role in targets:
            process = self._player_request if role == "player" else None
            server = await serve(self._handler(role), listen.host, port, process_request=process, **common)
            self._servers.append(server)
            self.ports[name] = server.sockets[0].getsockname()[1]
        log.info("pixel streaming signalling: players/page http://%s:%d/  streamers ws://%s:%d%s",
                 listen.host, self.ports["player"], listen.host, self.ports["streamer"],
                 f"  SFU ws://{listen.host}:{self.ports['sfu']}" if "sfu" in self.ports else "")

    async def close(self) -> None:
        for server in self._servers:
            server.close()
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()

    # ---- HTTP: the page, and the token gate in front of the player upgrade -------------

    def _player_request(self, connection: ServerConnection, request: Request) -> Response | None:
        parts = urlsplit(request.path)
        if request.headers.get("Upgrade", "").lower() != "websocket":
            return self._static(parts.path)
        if self.verifier is None:
            return None
        try:
            token = token_from_request(parts.query, request.headers.get("Cookie"))
            if token is None:
                raise TokenInvalid("no token")
            self.verifier.parse(token, now=time.time())
        except TokenError as exc:
            log.warning("player refused (%d): %s client=%s", exc.status, exc.reason, _remote(connection))
            return _response(exc.status, exc.public_message.encode() + b"\n", "text/plain")
        return None

    def _static(self, path: str) -> Response:
        if path in ("/", f"/{PAGE}"):
            name, ctype = PAGE, "text/html; charset=utf-8"
        elif path in (f"/{BUNDLE}", "/timecode.js"):
            name, ctype = path.lstrip("/"), "text/javascript; charset=utf-8"
        else:
            return _response(404, b"Not Found\n", "text/plain")
        try:
            body = (self.web_dir / name).read_bytes()
        except FileNotFoundError:
            return _response(503, f"{name} is missing: run `make web` to build it\n".encode(), "text/plain")
        return _response(200, body, ctype)

    def _grant(self, connection: ServerConnection) -> Callable[[str], str | None] | None:
        if self.verifier is None:
            return None
        verifier = self.verifier
        token = token_from_request(urlsplit(connection.request.path).query, connection.request.headers.get("Cookie"))
        client_ip = _remote(connection)

        def grant(streamer_id: str) -> str | None:
            try:
                verifier.verify(token or "", path=f"{STREAM_PREFIX}{streamer_id}/", client_ip=client_ip, now=time.time())
            except TokenError as exc:
                log.warning("subscribe to %r refused (%d): %s client=%s", streamer_id, exc.status, exc.reason, client_ip)
                return f"{exc.public_message}: your token does not grant streamer {streamer_id[:64]}"
            return None

        return grant

    # ---- WebSocket connections ------------------------------------------------------------
    #
    # Every connection has its own outbox and writer task: a peer that stops reading fills
    # only its own outbox (and is then closed), it never stalls the handler relaying to it.

    def _handler(self, role: Role) -> Callable[[ServerConnection], Awaitable[None]]:
        async def handle(ws: ServerConnection) -> None:
            grant = self._grant(ws) if role == "player" else None
            cid, actions = self.hub.connect(role, now=time.monotonic(), remote=_remote(ws), grant=grant)
            outbox: asyncio.Queue[_Out] = asyncio.Queue(maxsize=OUTBOX_LIMIT)
            writer = asyncio.create_task(_write(ws, outbox))
            self._sockets[cid] = _Peer(ws, outbox, writer)
            try:
                self._apply(actions)
                async for data in ws:
                    self._apply(self.hub.receive(cid, data, time.monotonic()))
                    if cid not in self._sockets:
                        break  # the hub closed us
            except ConnectionClosed:
                pass
            finally:
                peer = self._sockets.pop(cid, None)
                self._apply(self.hub.disconnect(cid))
                if peer is not None:  # nobody queued a close: the peer went away by itself
                    writer.cancel()
                # returning from a handler makes websockets close with 1000: let a queued
                # close frame (our code + reason) go out first
                await asyncio.gather(writer, return_exceptions=True)

        return handle

    def _apply(self, actions: list[Send | Close]) -> None:
        for action in actions:
            peer = self._sockets.get(action.conn)
            if peer is None:
                continue
            if isinstance(action, Send):
                try:
                    peer.outbox.put_nowait(encode(action.message))
                    continue
                except asyncio.QueueFull:
                    log.warning("closing conn %d: %d messages unread", action.conn, OUTBOX_LIMIT)
                    code, reason = CLOSE_POLICY, f"not reading its messages ({OUTBOX_LIMIT} queued)"
                    self._apply(self.hub.disconnect(action.conn))
            else:
                code, reason = action.code, action.reason
            self._sockets.pop(action.conn, None)
            _drain(peer.outbox)
            peer.outbox.put_nowait((code, reason))


OUTBOX_LIMIT = 256
_Out = str | tuple[int, str]  # a text frame, or (code, reason) to close with


@dataclass(slots=True)
class _Peer:
    ws: ServerConnection
    outbox: asyncio.Queue[_Out]
    writer: asyncio.Task[None]


def _drain(queue: asyncio.Queue[_Out]) -> None:
    """Keep what is queued, but make room for the close: it must not be refused."""
    if queue.full():
        queue.get_nowait()


async def _write(ws: ServerConnection, outbox: asyncio.Queue[_Out]) -> None:
    try:
        while True:
            item = await outbox.get()
            if isinstance(item, str):
                await ws.send(item)
            else:
                await ws.close(*item)
                return
    except ConnectionClosed:
        pass


def _remote(ws: ServerConnection) -> str | None:
    addr = ws.remote_address
    return addr[0] if addr else None
