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
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field


@dataclass(slots=True)
class Span:
    capture_ts: float  # wall-clock epoch s of the span's first frame
    duration_s: float
    bitrate_kbps: float


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
        if now <= self.clock:
            return
        if self.playing:
            dt = now - self.clock
            played = min(dt, self.buffered_s)
            self._consume(played)
            self.play_time_ms += played * 1000.0
            if played < dt - 1e-9:
                # ran dry at clock + played: one stall starts there
                self.playing = False
                self.rebuffer_count += 1
                self.stall_since = self.clock + played
        self.clock = now

    def _consume(self, seconds: float) -> None:
        while seconds > 1e-12 and self.spans:
            head = self.spans[0]
            step = min(head.duration_s - self._into_span, seconds)
            self.bitrate_ms += head.bitrate_kbps * step * 1000.0
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
