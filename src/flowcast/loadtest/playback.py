"""The player's buffer model, sans-I/O: media in, playhead, stalls and latency out.

Like hls.js/dash.js: the viewer calls `start` once it has loaded up to the live edge, and the
model seeks to the live sync point (PART-HOLD-BACK behind the edge for LL-HLS, the MPD's
target latency for LL-DASH, HOLD-BACK for plain HLS); the playhead
then advances in real time; when the buffer runs dry the player stalls (one rebuffer) and
resumes once `resume_target_s` is buffered again. Time is pushed in by the caller
(`advance(now)`), so tests drive it with a fake clock and the viewers with the event loop's.

Every buffered span carries the wall-clock time its first frame was captured (HLS
PROGRAM-DATE-TIME, DASH ProducerReferenceTime), so latency = wall now - capture time of the
frame at the playhead, across discontinuities too.

A player that starts late (a slow first load) or that stalled sits behind its target
latency; hls.js and dash.js, as the player kit configures them, play faster (up to 1.25x)
until they are back on target. `HlsJsCatchUp` and `DashJsCatchUp` are their rules.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(slots=True)
class Span:
    capture_ts: float  # wall-clock epoch s of the span's first frame
    duration_s: float
    bitrate_kbps: float


class CatchUp(Protocol):
    def rate(self, distance_s: float, forward_s: float) -> float:
        """Playback rate for a player `distance_s` behind (negative: ahead of) its target
        latency with `forward_s` of media buffered past the playhead."""
        ...


@dataclass(frozen=True, slots=True)
class HlsJsCatchUp:
    """hls.js's LatencyController (1.7, the player kit's): a sigmoid of the distance, in
    steps of 0.05, never below 1x; only within `live_range_s` of the target (further is DVR
    playback) and with more than 1 s buffered. `max_rate` is `maxLiveSyncPlaybackRate`."""

    max_rate: float = 1.25
    live_range_s: float = math.inf  # min(liveMaxLatencyDuration, target + target duration)

    def rate(self, distance_s: float, forward_s: float) -> float:
        if not (0.05 < distance_s < self.live_range_s and forward_s > 1.0):
            return 1.0
        rate = math.floor(2.0 / (1.0 + math.exp(-0.75 * distance_s)) * 20.0 + 0.5) / 20.0  # JS Math.round
        return min(min(2.0, max(1.0, self.max_rate)), max(1.0, rate))


@dataclass(frozen=True, slots=True)
class DashJsCatchUp:
    """dash.js's CatchupController, default mode (5.2, the player kit's):
    1 - c + 2c / (1 + e^(-5 d)), with c the `liveCatchup.playbackRate` max when behind and
    |min| when ahead, so it also slows down a player that is early."""

    max_delta: float = 0.25
    min_delta: float = -0.2

    def rate(self, distance_s: float, forward_s: float) -> float:
        if distance_s == 0.0:
            return 1.0
        c = abs(self.min_delta) if distance_s < 0 else self.max_delta
        return 1.0 - c + 2.0 * c / (1.0 + math.exp(-5.0 * distance_s))


@dataclass
class Playback:
    resume_target_s: float
    request_ts: float  # monotonic time the session started (startup is measured from here)
    wall_offset: float  # wall clock = monotonic + wall_offset
    spans: deque[Span] = field(default_factory=deque)
    buffered_s: float = 0.0
    playing: bool = False
    started: bool = False
    clock: float = 0.0  # monotonic time the model has been advanced to
    startup_time_ms: float | None = None
    rebuffer_count: int = 0
    rebuffer_ms: float = 0.0
    play_time_ms: float = 0.0
    bitrate_ms: float = 0.0  # sum of bitrate_kbps x ms played, for the average
    stall_since: float | None = None
    stalls: list[tuple[float, float]] = field(default_factory=list)  # (wall start, ms)
    catch_up: CatchUp | None = None  # None: always 1x
    target_latency_s: float = 0.0  # by the player's own measure of latency (below)
    # Wall-clock latency minus the player's own measure: hls.js counts from the live edge
    # of the playlist it last loaded (as if that edge were captured when it arrived), so a
    # client sets this to how old that edge was on arrival; dash.js counts from the wall
    # clock (0).
    edge_age_s: float = 0.0
    rate: float = 1.0  # the playback rate now
    _into_span: float = 0.0  # seconds of spans[0] already played

    def __post_init__(self) -> None:
        self.clock = self.request_ts

    def append(self, now: float, span: Span) -> None:
        self.advance(now)
        self.spans.append(span)
        self.buffered_s += span.duration_s
        self._maybe_start(now)

    def skip_to_live(self, keep_s: float) -> None:
        """Before starting, drop media so that `keep_s` stays buffered (a seek to the live sync
        point: the player loads from the independent part, then seeks forward)."""
        if self.started:
            return
        drop = self.buffered_s - keep_s
        while drop > 1e-9 and self.spans:
            head = self.spans[0]
            left = head.duration_s - self._into_span
            step = min(left, drop)
            self._into_span += step
            drop -= step
            self.buffered_s -= step
            if self._into_span >= head.duration_s - 1e-9:
                self.spans.popleft()
                self._into_span = 0.0

    def start(self, now: float, keep_s: float) -> None:
        """Start playback with `keep_s` of media ahead of the playhead (the live sync point)."""
        if self.started:
            return
        self.advance(now)
        self.skip_to_live(keep_s)
        self.started = self.playing = True
        self.clock = now
        self.startup_time_ms = (now - self.request_ts) * 1000.0

    def _maybe_start(self, now: float) -> None:
        """Resume after a stall once `resume_target_s` is buffered."""
        if self.playing or not self.started:
            return
        if self.buffered_s >= self.resume_target_s - 1e-6:
            assert self.stall_since is not None
            ms = (now - self.stall_since) * 1000.0
            self.rebuffer_ms += ms
            self.stalls.append((self.stall_since + self.wall_offset, ms))
            self.stall_since = None
            self.playing = True

    def advance(self, now: float) -> None:
        """Play from the last call to `now`, at the rate the catch-up rule chose at the last
        call (players re-evaluate it a few times a second, on timeupdate)."""
        if now <= self.clock:
            return
        if self.playing:
            dt = now - self.clock
            rate = self.rate
            played = min(dt, self.buffered_s / rate)  # wall seconds of play
            self._consume(played * rate, rate)
            self.play_time_ms += played * 1000.0
            if played < dt - 1e-9:
                # ran dry at clock + played: one stall starts there
                self.playing = False
                self.rebuffer_count += 1
                self.stall_since = self.clock + played
        self.clock = now
        self._choose_rate()

    def _choose_rate(self) -> None:
        if self.catch_up is None or not self.playing or not self.spans:
            self.rate = 1.0
            return
        head = self.spans[0]
        latency = self.clock + self.wall_offset - (head.capture_ts + self._into_span)
        distance = latency - self.edge_age_s - self.target_latency_s
        self.rate = self.catch_up.rate(distance, self.buffered_s)

    def _consume(self, seconds: float, rate: float = 1.0) -> None:
        while seconds > 1e-12 and self.spans:
            head = self.spans[0]
            step = min(head.duration_s - self._into_span, seconds)
            self.bitrate_ms += head.bitrate_kbps * step * 1000.0 / rate  # weighted by time played
            self._into_span += step
            seconds -= step
            self.buffered_s -= step
            if self._into_span >= head.duration_s - 1e-9:
                self.spans.popleft()
                self._into_span = 0.0
        if not self.spans:
            self.buffered_s = 0.0

    def latency_ms(self, now: float) -> float | None:
        """Wall now minus the capture time of the frame at the playhead (None when stalled
        with nothing buffered, or before startup)."""
        self.advance(now)
        if not self.started or not self.spans:
            return None
        head = self.spans[0]
        return (now + self.wall_offset - (head.capture_ts + self._into_span)) * 1000.0

    def finish(self, now: float) -> None:
        """End of session: an open stall counts up to now."""
        self.advance(now)
        if self.stall_since is not None:
            ms = (now - self.stall_since) * 1000.0
            self.rebuffer_ms += ms
            self.stalls.append((self.stall_since + self.wall_offset, ms))
            self.stall_since = None

    @property
    def buffered_end_capture(self) -> float | None:
        """Capture time (wall clock) of the end of the buffered media."""
        if not self.spans:
            return None
        last = self.spans[-1]
        return last.capture_ts + last.duration_s

    @property
    def avg_bitrate_kbps(self) -> float:
        return self.bitrate_ms / self.play_time_ms if self.play_time_ms else 0.0
