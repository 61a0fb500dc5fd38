"""One direction of an impaired link as a schedule: when each packet, in arrival order, leaves.

Sans-I/O: fed arrival times, returns release times; `delayer.py` holds the kernel's packets
until then. The one-way delay is `delay_s` plus a jitter offset within +-`jitter_s` (the same
range `relay.py` draws per chunk). The offset is not drawn per packet: a real link's delay
varies with its queue, so packets close in time see close delays. Targets are drawn
uniformly every JITTER_PERIODS x jitter_s and the offset moves linearly between them, so it
never falls faster than 2 x jitter / period = half the time that passes: a later packet can
never be due before an earlier one, the order-keeping clamp (a link is FIFO) never adds
delay, and the mean stays `delay_s`. Per-packet draws with a FIFO clamp would instead push a
burst of packets to the largest delay drawn among them, inflating the RTT towards
delay + jitter at video rates.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

JITTER_PERIODS = 4.0  # a new jitter target every 4 x jitter: offset slope <= 0.5
MIN_PERIOD_S = 0.001


class DelayLineError(ValueError):
    """A delay line asked for a negative delay or jitter."""


@dataclass
class DelayLine:
    """FIFO delay of `delay_s` +- `jitter_s` (seconds) for one direction of a link."""

    delay_s: float
    jitter_s: float = 0.0
    seed: int | None = None
    _rng: random.Random = field(init=False, repr=False)
    _last: float = field(default=float("-inf"), init=False, repr=False)
    _t0: float | None = field(default=None, init=False, repr=False)  # current jitter segment
    _v0: float = field(default=0.0, init=False, repr=False)
    _v1: float = field(default=0.0, init=False, repr=False)

    def __post_init__(self) -> None:
        if not (self.delay_s >= 0.0 and self.jitter_s >= 0.0):
            raise DelayLineError(f"delay and jitter must be >= 0, got {self.delay_s} and {self.jitter_s}")
        self._rng = random.Random(self.seed)

    @property
    def period_s(self) -> float:
        return max(MIN_PERIOD_S, JITTER_PERIODS * self.jitter_s)

    def offset(self, now: float) -> float:
        """The jitter offset (seconds, within +-jitter_s) at time `now` (non-decreasing calls)."""
        if self.jitter_s == 0.0:
            return 0.0
        period = self.period_s
        if self._t0 is None:
            self._t0, self._v0, self._v1 = now, self._draw(), self._draw()
        elif now - self._t0 >= 2 * period:  # idle: restart from where the offset had got to
            self._t0, self._v0, self._v1 = now, self._v1, self._draw()
        while now - self._t0 >= period:
            self._t0, self._v0, self._v1 = self._t0 + period, self._v1, self._draw()
        return self._v0 + (self._v1 - self._v0) * (now - self._t0) / period

    def release_at(self, arrival: float) -> float:
        """When a packet that arrived at `arrival` (non-decreasing across calls) may leave."""
        due = arrival + max(0.0, self.delay_s + self.offset(arrival))
        self._last = max(due, self._last)  # a link delivers in order
        return self._last

    def _draw(self) -> float:
        return self._rng.uniform(-self.jitter_s, self.jitter_s)
