"""The supervised ladder: valid CMAF per output, aligned GOPs, restart after kill -9."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import time
from collections import defaultdict
from pathlib import Path

import pytest

from flowcast.config import FlowcastConfig
from flowcast.transcode.supervisor import EncoderSupervisor

SEGMENT_S = 1.0


def _config() -> FlowcastConfig:
    return FlowcastConfig.model_validate({"packaging": {"mode": "low-latency", "segment_duration": SEGMENT_S}})


async def _until(pred, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        await asyncio.sleep(0.05)
    return pred()


def _probe(path: Path) -> tuple[dict, list[float]]:
    stream = json.loads(subprocess.run(
        ["ffprobe", "-v", "error", "-show_streams", "-of", "json", str(path)],
        capture_output=True, text=True, check=True, timeout=30).stdout)["streams"][0]
    packets = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "0", "-show_entries", "packet=pts_time,flags",
         "-of", "csv=p=0", str(path)], capture_output=True, text=True, check=True, timeout=30).stdout
    keys = [float(p.split(",")[0]) for p in packets.split() if p.split(",")[1].startswith("K")]
    return stream, keys


def test_supervised_ladder_restarts_after_kill(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="flowcast.transcode")
    config = _config()
    data: dict[int, dict[str, bytearray]] = defaultdict(lambda: defaultdict(bytearray))
    runs: list[tuple[int, float]] = []

    def on_run_start(run: int, started_at: float) -> None:
        runs.append((run, started_at))

    def on_output(name: str, chunk: bytes) -> None:
        data[runs[-1][0]][name] += chunk

    async def scenario() -> None:
        sup = EncoderSupervisor(config, on_output=on_output, on_run_start=on_run_start, speed_log_interval=1.0)
        await sup.start()
        try:
            # 3.6 s of media: keyframes at 0, 1, 2, 3 s on every rung
            assert await _until(lambda: sup.frame >= 108, 20), f"only {sup.frame} frames"
            await asyncio.sleep(0.3)
            assert sup.speed is not None and sup.fps is not None
            killed_at = time.time()
            os.kill(sup.pid, signal.SIGKILL)
            assert await _until(lambda: len(runs) >= 2, 2.0), "no new run within 2 s"
            assert runs[1][1] - killed_at < 2.0
            assert await _until(lambda: all(len(data[2][n]) > 1000 for n in ("720p", "480p", "240p", "audio")), 10)
            assert sup.restarts == 1
        finally:
            await sup.stop()
        assert sup._proc is not None and sup._proc.returncode is not None

    asyncio.run(scenario())
    assert "was killed by signal 9" in caplog.text
    assert "encoder speed=" in caplog.text

    keyframes = {}
    for rung in config.ladder.rungs:
        path = tmp_path / f"{rung.name}.mp4"
        path.write_bytes(bytes(data[1][rung.name]))
        stream, keys = _probe(path)
        assert stream["codec_name"] == "h264"
        assert (stream["width"], stream["height"]) == (rung.width, rung.height)
        assert len(keys) >= 4, keys
        gaps = [round(b - a, 3) for a, b in zip(keys, keys[1:])]
        assert all(g == SEGMENT_S for g in gaps), (rung.name, keys)  # GOP == segment x fps frames
        keyframes[rung.name] = keys[:4]
    assert len({tuple(k) for k in keyframes.values()}) == 1, keyframes  # aligned across rungs
    audio = tmp_path / "audio.mp4"
    audio.write_bytes(bytes(data[1]["audio"]))
    stream, _ = _probe(audio)
    assert (stream["codec_name"], int(stream["sample_rate"]), stream["channels"]) == ("aac", 48000, 2)
    # CMAF: the init segment of each output declares one track
    for name in ("720p", "audio"):
        head = bytes(data[1][name][:4096])
        assert head[4:8] == b"ftyp" and head.count(b"trak") == 1
