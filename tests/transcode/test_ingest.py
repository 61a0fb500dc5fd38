"""Live ingest with FFmpeg as the publisher: right credentials flow, wrong ones are refused and logged."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections import defaultdict

import pytest

from flowcast.config import FlowcastConfig
from flowcast.transcode.supervisor import EncoderSupervisor

PUBLISH = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-re",
           "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30", "-f", "lavfi", "-i", "sine=sample_rate=48000",
           "-t", "4", "-c:v", "libx264", "-preset", "ultrafast", "-g", "30", "-c:a", "aac"]


def _free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _config(url: str, passphrase: str | None = None) -> FlowcastConfig:
    return FlowcastConfig.model_validate({
        "ingest": {"input": url, "srt_passphrase": passphrase},
        "ladder": {"rungs": [{"name": "240p", "width": 426, "height": 240, "video_bitrate_kbps": 300,
                              "profile": "baseline", "level": "3.0"}]},
        "packaging": {"segment_duration": 1.0},
    })


async def _publish(target: str, wait: float) -> int | None:
    fmt = "flv" if target.startswith("rtmp") else "mpegts"
    proc = await asyncio.create_subprocess_exec(*PUBLISH, "-f", fmt, target, stdout=asyncio.subprocess.DEVNULL,
                                                stderr=asyncio.subprocess.DEVNULL)
    try:
        return await asyncio.wait_for(proc.wait(), wait)
    except asyncio.TimeoutError:
        return None  # still publishing
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def _until(pred, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not pred():
        await asyncio.sleep(0.05)
    return pred()


def _scenario(config: FlowcastConfig, wrong: str, right: str, caplog: pytest.LogCaptureFixture,
              expect_log: str) -> dict[str, int]:
    received: dict[str, int] = defaultdict(int)

    def on_output(name: str, data: bytes) -> None:
        received[name] += len(data)

    async def run() -> None:
        sup = EncoderSupervisor(config, on_output=on_output)
        await sup.start()
        try:
            await asyncio.sleep(0.5)  # FFmpeg listening
            rc = await _publish(wrong, 4.0)
            assert rc not in (None, 0), "a wrong credential must end the publish with an error"
            assert await _until(lambda: expect_log in caplog.text, 3.0), caplog.text
            assert sum(received.values()) == 0
            publisher = asyncio.create_task(_publish(right, 5.0))
            assert await _until(lambda: received["240p"] > 2000 and received["audio"] > 1000, 12.0), dict(received)
            publisher.cancel()
            try:
                await publisher
            except asyncio.CancelledError:
                pass
        finally:
            await sup.stop()

    asyncio.run(run())
    return received


def test_rtmp_stream_key(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="flowcast.transcode")
    port = _free_port()
    config = _config(f"rtmp://127.0.0.1:{port}/live/s3cretkey")
    _scenario(config, f"rtmp://127.0.0.1:{port}/live/wrongkey", f"rtmp://127.0.0.1:{port}/live/s3cretkey",
              caplog, "refused: wrong stream key")
    assert "s3cretkey" not in caplog.text  # the key never reaches our logs


def test_srt_passphrase(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="flowcast.transcode")
    port = _free_port(socket.SOCK_DGRAM)
    config = _config(f"srt://127.0.0.1:{port}?mode=listener", passphrase="correct-horse-1")
    base = f"srt://127.0.0.1:{port}?pbkeylen=16&passphrase="
    _scenario(config, base + "wrong-guess-99", base + "correct-horse-1", caplog,
              "SRT publish refused: wrong passphrase")
    assert "correct-horse-1" not in caplog.text
