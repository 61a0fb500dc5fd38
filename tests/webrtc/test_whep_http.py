"""WHEP over HTTP against `flowcast up --mode interactive` (a real process, real FFmpeg),
with aiortc as the viewer: status codes, Location, Link (TURN REST credentials for the
coturn `--turn` starts), frames received and decoded, DELETE closing the peer, and bad
clients (garbage, ICE that never completes) not hurting a watching viewer."""

from __future__ import annotations

import asyncio
import re
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from flowcast.origin.access import signer_for
from tests.e2e.livestack import LiveProcess

pytestmark = pytest.mark.slow

HAVE_COTURN = shutil.which("turnserver") is not None
CONFIG = """
ladder:
  rungs: [{name: 240p, width: 426, height: 240, video_bitrate_kbps: 300, profile: baseline, level: "3.0"}]
telemetry: {enabled: false}
protection: {require_token: true}
webrtc:
  enabled: true
  ice_host_addresses: ["127.0.0.1"]
  connect_timeout_s: 3
  turn: {enabled: %s, allow_loopback_peers: true, port: %d, min_port: 50500, max_port: 50600}
"""


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveProcess]:
    tmp = tmp_path_factory.mktemp("whep")
    cfg = tmp / "flowcast.yaml"
    cfg.write_text(CONFIG % ("true" if HAVE_COTURN else "false", _free_udp_port()))
    proc = LiveProcess(tmp, "--config", str(cfg))
    try:
        proc.wait_ready(path="/")
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def token(live: LiveProcess) -> str:
    return signer_for(Path(live.log_path).parent / "data").sign("/live/live/", ttl=600)


async def _offer(video: bool = True, audio: bool = True) -> RTCPeerConnection:
    pc = RTCPeerConnection()
    if video:
        pc.addTransceiver("video", direction="recvonly")
    if audio:
        pc.addTransceiver("audio", direction="recvonly")
    await pc.setLocalDescription(await pc.createOffer())
    return pc


class Viewer:
    """An aiortc WHEP viewer that decodes what it receives."""

    def __init__(self) -> None:
        self.frames: list[tuple[float, int, int]] = []
        self.audio = 0
        self.ended = asyncio.Event()
        self.pc: RTCPeerConnection | None = None
        self.resource: str | None = None
        self.response: httpx.Response | None = None

    async def join(self, client: httpx.AsyncClient, url: str, token: str) -> None:
        self.pc = pc = await _offer()

        @pc.on("track")
        def on_track(track) -> None:  # type: ignore[no-untyped-def]
            async def pull() -> None:
                try:
                    while True:
                        frame = await track.recv()  # decoded by aiortc's H.264 / Opus decoder
                        if track.kind == "video":
                            self.frames.append((time.monotonic(), frame.width, frame.height))
                        else:
                            self.audio += 1
                except MediaStreamError:
                    self.ended.set()

            asyncio.ensure_future(pull())

        r = await client.post(url, content=pc.localDescription.sdp,
                              headers={"content-type": "application/sdp", "authorization": f"Bearer {token}"})  # fmt: skip
        self.response = r
        assert r.status_code == 201, r.text
        self.resource = r.headers["location"]
        await pc.setRemoteDescription(RTCSessionDescription(r.text, "answer"))

    def fps(self, since: float) -> float:
        n = sum(1 for t, _, _ in self.frames if t >= since)
        return n / max(1e-6, time.monotonic() - since)


def _run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


def test_refusals(live: LiveProcess, token: str) -> None:
    url = live.url("/whep/live")

    async def go() -> None:
        pc = await _offer()
        sdp = pc.localDescription.sdp
        await pc.close()
        auth = {"authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(timeout=10) as c:
            r = await c.post(url, content=sdp, headers={"content-type": "text/plain", **auth})
            assert r.status_code == 415 and r.headers["accept"] == "application/sdp"
            r = await c.post(url, content=b"v=0\r\nthis is not sdp", headers={"content-type": "application/sdp", **auth})
            assert r.status_code == 400, r.text
            r = await c.post(live.url("/whep/other"), content=sdp, headers={"content-type": "application/sdp", **auth})
            assert r.status_code == 404
            r = await c.post(url, content=sdp, headers={"content-type": "application/sdp"})
            assert r.status_code == 403  # no token
            r = await c.post(url, content=sdp, headers={"content-type": "application/sdp", "authorization": "Bearer v1.k1.x"})
            assert r.status_code == 403
            signer = signer_for(Path(live.log_path).parent / "data")
            expired = signer.sign("/live/live/", ttl=60, now=time.time() - 3600)
            r = await c.post(url, content=sdp, headers={"content-type": "application/sdp", "authorization": f"Bearer {expired}"})
            assert r.status_code == 410
            other = signer.sign("/live/other/", ttl=600)
            r = await c.post(url, content=sdp, headers={"content-type": "application/sdp", "authorization": f"Bearer {other}"})
            assert r.status_code == 403
            # Tokens bound to a client address are checked against the caller's address.
            mine = signer.sign("/live/live/", ttl=600, client_ip="127.0.0.1")
            r = await c.post(url, content=b"x", headers={"content-type": "application/sdp", "authorization": f"Bearer {mine}"})
            assert r.status_code == 400  # past the token check, refused as SDP
            theirs = signer.sign("/live/live/", ttl=600, client_ip="192.0.2.7")
            r = await c.post(url, content=sdp, headers={"content-type": "application/sdp", "authorization": f"Bearer {theirs}"})
            assert r.status_code == 403
            # The player kit's cookie works as well as Bearer (same token, same check).
            r = await c.post(url, content=b"x", headers={"content-type": "application/sdp", "cookie": f"flowcast_token={token}"})
            assert r.status_code == 400  # past the token check, refused as SDP
            r = await c.delete(live.url("/whep/live/" + "A" * 32))
            assert r.status_code == 404
            r = await c.get(url)
            assert r.status_code == 405
        assert token not in live.log()

    _run(go())


def test_aiortc_viewer_receives_decodes_and_leaves(live: LiveProcess, token: str) -> None:
    async def go() -> None:
        async with httpx.AsyncClient(timeout=10) as c:
            v = Viewer()
            t0 = time.monotonic()
            await v.join(c, live.url("/whep/live"), token)
            r = v.response
            assert r is not None and r.headers["content-type"] == "application/sdp"
            assert re.fullmatch(r"/whep/live/[A-Za-z0-9_-]{22,64}", v.resource or ""), v.resource
            assert r.headers["accept-patch"] == "application/trickle-ice-sdpfrag"
            # The one H.264 format the encoder makes: constrained baseline, packetization-mode 1.
            assert "profile-level-id=42e01f" in r.text and "packetization-mode=1" in r.text
            assert "opus/48000/2" in r.text and "VP8" not in r.text
            if HAVE_COTURN:
                links = r.headers.get_list("link")
                turn = [l for l in links if l.startswith("<turn:127.0.0.1:")]
                assert turn and all('rel="ice-server"' in l and 'username="' in l and 'credential="' in l for l in turn)
                username = turn[0].split('username="')[1].split('"')[0]
                assert int(username.split(":")[0]) > time.time()  # expiry:user, TURN REST
            while len(v.frames) < 90 and time.monotonic() - t0 < 20:
                await asyncio.sleep(0.2)
            assert len(v.frames) >= 90, len(v.frames)
            first = v.frames[0][0] - t0
            assert first < 8.0, f"first frame after {first:.1f} s (GOP is 1 s)"
            assert {(w, h) for _, w, h in v.frames} == {(1280, 720)}
            assert v.audio > 50
            # Trickle: a late candidate is accepted; a wrong body type is 415.
            frag = b"a=candidate:1 1 udp 2122260223 127.0.0.1 9 typ host\r\na=end-of-candidates\r\n"
            p = await c.patch(live.url(v.resource), content=frag, headers={"content-type": "application/trickle-ice-sdpfrag"})
            assert p.status_code == 204
            p = await c.patch(live.url(v.resource), content=frag, headers={"content-type": "application/sdp"})
            assert p.status_code == 415
            d = await c.delete(live.url(v.resource))
            assert d.status_code == 200
            await asyncio.wait_for(v.ended.wait(), 10)  # the server closed the peer: tracks end
            d = await c.delete(live.url(v.resource))
            assert d.status_code == 404
            assert v.pc is not None
            await v.pc.close()

    _run(go())


def test_bad_clients_do_not_hurt_a_viewer(live: LiveProcess, token: str) -> None:
    async def go() -> None:
        async with httpx.AsyncClient(timeout=10) as c:
            good = Viewer()
            await good.join(c, live.url("/whep/live"), token)
            deadline = time.monotonic() + 15
            while len(good.frames) < 30 and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
            assert len(good.frames) >= 30
            since = time.monotonic()
            # Garbage offers, and offers whose ICE never completes (answer never applied).
            ghosts = []
            for i in range(5):
                r = await c.post(live.url("/whep/live"), content=b"v=0\r\n" + bytes(range(256)) * 4,
                                 headers={"content-type": "application/sdp", "authorization": f"Bearer {token}"})  # fmt: skip
                assert r.status_code == 400
                pc = await _offer()
                r = await c.post(live.url("/whep/live"), content=pc.localDescription.sdp,
                                 headers={"content-type": "application/sdp", "authorization": f"Bearer {token}"})  # fmt: skip
                assert r.status_code == 201
                ghosts.append((pc, r.headers["location"]))
                await pc.close()  # gone without DELETE
            await asyncio.sleep(5)  # connect_timeout_s is 3
            fps = good.fps(since)
            assert fps > 25, f"the watching viewer fell to {fps:.1f} fps"
            for _, loc in ghosts:  # reaped: the resource is gone
                assert (await c.delete(live.url(loc))).status_code == 404
            assert live.log().count("never connected") >= 5
            await c.delete(live.url(good.resource or ""))
            assert good.pc is not None
            await good.pc.close()

    _run(go())


def test_viewer_that_leaves_without_delete_is_reaped(live: LiveProcess, token: str) -> None:
    async def go() -> None:
        async with httpx.AsyncClient(timeout=10) as c:
            v = Viewer()
            await v.join(c, live.url("/whep/live"), token)
            deadline = time.monotonic() + 15
            while not v.frames and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
            assert v.frames and v.pc is not None
            await v.pc.close()  # the tab closed: DTLS close_notify, no DELETE
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                if (await c.patch(live.url(v.resource or ""), content=b"a=end-of-candidates\r\n",
                                  headers={"content-type": "application/trickle-ice-sdpfrag"})).status_code == 404:  # fmt: skip
                    return
                await asyncio.sleep(0.5)
            raise AssertionError("the server kept the resource of a closed peer")

    _run(go())
