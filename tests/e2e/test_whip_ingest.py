"""WHIP ingest end to end: a WebRTC publisher (aiortc, then Chromium) feeds `flowcast up`'s
ladder, and what comes out of the origin decodes with FFmpeg."""

from __future__ import annotations

import asyncio
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.contrib.media import MediaPlayer

from tests.browser import chromium_available, launch_chromium

from .livestack import LiveProcess

pytestmark = pytest.mark.slow

TOKEN = "whip-test-token-0123456789"
CONFIG = f"""
ingest:
  input: whip
  whip_token: {TOKEN}
ladder:
  rungs:
    - {{name: 360p, width: 640, height: 360, video_bitrate_kbps: 600, profile: main, level: "3.0"}}
"""


@pytest.fixture(scope="module")
def whip_live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveProcess]:
    tmp = tmp_path_factory.mktemp("whip")
    cfg = tmp / "whip.yaml"
    cfg.write_text(CONFIG)
    proc = LiveProcess(tmp, "--config", str(cfg))
    try:
        _wait(lambda: httpx.get(proc.url("/metrics"), timeout=2).status_code == 200, 20, proc)
        yield proc
    finally:
        proc.stop()


def _wait(cond, timeout: float, proc: LiveProcess) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if cond():
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise TimeoutError(proc.log()[-3000:])


def _auth(token: str = TOKEN) -> dict[str, str]:
    return {"authorization": f"Bearer {token}", "content-type": "application/sdp"}


async def _offer(video: bool = True) -> tuple[RTCPeerConnection, MediaPlayer]:
    """A publisher sending FFmpeg's test pattern and a tone, as OBS would send a scene."""
    pc = RTCPeerConnection()
    player = MediaPlayer("testsrc2=size=640x360:rate=30", format="lavfi")
    tone = MediaPlayer("sine=frequency=440:sample_rate=48000", format="lavfi")
    if video:
        pc.addTrack(player.video)
    pc.addTrack(tone.audio)
    await pc.setLocalDescription(await pc.createOffer())
    return pc, player


async def _publish(base: str, seconds: float) -> dict[str, object]:
    pc, _ = await _offer()
    async with httpx.AsyncClient() as client:
        r = await client.post(f"{base}/whip/live", content=pc.localDescription.sdp, headers=_auth())
        assert r.status_code == 201, r.text
        assert r.headers["content-type"] == "application/sdp"
        location = r.headers["location"]
        assert re.fullmatch(r"/whip/live/[A-Za-z0-9_-]{16,}", location)
        await pc.setRemoteDescription(RTCSessionDescription(sdp=r.text, type="answer"))
        deadline = time.monotonic() + 10
        while pc.connectionState != "connected" and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert pc.connectionState == "connected"
        # a second publisher is refused while the first one holds the stream
        pc2, _ = await _offer()
        busy = await client.post(f"{base}/whip/live", content=pc2.localDescription.sdp, headers=_auth())
        await pc2.close()
        patch = await client.patch(
            base + location, content=b"a=ice-ufrag:x\r\n",
            headers={**_auth(), "content-type": "application/trickle-ice-sdpfrag"},
        )
        await asyncio.sleep(seconds)
        delete = await client.delete(base + location, headers=_auth())
        after = await client.delete(base + location, headers=_auth())
    await pc.close()
    return {"busy": busy.status_code, "patch": patch.status_code, "delete": delete.status_code, "after": after.status_code}


def _segments(base: str) -> list[str]:
    playlist = httpx.get(f"{base}/live/live/360p/index.m3u8", timeout=5).text
    return [line for line in playlist.splitlines() if line and not line.startswith("#")]


def _decode_frames(base: str, tmp: Path) -> int:
    """Fetch the init and the last full segment before the publisher left (the final one is
    cut short by the end of the run); count the frames FFmpeg decodes from it."""
    playlist = httpx.get(f"{base}/live/live/360p/index.m3u8", timeout=5).text
    init = re.search(r'#EXT-X-MAP:URI="([^"]+)"', playlist).group(1)  # type: ignore[union-attr]
    segments = [line for line in playlist.splitlines() if line and not line.startswith("#")]
    assert len(segments) >= 2, playlist
    data = httpx.get(f"{base}/live/live/360p/{init}").content + httpx.get(f"{base}/live/live/360p/{segments[-2]}").content
    path = tmp / "seg.mp4"
    path.write_bytes(data)
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0",
         "-show_entries", "stream=nb_read_frames,width,height", "-of", "csv=p=0", str(path)],
        capture_output=True, text=True, check=True,
    )
    width, height, frames = out.stdout.strip().split(",")
    assert (int(width), int(height)) == (640, 360)
    return int(frames)


def test_refusals(whip_live: LiveProcess) -> None:
    base = whip_live.base
    sdp = "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
    assert httpx.post(f"{base}/whip/live", content=sdp, headers={"content-type": "application/sdp"}).status_code == 401
    wrong = httpx.post(f"{base}/whip/live", content=sdp, headers=_auth("not-the-token-0123456789"))
    assert wrong.status_code == 401 and wrong.headers["www-authenticate"].startswith("Bearer")
    assert httpx.post(f"{base}/whip/live", content=sdp, headers={**_auth(), "content-type": "text/plain"}).status_code == 415
    assert httpx.post(f"{base}/whip/live", content=b"hello", headers=_auth()).status_code == 400
    assert httpx.post(f"{base}/whip/live", content=sdp, headers=_auth()).status_code == 400  # no media
    assert httpx.post(f"{base}/whip/other", content=sdp, headers=_auth()).status_code == 404
    assert httpx.delete(f"{base}/whip/live/nosuchsession", headers=_auth()).status_code == 404
    assert httpx.get(f"{base}/whip/live").status_code == 405
    big = httpx.post(f"{base}/whip/live", content=b"v=0" + b"x" * 70_000, headers=_auth())
    assert big.status_code == 413
    assert "whip-test-token" not in whip_live.log()


def test_aiortc_publisher_feeds_the_ladder(whip_live: LiveProcess, tmp_path: Path) -> None:
    base = whip_live.base
    statuses = asyncio.run(_publish(base, seconds=9))
    assert statuses == {"busy": 409, "patch": 405, "delete": 200, "after": 404}
    # the publisher's frames went through the ladder: a full 2 s segment decodes at 30 fps
    frames = _decode_frames(base, tmp_path)
    assert 55 <= frames <= 62, frames
    # and a second publish (a new FFmpeg run behind the same listener) works too
    statuses = asyncio.run(_publish(base, seconds=6))
    assert statuses["delete"] == 200
    playlist = httpx.get(f"{base}/live/live/360p/index.m3u8", timeout=5).text
    assert "#EXT-X-DISCONTINUITY" in playlist or "#EXT-X-DISCONTINUITY-SEQUENCE:1" in playlist


@pytest.mark.browser
@pytest.mark.skipif(not chromium_available(), reason="Debian chromium not installed")
def test_chromium_publishes_from_the_publisher_page(whip_live: LiveProcess, tmp_path: Path) -> None:
    base = whip_live.base
    before = set(_segments(base)) if httpx.get(f"{base}/live/live/360p/index.m3u8").status_code == 200 else set()
    with launch_chromium() as browser:
        page = browser.new_page()
        page.goto(f"{base}/publish.html?source=test&token={TOKEN}")
        page.wait_for_function("window.flowcastPublisher && window.flowcastPublisher.state === 'connected'", timeout=20_000)
        time.sleep(7)
        stats = page.evaluate("window.flowcastPublisher.stats()")
        assert stats["framesSent"] > 100, stats
        page.evaluate("window.flowcastPublisher.stop()")
        page.wait_for_function("window.flowcastPublisher.state === 'closed'", timeout=10_000)
    assert _segments(base)[-2] not in before  # what we decode below came from this publish
    frames = _decode_frames(base, tmp_path)
    assert frames >= 50, frames
