"""The delayer's schedule (sans-I/O): FIFO release times within delay +- jitter, mean delay
kept, and the delayer's command-line line specs."""

from __future__ import annotations

import statistics

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowcast.loadtest.delayer import DelayerError, LineSpec
from flowcast.loadtest.delayline import DelayLine, DelayLineError

gaps = st.lists(st.floats(min_value=0.0, max_value=0.5, allow_nan=False), min_size=1, max_size=300)


@settings(max_examples=200, deadline=None)
@given(
    gaps=gaps,
    delay=st.floats(min_value=0.0, max_value=0.5),
    jitter=st.floats(min_value=0.0, max_value=0.2),
    seed=st.integers(0, 2**16),
)
def test_releases_keep_order_and_stay_within_delay_plus_minus_jitter(
    gaps: list[float], delay: float, jitter: float, seed: int
) -> None:
    line = DelayLine(delay, jitter, seed=seed)
    t, last = 1000.0, float("-inf")
    for g in gaps:
        t += g
        out = line.release_at(t)
        assert out >= last, "a later packet left before an earlier one"
        assert max(0.0, delay - jitter) - 1e-9 <= out - t <= delay + jitter + 1e-9
        if delay >= jitter:  # the jitter walk is never steep enough for the FIFO clamp to add delay
            assert out == pytest.approx(t + delay + line.offset(t), abs=1e-9)
        last = out


def test_jitter_varies_the_delay_but_keeps_its_mean_at_video_packet_rates() -> None:
    line = DelayLine(0.085, 0.010, seed=7)
    # 1,000 packets a second for 60 s, in bursts of 10 (a part arriving back to back)
    times = [i * 0.01 + k * 0.00001 for i in range(6000) for k in range(10)]
    delays = [line.release_at(t) - t for t in times]
    assert abs(statistics.fmean(delays) - 0.085) < 0.001  # per-packet draws + FIFO: ~0.091
    assert 0.004 < statistics.pstdev(delays) < 0.007  # uniform-ish within +-10 ms, not constant
    assert min(delays) >= 0.075 - 1e-9 and max(delays) <= 0.095 + 1e-9


def test_no_jitter_is_a_constant_delay() -> None:
    line = DelayLine(0.03)
    assert [line.release_at(t) - t for t in (0.0, 0.0, 0.5, 7.25)] == pytest.approx([0.03] * 4)


def test_idle_gaps_restart_the_jitter_walk() -> None:
    line = DelayLine(0.03, 0.02, seed=3)
    for t in (0.0, 3600.0, 7200.5):  # hours apart: no catching up segment by segment
        assert 0.01 - 1e-9 <= line.release_at(t) - t <= 0.05 + 1e-9


def test_bad_values_are_refused() -> None:
    with pytest.raises(DelayLineError):
        DelayLine(-0.01)
    with pytest.raises(DelayLineError):
        DelayLine(0.01, float("nan"))
    assert LineSpec.parse("down:0:85:10") == LineSpec("down", 0, 85.0, 10.0)
    for bad in ("down:0:85", "down:x:85:10", "down:70000:85:10", "up:1:-5:0"):
        with pytest.raises(DelayerError):
            LineSpec.parse(bad)
