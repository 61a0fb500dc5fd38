"""RTMP and SRT ingest through `flowcast up`, with FFmpeg as the publisher (as OBS would be)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import httpx
import pytest

from flowcast.origin.server import free_port
from flowcast.package.m3u8 import parse_media_playlist

from .livestack import LiveProcess

pytestmark = pytest.mark.slow

PUBLISH = [
    "ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-re",
    "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30",
    "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
    "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-g", "30",
    "-c:a", "aac", "-t", "20",
]  # fmt: skip


def publish(url: str, *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([*PUBLISH, *extra, url], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def wait_for_segments(live: LiveProcess, n: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = httpx.get(live.url("/live/live/240p/index.m3u8"), timeout=5)
        if r.status_code == 200 and len(parse_media_playlist(r.text).segments) >= n:
            return
        time.sleep(0.3)
    raise AssertionError(f"no {n} segments within {timeout} s\n{live.log()[-3000:]}")


def wait_log(live: LiveProcess, needle: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while needle not in live.log():
        assert time.monotonic() < deadline, live.log()[-3000:]
        time.sleep(0.2)


def test_rtmp_ingest_with_stream_key(tmp_path: Path) -> None:
    port = free_port()
    live = LiveProcess(tmp_path, "--input", f"rtmp://127.0.0.1:{port}/live/s3cret-key")
    try:
        time.sleep(1.5)
        wrong = publish(f"rtmp://127.0.0.1:{port}/live/wrong-key", "-f", "flv")
        assert wrong.wait(15) != 0
        wait_log(live, "wrong stream key", 5)
        assert "s3cret-key" not in live.log()
        good = publish(f"rtmp://127.0.0.1:{port}/live/s3cret-key", "-f", "flv")
        try:
            wait_for_segments(live, 2, timeout=20)
        finally:
            good.kill()
            good.wait()
        # The publisher drops: the stream stays up; on reconnection it resumes after a discontinuity.
        time.sleep(2)
        assert httpx.get(live.url("/live/live/master.m3u8"), timeout=5).status_code == 200
        again = publish(f"rtmp://127.0.0.1:{port}/live/s3cret-key", "-f", "flv")
        try:
            deadline = time.monotonic() + 25
            while "#EXT-X-DISCONTINUITY\n" not in httpx.get(live.url("/live/live/240p/index.m3u8"), timeout=5).text:
                assert time.monotonic() < deadline, live.log()[-3000:]
                time.sleep(0.3)
        finally:
            again.kill()
            again.wait()
    finally:
        live.stop()


def test_srt_ingest_with_passphrase(tmp_path: Path) -> None:
    port = free_port()
    live = LiveProcess(
        tmp_path, "--input", f"srt://127.0.0.1:{port}?mode=listener", "--srt-passphrase", "correct-horse-battery"
    )
    try:
        time.sleep(1.5)
        wrong = publish(f"srt://127.0.0.1:{port}?passphrase=wrong-horse-battery&pbkeylen=16", "-f", "mpegts")
        time.sleep(3)
        wrong.kill()
        wrong.wait()
        wait_log(live, "wrong passphrase", 5)
        assert "correct-horse-battery" not in live.log()
        good = publish(f"srt://127.0.0.1:{port}?passphrase=correct-horse-battery&pbkeylen=16", "-f", "mpegts")
        try:
            wait_for_segments(live, 2, timeout=25)
        finally:
            good.kill()
            good.wait()
    finally:
        live.stop()
