"""WHIP ingest (RFC 9725): a browser or OBS publishes one stream over WebRTC.

HTTP side, without a framework: `WhipEndpoint.post/delete/patch` take the request's
method, headers and body and return a `WhipResponse`; the origin writes it out.

- POST /whip/<stream>, `Content-Type: application/sdp`, `Authorization: Bearer <token>`
  -> 201 Created, `Location` of the session resource, the SDP answer (non-trickle: aiortc
  gathers every candidate before answering, so the answer is complete).
- DELETE <resource> -> 200 and the session ends (FFmpeg sees the end of its input).
- PATCH <resource> -> 405: neither trickle ICE nor ICE restarts are supported; RFC 9725
  4.3 lets a server refuse them, and clients then send a complete offer.
- 401 without the right bearer token, 415 for any other content type, 400 for an offer
  aiortc cannot use, 409 while another publisher holds the stream, 404 for unknown
  resources.

One publisher per stream. Its decoded frames go to FFmpeg's loopback NUT listener
through `NutFeed`; a session that never reaches ICE "connected" is reaped.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from flowcast.webrtc.ingest_feed import NutFeed

if TYPE_CHECKING:
    from flowcast.origin.app import ControlRequest

__all__ = ["WhipEndpoint", "WhipResponse", "WHIP_PREFIX"]

log = logging.getLogger(__name__)

WHIP_PREFIX = "/whip/"
SDP = "application/sdp"
MAX_OFFER_BYTES = 64 * 1024
CONNECT_TIMEOUT = 15.0  # a session that has not connected by then is closed


@dataclass(frozen=True, slots=True)
class WhipResponse:
    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""


def _error(status: int, text: str, *extra: tuple[str, str]) -> WhipResponse:
    return WhipResponse(status, [("content-type", "text/plain; charset=utf-8"), *extra], (text + "\n").encode())


@dataclass
class _Session:
    resource_id: str
    pc: RTCPeerConnection
    feed: NutFeed
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    connected: asyncio.Event = field(default_factory=asyncio.Event)


class WhipEndpoint:
    """The WHIP endpoint of one stream; `feed_port` is FFmpeg's NUT listener for it."""

    def __init__(
        self,
        stream: str,
        feed_port: int,
        token: str,
        *,
        width: int = 1280,
        height: int = 720,
        ice_servers: Sequence[RTCIceServer] = (),
    ) -> None:
        if len(token) < 16:
            raise ValueError("the WHIP bearer token must be at least 16 characters")
        self.stream = stream
        self.feed_port = feed_port
        self._token = token
        self.width, self.height = width, height
        self.ice_servers = list(ice_servers)
        self.session: _Session | None = None
        self.sessions_started = 0

    @property
    def path(self) -> str:
        return f"{WHIP_PREFIX}{self.stream}"

    def _authorized(self, authorization: str | None) -> bool:
        scheme, _, credential = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not credential:
            return False
        return hmac.compare_digest(credential.strip().encode(), self._token.encode())

    # -- HTTP -------------------------------------------------------------------------------

    async def handle(self, request: ControlRequest) -> WhipResponse:
        """Route one request under /whip/<stream>[/<resource>] (`OriginApp.mount` handler)."""
        method, path, body = request.method, request.path, request.body
        content_type, authorization = request.headers.get("content-type"), request.headers.get("authorization")
        if path == self.path:
            if method != "POST":
                return _error(405, "POST an SDP offer to publish", ("allow", "POST, OPTIONS"))
            return await self.post(content_type, authorization, body)
        resource = path[len(self.path) + 1 :] if path.startswith(self.path + "/") else None
        if resource is None or self.session is None or not hmac.compare_digest(resource, self.session.resource_id):
            return _error(404, "no such WHIP session")
        if not self._authorized(authorization):
            return _error(401, "bearer token required", ("www-authenticate", 'Bearer realm="whip"'))
        if method == "DELETE":
            await self.close_session()
            return WhipResponse(200)
        if method == "PATCH":
            return _error(405, "trickle ICE and ICE restarts are not supported", ("allow", "DELETE, OPTIONS"))
        return _error(405, "DELETE ends the session", ("allow", "DELETE, OPTIONS"))

    async def post(self, content_type: str | None, authorization: str | None, body: bytes) -> WhipResponse:
        if not self._authorized(authorization):
            return _error(401, "bearer token required", ("www-authenticate", 'Bearer realm="whip"'))
        if (content_type or "").split(";")[0].strip().lower() != SDP:
            return _error(415, f"the offer must be {SDP}")
        if len(body) > MAX_OFFER_BYTES:
            return _error(413, "offer too large")
        if self.session is not None:
            return _error(409, f"stream {self.stream} already has a publisher")
        try:
            offer = body.decode("utf-8")
        except UnicodeDecodeError:
            return _error(400, "the offer is not UTF-8 SDP")
        if not offer.startswith("v=0"):
            return _error(400, "the body is not an SDP offer")
        pc = RTCPeerConnection(RTCConfiguration(iceServers=self.ice_servers))
        session = _Session(secrets.token_urlsafe(16), pc, NutFeed(self.feed_port, width=self.width, height=self.height))
        self.session = session
        try:
            answer = await self._negotiate(session, offer)
        except Exception as exc:  # aiortc raises ValueError/KeyError/... on offers it cannot use
            self.session = None
            await pc.close()
            log.info("WHIP offer refused for %s: %s", self.stream, exc)
            return _error(400, f"unusable offer: {exc}")
        session.feed.start()
        session.tasks.append(asyncio.create_task(self._reap_unconnected(session)))
        self.sessions_started += 1
        log.info("WHIP publisher connected to stream %s (session %s)", self.stream, session.resource_id[:6])
        return WhipResponse(
            201,
            [("content-type", SDP), ("location", f"{self.path}/{session.resource_id}")],
            answer.encode(),
        )

    # -- WebRTC -----------------------------------------------------------------------------

    async def _negotiate(self, session: _Session, offer: str) -> str:
        pc = session.pc

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            if track.kind in ("video", "audio"):
                session.tasks.append(asyncio.create_task(self._pump(session, track)))

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            if pc.connectionState == "connected":
                session.connected.set()
            elif pc.connectionState in ("failed", "closed"):
                if self.session is session:
                    log.info("WHIP publisher of %s: connection %s", self.stream, pc.connectionState)
                    await self.close_session()

        await pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
        kinds = {t.kind for t in pc.getTransceivers()}
        if "video" not in kinds:
            raise ValueError("the offer has no video")
        for transceiver in pc.getTransceivers():
            transceiver.direction = "recvonly"
        await pc.setLocalDescription(await pc.createAnswer())
        return pc.localDescription.sdp

    async def _pump(self, session: _Session, track: MediaStreamTrack) -> None:
        put = session.feed.put_video if track.kind == "video" else session.feed.put_audio
        try:
            while True:
                put(await track.recv())
        except MediaStreamError:
            pass  # the track ended

    async def _reap_unconnected(self, session: _Session) -> None:
        try:
            await asyncio.wait_for(session.connected.wait(), CONNECT_TIMEOUT)
        except TimeoutError:
            if self.session is session:
                log.info("WHIP publisher of %s never connected; closing its session", self.stream)
                await self.close_session()

    async def close_session(self) -> None:
        """End the current publisher's session (idempotent)."""
        session, self.session = self.session, None
        if session is None:
            return
        current = asyncio.current_task()
        for task in session.tasks:
            if task is not current:
                task.cancel()
        await session.pc.close()
        session.feed.close()
        await asyncio.get_running_loop().run_in_executor(None, session.feed.join)

    async def close(self) -> None:
        await self.close_session()
