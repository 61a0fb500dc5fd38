"""The burned-in clock survives scaling to 240p and a 300 kbps x264 encode."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flowcast.transcode.timecode import (
    BLOCKS,
    MODULUS,
    TimecodeUnreadable,
    block_levels,
    decode_timecode,
    latency_ms,
    timecode_filter,
)


def _synthetic_levels(code: int) -> list[int]:
    return [235, 16] + [235 if code >> (31 - i) & 1 else 16 for i in range(32)]


@given(st.integers(min_value=0, max_value=MODULUS - 1))
def test_decode_synthetic_levels(code: int) -> None:
    assert decode_timecode(_synthetic_levels(code)) == code


@given(st.integers(min_value=0, max_value=MODULUS - 1), st.integers(min_value=-10_000, max_value=10_000))
def test_latency_wraps(code: int, delta: int) -> None:
    assert latency_ms(code, code + delta) == delta


def test_flat_strip_is_unreadable() -> None:
    with pytest.raises(TimecodeUnreadable):
        decode_timecode([128] * BLOCKS)


def test_strip_survives_240p_encode(tmp_path: Path) -> None:
    out = tmp_path / "tc.mp4"
    started_ms = time.time() * 1000
    subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc2=s=1280x720:r=30",
         "-vf", timecode_filter() + ",scale=426:240", "-t", "2",
         "-c:v", "libx264", "-preset", "veryfast", "-b:v", "300k", "-maxrate", "300k", "-bufsize", "300k",
         "-y", str(out)],
        check=True, timeout=30,
    )
    ended_ms = time.time() * 1000
    raw = subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-i", str(out), "-f", "rawvideo", "-pix_fmt", "gray", "-"],
        check=True, capture_output=True, timeout=30,
    ).stdout
    size = 426 * 240
    frames = [raw[i : i + size] for i in range(0, len(raw), size)]
    assert len(frames) >= 55
    codes = [decode_timecode(block_levels(f, 426, 240)) for f in frames]
    for code in codes:
        # generated while the test ran (the counter is the wall clock mod 2**32)
        assert latency_ms(code, int(ended_ms)) >= -1000
        assert latency_ms(code, int(started_ms)) <= 1000
    steps = [latency_ms(a, b) for a, b in zip(codes, codes[1:])]
    assert all(20 <= s <= 50 for s in steps), steps
    assert 30 <= sum(steps) / len(steps) <= 37
