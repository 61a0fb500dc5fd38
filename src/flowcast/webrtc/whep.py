"""WHEP (draft-ietf-wish-whep, the egress twin of WHIP, RFC 9725): HTTP resource logic and
the aiortc peers behind it.

    POST   /whep/<stream>          application/sdp offer -> 201, Location, answer (SDP)
    PATCH  /whep/<stream>/<id>     application/trickle-ice-sdpfrag -> 204 (remote candidates)
    DELETE /whep/<stream>/<id>     -> 200, the peer connection is closed

The request checks are sans-I/O functions raising `WhepError` with the status to answer
(415 content type, 400 unparsable offer, 404 stream/resource, 403/410 token, 503 full);
`WhepService.mounted` is the thin HTTP edge (the origin's `mount`, which also answers
CORS preflights). ICE servers go to the client in `Link` headers (RFC 9725 4.6) with
per-session TURN REST credentials (`turn.py`). aiortc gathers all its candidates before
answering, so the answer is complete and trickle from us is not needed; the client's
late candidates are accepted by PATCH (an ICE restart is 501).

The interface stays the same if an SFU takes over the media later: only `WhepService`'s
peer creation would change.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc import sdp as aiortc_sdp

from flowcast.protect.tokens import TokenError, TokenInvalid, TokenVerifier, token_from_request
from flowcast.webrtc.forward import Fanout, PacketTrack
from flowcast.webrtc.turn import turn_credentials

if TYPE_CHECKING:
    from flowcast.origin.app import ControlRequest

log = logging.getLogger("flowcast.webrtc")

PREFIX = "/whep/"
SDP = "application/sdp"
SDPFRAG = "application/trickle-ice-sdpfrag"
MAX_OFFER_BYTES = 64 * 1024
MAX_PENDING = 16  # offers being negotiated at once (candidate gathering takes ~100 ms each)
_STREAM_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
_RESOURCE_RE = re.compile(r"[A-Za-z0-9_-]{22,64}")
# The one H.264 format the encoder produces (command.webrtc_output): constrained baseline,
# packetization mode 1. aiortc's capability 42e01f is that profile; matching is on the
# profile, not the level (aiortc is_codec_compatible, RFC 6184 8.2.2 level-asymmetry).
H264_PARAMS = {"level-asymmetry-allowed": "1", "packetization-mode": "1", "profile-level-id": "42e01f"}


class WhepError(Exception):
    """A refused WHEP request: `status` to answer, `message` for the client (no secrets)."""

    def __init__(self, status: int, message: str, headers: Sequence[tuple[str, str]] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = list(headers)


# -- sans-I/O request checks ----------------------------------------------------------------


def parse_path(path: str) -> tuple[str, str | None]:
    """`/whep/<stream>` -> (stream, None); `/whep/<stream>/<id>` -> (stream, id); else 404."""
    if not path.startswith(PREFIX):
        raise WhepError(404, "not a WHEP path")
    parts = path[len(PREFIX):].split("/")
    if len(parts) == 1 and _STREAM_RE.fullmatch(parts[0]):
        return parts[0], None
    if len(parts) == 2 and _STREAM_RE.fullmatch(parts[0]) and _RESOURCE_RE.fullmatch(parts[1]):
        return parts[0], parts[1]
    raise WhepError(404, "no such WHEP endpoint or resource")


def media_type(header: str | None) -> str:
    """The media type of a Content-Type header, lower case, without parameters."""
    return (header or "").split(";", 1)[0].strip().lower()


def require_type(header: str | None, expected: str) -> None:
    if media_type(header) != expected:
        raise WhepError(415, f"Content-Type must be {expected}", [("accept", expected)])


@dataclass(frozen=True, slots=True)
class Offer:
    sdp: str
    video: bool
    audio: bool


def parse_offer(body: bytes) -> Offer:
    """Validate a WHEP offer: SDP that parses, with a receivable H.264 constrained baseline
    (packetization-mode 1) video and/or Opus audio section. 400 otherwise."""
    if not body:
        raise WhepError(400, "empty offer (this endpoint does not make offers)")
    if len(body) > MAX_OFFER_BYTES:
        raise WhepError(413, f"offer larger than {MAX_OFFER_BYTES} bytes")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise WhepError(400, "offer is not UTF-8") from None
    if not text.startswith("v=0"):
        raise WhepError(400, "offer is not SDP (must start with v=0)")
    try:
        desc = aiortc_sdp.SessionDescription.parse(text)
    except Exception:  # noqa: BLE001 - aiortc's parser raises ValueError, KeyError, IndexError...
        raise WhepError(400, "offer is not parsable SDP") from None
    video = audio = False
    for media in desc.media:
        if media.direction not in (None, "recvonly", "sendrecv") or not media.port:
            continue
        if not media.ice or not media.ice.usernameFragment or not media.dtls:
            raise WhepError(400, f"offer m={media.kind} lacks ICE credentials or a DTLS fingerprint")
        if media.kind == "video":
            video = video or any(_is_our_h264(c) for c in media.rtp.codecs)
        elif media.kind == "audio":
            audio = audio or any(c.mimeType.lower() == "audio/opus" for c in media.rtp.codecs)
    if not video and not audio:
        raise WhepError(
            400, "offer receives neither H.264 constrained baseline (packetization-mode=1) video nor Opus audio"
        )
    return Offer(text, video, audio)


def _is_our_h264(codec: Any) -> bool:
    if codec.mimeType.lower() != "video/h264":
        return False
    try:
        profile, _ = aiortc_sdp.parse_h264_profile_level_id(str(codec.parameters.get("profile-level-id", "42e01f")))
    except ValueError:
        return False
    return str(codec.parameters.get("packetization-mode", "0")) == "1" and profile == aiortc_sdp.H264Profile.PROFILE_CONSTRAINED_BASELINE


@dataclass(frozen=True, slots=True)
class WhepResponse:
    status: int
    headers: list[tuple[str, str]]
    body: bytes


@dataclass(frozen=True, slots=True)
class SdpFrag:
    ufrag: str | None
    pwd: str | None
    candidates: tuple[str, ...]
    end_of_candidates: bool


def parse_sdpfrag(body: bytes) -> SdpFrag:
    """An application/trickle-ice-sdpfrag body (RFC 8840): ufrag/pwd and candidate lines."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise WhepError(400, "sdpfrag is not UTF-8") from None
    ufrag = pwd = None
    candidates: list[str] = []
    end = False
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("a=ice-ufrag:"):
            ufrag = line[12:]
        elif line.startswith("a=ice-pwd:"):
            pwd = line[10:]
        elif line.startswith("a=candidate:"):
            candidates.append(line[12:])
        elif line == "a=end-of-candidates":
            end = True
    return SdpFrag(ufrag, pwd, tuple(candidates), end)


def link_value(url: str, username: str | None = None, credential: str | None = None) -> str:
    """One `Link` header value advertising an ICE server (RFC 9725 4.6)."""
    value = f'<{url}>; rel="ice-server"'
    if username is not None and credential is not None:
        value += f'; username="{username}"; credential="{credential}"; credential-type="password"'
    return value


def bearer_token(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return value.strip() or None


# -- the peers ---------------------------------------------------------------------------------


@dataclass(slots=True)
class TurnIssuer:
    """Mints per-session TURN REST credentials for the configured coturn."""

    secret: str
    urls: tuple[str, ...]
    ttl: int = 3600

    def links(self, user: str) -> list[str]:
        creds = turn_credentials(self.secret, user, ttl=self.ttl, urls=self.urls)
        return [link_value(u, creds.username, creds.password) for u in self.urls]


@dataclass(eq=False)
class WhepSession:
    id: str
    stream: str
    pc: RTCPeerConnection
    tracks: tuple[PacketTrack, PacketTrack]
    created: float = field(default_factory=time.monotonic)
    connected_at: float | None = None
    closed: bool = False


class WhepService:
    """The WHEP endpoint of one stream: peers created per POST, fed by one `Fanout`."""

    def __init__(
        self,
        stream: str,
        fanout: Fanout,
        *,
        verifier: TokenVerifier | None = None,
        turn: TurnIssuer | None = None,
        stun_urls: Sequence[str] = (),
        max_viewers: int = 200,
        connect_timeout: float = 15.0,
        profile_level_id: str = "42e01f",
    ) -> None:
        self.stream = stream
        self.fanout = fanout
        self.verifier = verifier
        self.turn = turn
        self.stun_urls = tuple(stun_urls)
        self.max_viewers = max_viewers
        self.connect_timeout = connect_timeout
        if not re.fullmatch(r"42e0[0-9a-f]{2}", profile_level_id):
            raise ValueError("profile_level_id must be constrained baseline: 42e0XX")
        self.profile_level_id = profile_level_id
        self.sessions: dict[str, WhepSession] = {}
        self._pending = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self.reaped = 0

    # -- HTTP edge (mounted on the origin: OriginApp.mount) --------------------------------------

    async def mounted(self, request: ControlRequest) -> WhepResponse:
        """The origin's mount handler (`OriginApp.mount`)."""
        try:
            return await self._dispatch(request.method, request.path, request.headers, request.body, request.client_ip)
        except WhepError as exc:
            return WhepResponse(
                exc.status, [*exc.headers, ("content-type", "text/plain; charset=utf-8")], (exc.message + "\n").encode()
            )

    async def _dispatch(
        self, method: str, path: str, headers: Any, body: bytes, client_ip: str | None = None
    ) -> WhepResponse:
        stream, rid = parse_path(path)
        if stream != self.stream:
            raise WhepError(404, "no such stream")
        if rid is None:
            if method != "POST":
                raise WhepError(405, "use POST with an SDP offer", [("allow", "OPTIONS, POST")])
            self._authorize(headers, stream, client_ip)
            require_type(headers.get("content-type"), SDP)
            return await self._create(parse_offer(body))
        session = self.sessions.get(rid)
        if session is None:
            raise WhepError(404, "no such WHEP resource")
        if method == "DELETE":
            await self.close_session(session)
            return WhepResponse(200, [], b"")
        if method == "PATCH":
            require_type(headers.get("content-type"), SDPFRAG)
            await self._trickle(session, parse_sdpfrag(body))
            return WhepResponse(204, [], b"")
        raise WhepError(405, "use PATCH or DELETE on a WHEP resource", [("allow", "OPTIONS, PATCH, DELETE")])

    def _authorize(self, headers: Any, stream: str, client_ip: str | None = None) -> None:
        """The media token (protect/tokens.py) for /live/<stream>/: `Authorization: Bearer`
        per WHEP, or the player kit's cookie. 403 bad, 410 expired."""
        if self.verifier is None:
            return
        try:
            token = bearer_token(headers.get("authorization")) or token_from_request("", headers.get("cookie"))
            if token is None:
                raise TokenInvalid("no token")
            self.verifier.verify(token, path=f"/live/{stream}/", client_ip=client_ip, now=time.time())
        except TokenError as exc:
            log.warning("WHEP token refused (%s): %s", exc.status, exc.reason)
            raise WhepError(exc.status, exc.public_message) from None

    def _ice_links(self, user: str) -> list[str]:
        links = [link_value(u) for u in self.stun_urls]
        if self.turn is not None:
            links += self.turn.links(user)
        return links

    # -- sessions ------------------------------------------------------------------------------

    async def _create(self, offer: Offer) -> WhepResponse:
        if len(self.sessions) + self._pending >= self.max_viewers:
            raise WhepError(503, "viewer limit reached", [("retry-after", "10")])
        if self._pending >= MAX_PENDING:
            raise WhepError(503, "too many offers in progress", [("retry-after", "1")])
        self._pending += 1
        rid = secrets.token_urlsafe(24)
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        video, audio = self.fanout.subscribe()
        session = WhepSession(rid, self.stream, pc, (video, audio))
        try:
            # Transceivers before the offer: aiortc fixes the negotiated codecs while it
            # applies the remote description, so the H.264 preference must be set first.
            if offer.video:
                pc.addTransceiver(video, direction="sendonly").setCodecPreferences(_h264_preference())
            if offer.audio:
                pc.addTransceiver(audio, direction="sendonly").setCodecPreferences(_opus_preference())
            await pc.setRemoteDescription(RTCSessionDescription(offer.sdp, "offer"))
            await pc.setLocalDescription(await pc.createAnswer())
        except WhepError:
            raise
        except Exception as exc:  # noqa: BLE001 - aiortc raises many types for bad offers
            self.fanout.unsubscribe(video, audio)
            await pc.close()
            log.info("WHEP offer refused: %s", exc)
            raise WhepError(400, "offer could not be negotiated") from None
        finally:
            self._pending -= 1
        self.sessions[rid] = session

        @pc.on("connectionstatechange")
        async def _state() -> None:
            state = pc.connectionState
            if state == "connected" and session.connected_at is None:
                session.connected_at = time.monotonic()
            elif state in ("failed", "closed"):
                await self.close_session(session, reaped=state == "failed")

        self._spawn(self._watch_connect(session))
        location = f"{PREFIX}{self.stream}/{rid}"
        headers = [
            ("content-type", SDP),
            ("location", location),
            ("accept-patch", SDPFRAG),
            *[("link", v) for v in self._ice_links(rid[:16])],
        ]
        log.info("WHEP viewer %s… joined (%d watching)", rid[:6], len(self.sessions))
        # aiortc only knows level 3.1 (42e01f); the answer states the level the encoder
        # really uses (command.h264_level), e.g. 4.0 for 1080p30 (RFC 6184 8.1).
        answer = pc.localDescription.sdp.replace(
            f"profile-level-id={H264_PARAMS['profile-level-id']}", f"profile-level-id={self.profile_level_id}"
        )
        return WhepResponse(201, headers, answer.encode())

    async def _trickle(self, session: WhepSession, frag: SdpFrag) -> None:
        remote = session.pc.remoteDescription
        if frag.ufrag is not None and remote is not None and f"a=ice-ufrag:{frag.ufrag}" not in remote.sdp:
            raise WhepError(501, "ICE restarts are not supported; DELETE and POST a new offer")
        transceivers = session.pc.getTransceivers()
        if not transceivers:
            return
        mid = transceivers[0].mid  # BUNDLE: one transport for every section
        for line in frag.candidates:
            try:
                cand = aiortc_sdp.candidate_from_sdp(line)
            except (ValueError, IndexError, AssertionError):
                raise WhepError(400, "unparsable a=candidate line") from None
            if cand.ip.endswith(".local"):
                # mDNS-hidden host candidate: resolving it means multicast on the LAN; the
                # client's checks reach us anyway and are learnt as peer-reflexive.
                continue
            cand.sdpMid = mid
            await session.pc.addIceCandidate(cand)

    async def _watch_connect(self, session: WhepSession) -> None:
        """Close a peer whose ICE/DTLS does not complete in time (a client that left or
        never could connect): it holds a port and a fan-out slot until then."""
        await asyncio.sleep(self.connect_timeout)
        if not session.closed and session.connected_at is None:
            log.info("WHEP viewer %s… never connected: closed after %.0f s", session.id[:6], self.connect_timeout)
            await self.close_session(session, reaped=True)

    async def close_session(self, session: WhepSession, *, reaped: bool = False) -> None:
        if session.closed:
            return
        session.closed = True
        self.sessions.pop(session.id, None)
        self.fanout.unsubscribe(*session.tracks)
        if reaped:
            self.reaped += 1
        try:
            await session.pc.close()
        except Exception:  # noqa: BLE001 - a half-set-up peer may fail to close cleanly
            log.debug("closing WHEP peer %s failed", session.id[:6], exc_info=True)
        log.info("WHEP viewer %s… left (%d watching)", session.id[:6], len(self.sessions))

    async def close(self) -> None:
        """Close every viewer (stack shutdown)."""
        for session in list(self.sessions.values()):
            await self.close_session(session)
        for task in list(self._tasks):
            task.cancel()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def stats(self) -> dict[str, int]:
        tracks = [t for s in self.sessions.values() for t in s.tracks]
        return {
            "viewers": len(self.sessions),
            "connected": sum(1 for s in self.sessions.values() if s.connected_at is not None),
            "frames_sent": sum(t.frames_sent for t in tracks if t.kind == "video"),
            "frames_dropped": sum(t.frames_dropped for t in tracks if t.kind == "video"),
            "reaped": self.reaped,
        }


def _h264_preference() -> list[Any]:
    return [
        c
        for c in RTCRtpSender.getCapabilities("video").codecs
        if c.mimeType.lower() == "video/h264" and c.parameters == H264_PARAMS
    ] + [c for c in RTCRtpSender.getCapabilities("video").codecs if c.mimeType.lower() == "video/rtx"]


def _opus_preference() -> list[Any]:
    return [c for c in RTCRtpSender.getCapabilities("audio").codecs if c.mimeType.lower() == "audio/opus"]
