"""Epoch locking on real FFmpeg runs (transcode/epoch.py): two encoders fed one SRT contribution
stamped with the wall clock cut the same frames at the same epoch multiples; an unstamped
input falls back to the arrival clock; an epoch-locked test source re-locks after a kill -9."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import subprocess
import time
from collections import defaultdict
from pathlib import Path

import pytest

from flowcast.config import FlowcastConfig
from flowcast.media.fmp4 import FragmentedMP4Reader
from flowcast.media.types import Fragment, InitSegment, Sample
from flowcast.transcode import epoch
from flowcast.transcode.supervisor import EncoderSupervisor
from flowcast.transcode.timecode import MODULUS, block_levels, decode_timecode, timecode_filter

SEGMENT_S = 1.0
RUNG = {"name": "240p", "width": 426, "height": 240, "video_bitrate_kbps": 300, "profile": "baseline", "level": "3.0"}
REDUNDANT = ["http://127.0.0.1:1", "http://127.0.0.1:2"]


def _config(source: str) -> FlowcastConfig:
    return FlowcastConfig.model_validate({
        "ingest": {"input": source}, "ladder": {"rungs": [RUNG]},
        "packaging": {"segment_duration": SEGMENT_S}, "origin": {"redundant": REDUNDANT},
    })


def _udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _samples(data: bytes) -> tuple[int, list[Sample]]:
    events = FragmentedMP4Reader().feed(data)
    init = next(e for e in events if isinstance(e, InitSegment))
    return init.tracks[0].timescale, [s for e in events if isinstance(e, Fragment) for s in e.samples]


def _keyframes(data: bytes | bytearray) -> int:
    try:
        return sum(s.is_sync for s in _samples(bytes(data))[1])
    except StopIteration:  # no init segment yet
        return 0


async def _until(pred, timeout: float) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not pred():
        await asyncio.sleep(0.05)
    return pred()


def _codes(path: Path) -> list[int]:
    """The burned-in wall-clock code of every frame of a 240p file, in decode order."""
    raw = subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-i", str(path), "-f", "rawvideo", "-pix_fmt", "gray", "-"],
        check=True, capture_output=True, timeout=60,
    ).stdout
    size = 426 * 240
    return [decode_timecode(block_levels(raw[i : i + size], 426, 240)) for i in range(0, len(raw) - size + 1, size)]


def test_shared_srt_contribution_locks_two_encoders(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """One contribution, timestamped with the wall clock (the generator clock, burned in),
    pushed to two SRT listeners: both encoders key the same epoch multiples, and the frame
    each gives a decode time shows the same instant, which is that decode time."""
    caplog.set_level(logging.INFO, logger="flowcast.transcode")
    ports = _udp_port(), _udp_port()
    got: dict[int, dict[str, bytearray]] = {0: defaultdict(bytearray), 1: defaultdict(bytearray)}
    publisher = [
        "ffmpeg", "-hide_banner", "-loglevel", "error",
        "-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=30", "-f", "lavfi", "-i", "sine=sample_rate=48000",
        "-filter_complex", f"[0:v]{timecode_filter(epoch_rate=30)},scale=640:360[v];[1:a]{epoch.generator_audio_clock()}[a]",
        "-map", "[v]", "-map", "[a]", "-fps_mode", "passthrough",  # keep the stamps (tee is not VFR)
        "-c:v", "libx264", "-preset", "ultrafast", "-bf", "2", "-g", "30", "-c:a", "aac",
        "-f", "tee", "|".join(f"[f=mpegts:onfail=ignore]srt://127.0.0.1:{p}" for p in ports),
    ]

    async def scenario() -> list[EncoderSupervisor]:
        sups = [
            EncoderSupervisor(_config(f"srt://127.0.0.1:{p}?mode=listener"), on_output=lambda n, d, k=k: got[k][n].extend(d))
            for k, p in enumerate(ports)
        ]
        for s in sups:
            await s.start()
        await asyncio.sleep(0.8)  # both listening
        pub = await asyncio.create_subprocess_exec(*publisher, stderr=asyncio.subprocess.DEVNULL)
        try:
            # FFmpeg probes an MPEG-TS input for up to 5 s before its first frame, each
            # listener for its own time: wait for 2 keyframes (a segment in common) on both
            ok = await _until(lambda: all(_keyframes(got[k]["240p"]) >= 2 for k in (0, 1)), 25.0)
        finally:
            pub.kill()
            await pub.wait()
            for s in sups:
                await s.stop()
        assert ok, {k: len(v["240p"]) for k, v in got.items()}
        return sups

    sups = asyncio.run(scenario())
    assert [s.input_locked for s in sups] == [True, True], caplog.text
    assert "the input's timestamps are the wall clock" in caplog.text
    keys, times = [], []
    for k in (0, 1):
        ts, samples = _samples(bytes(got[k]["240p"]))
        assert ts == 90000
        keys.append([s.decode_time for s in samples if s.is_sync])
        times.append({s.decode_time for s in samples})
        (tmp_path / f"{k}.mp4").write_bytes(bytes(got[k]["240p"]))
    # where both ran, the same keyframes (a listener that probed longer may start a segment later)
    lo, hi = max(keys[0][0], keys[1][0]), min(keys[0][-1], keys[1][-1])
    assert hi >= lo and [t for t in keys[0] if lo <= t <= hi] == [t for t in keys[1] if lo <= t <= hi], keys
    assert all(t % (SEGMENT_S * 90000) == 0 for t in keys[0] + keys[1])
    assert abs(keys[0][0] / 90000 - time.time()) < 30
    # Content: the frame at a decode time shows that instant on both (burned-in ms, mod 2^32).
    for k in (0, 1):
        _, samples = _samples(bytes(got[k]["240p"]))
        codes = _codes(tmp_path / f"{k}.mp4")
        assert len(codes) >= len(samples) - 1
        for s, code in list(zip(samples, codes))[:90]:
            label_ms = round(s.decode_time / 90)  # 90 kHz ticks -> ms
            assert abs((code - label_ms + MODULUS // 2) % MODULUS - MODULUS // 2) <= 1, (k, s.decode_time, code)
    common = sorted(times[0] & times[1])
    assert len(common) >= 30, (len(times[0]), len(times[1]))


def test_input_clock_unwraps_a_stamped_input_and_falls_back_for_an_unstamped_one(tmp_path: Path) -> None:
    """input_clock("mpegts") on real MPEG-TS: a stream stamped 3 s behind the wall clock
    (written mod 2^33 by the muxer) keeps its stamps; one counting from its own start is
    placed at its arrival time, and FFmpeg says which."""
    now = time.time()
    stamped, unstamped = tmp_path / "stamped.ts", tmp_path / "own.ts"
    base = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30",
            "-t", "1", "-c:v", "libx264", "-preset", "ultrafast", "-g", "30", "-muxdelay", "0", "-muxpreload", "0"]
    subprocess.run([*base, "-output_ts_offset", f"{now - 3:.6f}", "-y", str(stamped)], check=True, timeout=30)
    subprocess.run([*base, "-y", str(unstamped)], check=True, timeout=30)
    found = {}
    for path in (stamped, unstamped):
        out = subprocess.run(
            ["ffmpeg", "-hide_banner", "-loglevel", "warning", "-copyts", "-i", str(path),
             "-vf", epoch.input_clock("mpegts"), "-fps_mode", "passthrough", "-f", "framecrc", "-"],
            capture_output=True, text=True, timeout=30, check=True,
        )
        residuals = [r for r in map(epoch.input_lock_residual, out.stderr.splitlines()) if r is not None]
        assert "#tb 0: 1/30" in out.stdout
        first_label = next(int(line.split(",")[2]) for line in out.stdout.splitlines() if line.startswith("0,")) / 30
        found[path.name] = residuals, first_label
    (residual,), label = found["stamped.ts"]
    assert 2.9 < residual < 6 and epoch.describe_input_lock(residual)[0] is True, residual
    assert abs(label - (now - 3)) < 0.05  # its own stamps, unwrapped: 2^33 / 90 kHz wraps lie between
    (residual,), label = found["own.ts"]
    locked, sentence = epoch.describe_input_lock(residual)
    assert not locked and "off the wall clock" in sentence
    assert abs(label - time.time()) < 5  # placed at its arrival


def test_epoch_locked_test_source_relocks_after_kill(caplog: pytest.LogCaptureFixture) -> None:
    """The wall-clock test source, epoch-locked: keyframes on epoch multiples in the first run
    and, after a kill -9 and restart, in the next run too (nothing depends on the start)."""
    caplog.set_level(logging.INFO, logger="flowcast.transcode")
    config = _config("testsrc")
    data: dict[int, dict[str, bytearray]] = defaultdict(lambda: defaultdict(bytearray))
    runs: list[int] = []

    async def scenario() -> None:
        sup = EncoderSupervisor(config, on_output=lambda n, d: data[runs[-1]][n].extend(d),
                                on_run_start=lambda run, _at: runs.append(run))

        def keyframes(run: int) -> int:
            return _keyframes(data[run]["240p"])

        await sup.start()
        try:
            assert await _until(lambda: keyframes(1) >= 2, 15.0)
            os.kill(sup.pid, signal.SIGKILL)
            assert await _until(lambda: len(runs) >= 2 and keyframes(2) >= 2, 15.0)
        finally:
            await sup.stop()

    asyncio.run(scenario())
    last_run1 = None
    for run in (1, 2):
        ts, video = _samples(bytes(data[run]["240p"]))
        keys = [s.decode_time for s in video if s.is_sync]
        assert all(t % (SEGMENT_S * ts) == 0 for t in keys), (run, keys)
        assert [b - a for a, b in zip(keys, keys[1:])] == [SEGMENT_S * ts] * (len(keys) - 1)
        assert all(s.duration == ts // 30 for s in video)  # 30 fps, exact
        ats, audio = _samples(bytes(data[run]["audio"]))
        assert all(s.decode_time % epoch.AAC_FRAME == 0 for s in audio)  # whole AAC frames since 1970
        assert abs(audio[0].decode_time / ats - video[0].decode_time / ts) < SEGMENT_S + epoch.LEAD_S + 0.5
        if last_run1 is not None:
            assert video[0].decode_time > last_run1  # the clock went on: later, never earlier
        last_run1 = video[-1].decode_time


def test_file_is_played_out_on_the_epoch(tmp_path: Path) -> None:
    """A looped file, epoch-locked: two encoders started 1.3 s apart show the same file frame
    at the same decode time (the file's own burned-in code per frame says which), on epoch
    keyframes, and the loop period is the file's duration exactly."""
    clip = tmp_path / "clip.mp4"
    subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc2=s=1280x720:r=30",
         "-f", "lavfi", "-i", "sine=sample_rate=48000", "-vf", timecode_filter(), "-t", "3",
         "-c:v", "libx264", "-preset", "ultrafast", "-g", "15", "-c:a", "aac", "-y", str(clip)],
        check=True, timeout=60,
    )
    file_codes = _codes_at(clip, 1280, 720)  # decode order = file order
    got: dict[int, dict[str, bytearray]] = {0: defaultdict(bytearray), 1: defaultdict(bytearray)}

    async def scenario() -> None:
        sups = [EncoderSupervisor(_config(str(clip)), on_output=lambda n, d, k=k: got[k][n].extend(d)) for k in (0, 1)]
        await sups[0].start()
        await asyncio.sleep(1.3)
        await sups[1].start()
        try:
            assert await _until(lambda: all(_keyframes(got[k]["240p"]) >= 2 for k in (0, 1)), 25.0)
        finally:
            for s in sups:
                await s.stop()

    asyncio.run(scenario())
    by_time = []
    for k in (0, 1):
        (tmp_path / f"{k}.mp4").write_bytes(bytes(got[k]["240p"]))
        ts, samples = _samples(bytes(got[k]["240p"]))
        keys = [s.decode_time for s in samples if s.is_sync]
        assert keys and all(t % (SEGMENT_S * ts) == 0 for t in keys), keys
        codes = _codes(tmp_path / f"{k}.mp4")
        by_time.append({s.decode_time: c for s, c in zip(samples, codes)})
    common = sorted(set(by_time[0]) & set(by_time[1]))
    assert len(common) >= 25, (len(by_time[0]), len(by_time[1]))
    for t in common:
        assert by_time[0][t] == by_time[1][t], t  # the same file frame at the same instant
        # ... and it is the frame the epoch says: position (t mod 3 s) of the file
        index = round((t / 90000 % 3.0) * 30) % len(file_codes)
        assert by_time[0][t] == file_codes[index], (t, index)


def _codes_at(path: Path, width: int, height: int) -> list[int]:
    raw = subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-i", str(path), "-f", "rawvideo", "-pix_fmt", "gray", "-"],
        check=True, capture_output=True, timeout=60,
    ).stdout
    size = width * height
    return [decode_timecode(block_levels(raw[i : i + size], width, height)) for i in range(0, len(raw) - size + 1, size)]
