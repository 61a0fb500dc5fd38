"""Throughput-based ABR, the rule hls.js and dash.js use by default (simplified).

Two exponentially weighted moving averages of measured throughput (fast and slow, hls.js
`abrEwmaFast`/`abrEwmaSlow`); the estimate is the lower of the two, so the player reacts
quickly to drops and slowly to rises. Pick the highest rendition whose BANDWIDTH fits in
`up_factor` x estimate (hls.js `abrBandWidthUpFactor` 0.7); go down at once when the current
one no longer fits in `down_factor` x estimate or the buffer is nearly empty.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_ESTIMATE_BPS = 500_000.0  # hls.js abrEwmaDefaultEstimate


@dataclass
class Abr:
    bandwidths: tuple[int, ...]  # bits/s, ascending
    fast_alpha: float = 0.5
    slow_alpha: float = 0.15
    up_factor: float = 0.7
    down_factor: float = 0.95
    fast: float = DEFAULT_ESTIMATE_BPS
    slow: float = DEFAULT_ESTIMATE_BPS
    samples: int = 0
    measured_bits: float = 0.0  # over every sample: the session's mean throughput, for the report
    measured_s: float = 0.0

    def sample(self, nbytes: int, seconds: float) -> None:
        if nbytes < 4096 or seconds <= 0:
            return  # too small to measure (a playlist, or a part served from memory in microseconds)
        bps = nbytes * 8 / max(seconds, 1e-4)
        self.measured_bits += nbytes * 8
        self.measured_s += max(seconds, 1e-4)
        if self.samples == 0:
            self.fast = self.slow = bps
        else:
            self.fast += self.fast_alpha * (bps - self.fast)
            self.slow += self.slow_alpha * (bps - self.slow)
        self.samples += 1

    @property
    def estimate_bps(self) -> float:
        return min(self.fast, self.slow)

    def choose(self, current: int, buffered_s: float, low_buffer_s: float = 0.5) -> int:
        est = self.estimate_bps
        best = 0
        for i, bw in enumerate(self.bandwidths):
            if bw <= self.up_factor * est:
                best = i
        if best > current and buffered_s < low_buffer_s:
            return current  # no up-switch on a nearly empty buffer
        if best < current and self.bandwidths[current] <= self.down_factor * est and buffered_s >= low_buffer_s:
            return current  # still fits: keep it (hysteresis)
        return best
