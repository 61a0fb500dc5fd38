"""`flowcast up --encryption cenc|cbcs`: the origin serves Common Encryption, the ClearKey
license endpoint hands out the key, and FFmpeg decrypts real frames with it (the
burned-in timecode reads back as the current time: the pixels are right)."""

from __future__ import annotations


import subprocess
import time
from pathlib import Path

import httpx
import pytest

from flowcast.media.boxes import iter_boxes
from flowcast.package.m3u8 import parse_media_playlist
from flowcast.protect.clearkey import b64url_decode, b64url_encode
from flowcast.protect.pssh import COMMON_SYSTEM_ID, find_pssh
from flowcast.transcode.timecode import TimecodeUnreadable, block_levels, decode_timecode, latency_ms

from .livestack import LiveProcess

pytestmark = pytest.mark.slow


def _kid_from_init(init: bytes) -> bytes:
    moov = next(b for b in iter_boxes(init) if b.type == "moov")
    (pssh,) = [p for p in find_pssh(moov.payload) if p.system_id == COMMON_SYSTEM_ID]
    return pssh.kids[0]


def _decode_gray(media: bytes, key: bytes | None) -> subprocess.CompletedProcess[bytes]:
    args = ["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error"]
    if key is not None:
        args += ["-decryption_key", key.hex()]
    args += ["-i", "pipe:0", "-f", "rawvideo", "-pix_fmt", "gray", "-"]
    return subprocess.run(args, input=media, capture_output=True, timeout=60)


@pytest.mark.parametrize("scheme", ["cenc", "cbcs"])
def test_encrypted_stream_decrypts_with_licensed_key(tmp_path: Path, scheme: str) -> None:
    live = LiveProcess(tmp_path, "--encryption", scheme)
    try:
        live.wait_ready()
        init = httpx.get(live.url("/live/live/240p/init.mp4"), timeout=10).content
        assert b"encv" in init and b"sinf" in init
        assert b"schm" in init and scheme.encode() in init
        kid = _kid_from_init(init)
        # W3C ClearKey license exchange.
        r = httpx.post(live.url("/license/clearkey"), json={"kids": [b64url_encode(kid)], "type": "temporary"}, timeout=10)
        assert r.status_code == 200, r.text
        jwks = r.json()
        assert jwks["type"] == "temporary" and jwks["keys"][0]["kty"] == "oct"
        assert b64url_decode(jwks["keys"][0]["kid"]) == kid
        key = b64url_decode(jwks["keys"][0]["k"])
        # Bad license requests get a clear 4xx.
        assert httpx.post(live.url("/license/clearkey"), content=b"{not json", timeout=10).status_code == 400
        assert httpx.post(live.url("/license/clearkey"), json={"kids": ["AAAA"]}, timeout=10).status_code == 400
        unknown = b64url_encode(bytes(16))
        assert httpx.post(live.url("/license/clearkey"), json={"kids": [unknown]}, timeout=10).status_code == 404
        # The key never shows up in the log.
        assert key.hex() not in live.log() and b64url_encode(key) not in live.log()

        text = httpx.get(live.url("/live/live/240p/index.m3u8"), timeout=10).text
        seg = parse_media_playlist(text).segments[-1]
        media = init + httpx.get(live.url(f"/live/live/240p/{seg.uri}"), timeout=10).content
        clear = _decode_gray(media, key)
        assert clear.returncode == 0 and clear.stderr == b"", clear.stderr[-500:]
        frame = 426 * 240
        assert len(clear.stdout) == frame * round(seg.duration * 30)
        now_ms = int(time.time() * 1000)
        last = clear.stdout[-frame:]
        assert 0 <= latency_ms(decode_timecode(block_levels(last, 426, 240)), now_ms) < 20_000
        # Without the key the pictures are garbage: the timecode does not read back.
        wrong = _decode_gray(media, bytes(16))
        with pytest.raises((TimecodeUnreadable, AssertionError, ValueError)):
            assert wrong.returncode == 0 and len(wrong.stdout) >= frame
            code = decode_timecode(block_levels(wrong.stdout[-frame:], 426, 240))
            assert 0 <= latency_ms(code, now_ms) < 20_000
    finally:
        live.stop()
