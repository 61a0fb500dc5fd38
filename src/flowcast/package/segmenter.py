"""Samples of one track -> LL-HLS parts / CMAF chunks -> CMAF segments, on a continuous timeline.

Sans-I/O: push samples, get PartReady/SegmentReady events. Each part is one CMAF chunk
(moof+mdat) written once; a segment is the concatenation of its parts.

Grid-locked runs (`start_run(grid_locked=True)`, for epoch-locked redundant origins) number
segments by their slot on the segment-duration grid of the timeline (N = start / duration)
and begin at the first sample that opens a slot, so every origin cuts and numbers alike.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from flowcast.media.cmaf import write_chunk
from flowcast.media.types import Sample, TrackInfo

from .model import Part, Segment

ChunkWriter = Callable[[int, int, Sequence[Sample], int | None], bytes]

__all__ = ["PartReady", "SegmentReady", "Segmenter", "SegmenterError"]


class SegmenterError(ValueError):
    """Invalid segmenter configuration."""


@dataclass(frozen=True, slots=True)
class PartReady:
    """A part (CMAF chunk) is complete: publish it and its EXT-X-PART now."""

    part: Part


@dataclass(frozen=True, slots=True)
class SegmentReady:
    """A segment is complete: its parts were all announced before this event."""

    segment: Segment


Event = PartReady | SegmentReady


class Segmenter:
    """Cuts one track. Video segments open on sync samples; audio follows the segment grid."""

    def __init__(
        self,
        track: TrackInfo,
        *,
        segment_duration: float,
        part_target: float | None,
        first_msn: int = 0,
        chunk_writer: ChunkWriter = write_chunk,
    ) -> None:
        if segment_duration <= 0 or (part_target is not None and not 0 < part_target <= segment_duration):
            raise SegmenterError("need segment_duration > 0 and 0 < part_target <= segment_duration")
        self._track = track
        # The CMAF chunk writer: clear by default, or a protect.cenc.TrackEncryptor's
        # encrypt_chunk, which keeps the same contract.
        self.chunk_writer = chunk_writer
        self._ts = track.timescale
        self._video = track.kind == "video"
        self._seg_ticks = segment_duration * track.timescale
        self._part_ticks = None if part_target is None else part_target * track.timescale
        self._next_msn = first_msn
        self._sequence = 1  # mfhd sequence_number, per track (14496-12 8.8.5)
        self._tick_offset = 0  # timeline ticks added to the run's decode times
        self._wallclock_at_zero = 0.0
        self._discontinuity = False
        self._run_start = 0  # timeline tick of the run's t = 0: origin of the audio grid
        self._waiting_sync = self._video
        self._grid_locked = False  # numbers are grid slots (start_run)
        self._waiting_grid = False  # dropping samples until one opens a slot >= next_msn
        self._queued: list[Event] = []
        self._last_duration = 0
        self._reset_segment()

    @property
    def next_msn(self) -> int:
        return self._next_msn

    def next_part(self) -> tuple[int, int]:
        """(msn, index) of the part this segmenter publishes next: the EXT-X-PRELOAD-HINT,
        whose URI MUST be the one later added (rfc8216bis 6.2.6). Decided by the same rule
        that cuts segments, assuming the encoder puts a keyframe where that rule expects one."""
        if not self._seg_samples:
            return self._next_msn, 0
        end = self._seg_start_tick + self._seg_duration
        if self._video and not self._part_samples and self._segment_due(end, self._last_duration):
            return self._next_msn + 1, 0
        return self._next_msn, len(self._parts)

    def start_run(
        self,
        *,
        timeline_offset: float,
        wallclock_at_zero: float,
        discontinuity: bool,
        first_msn: int | None = None,
        grid_locked: bool = False,
    ) -> None:
        """A new encoder run whose decode times start near 0 at `timeline_offset` seconds.

        Anything still open from the previous run is closed; its events come out of the next
        push() or flush(). `grid_locked`: the run's decode times are already on the timeline
        (epoch-locked encoder): drop samples until one opens a segment slot at or after
        `first_msn` (video: a sync sample from half a frame before to one frame after the slot
        boundary; other tracks: within half a sample of it), and number every segment by the
        slot it starts in.
        """
        self._queued.extend(self._close_segment())
        self._tick_offset = round(timeline_offset * self._ts)
        self._run_start = self._tick_offset
        self._wallclock_at_zero = wallclock_at_zero
        self._discontinuity = self._discontinuity or discontinuity
        if first_msn is not None:
            self._next_msn = max(self._next_msn, first_msn)  # MSNs never go backwards (rfc8216bis 6.2.1)
        self._waiting_sync = self._video
        self._grid_locked = self._waiting_grid = grid_locked

    def push(self, samples: Iterable[Sample]) -> list[Event]:
        """Add samples in decode order; return the parts and segments they complete."""
        events, self._queued = self._queued, []
        for sample in samples:
            if self._waiting_grid:
                slot = self._slot_opened_by(sample, sample.decode_time + self._tick_offset)
                if slot is None or slot < self._next_msn:
                    continue
                self._next_msn = slot
                self._waiting_grid = self._waiting_sync = False
            if self._waiting_sync:
                if not sample.is_sync:
                    continue  # a segment must open on a random access point (23000-19 7.3.2.2)
                self._waiting_sync = False
            tick = sample.decode_time + self._tick_offset
            if self._seg_samples and self._opens_segment(sample, tick):
                events.extend(self._close_segment())
            if not self._seg_samples:
                self._open_segment(sample, tick)
            if (
                self._part_ticks is not None
                and self._part_samples
                and self._part_duration + sample.duration > self._part_ticks
            ):
                events.append(self._close_part())  # never exceed PART-TARGET (rfc8216bis 4.4.4.9)
            self._part_samples.append(sample)
            self._part_duration += sample.duration
            self._last_duration = sample.duration
            self._seg_samples += 1
            self._seg_duration += sample.duration
            if self._part_ticks is not None and self._part_complete(sample, tick):
                events.append(self._close_part())
            if not self._video and self._audio_segment_complete(sample, tick):
                events.extend(self._close_segment())  # the next sample is on the grid: publish now
        return events

    def flush(self) -> list[Event]:
        """End of a run: close the open part and segment."""
        events, self._queued = self._queued, []
        events.extend(self._close_segment())
        return events

    # -- cutting rules -------------------------------------------------------------------

    def _opens_segment(self, sample: Sample, tick: int) -> bool:
        if self._video:
            # A sync sample opens a segment once the open one is long enough (within half a
            # frame) or once it reaches the audio's segment grid. The encoder forces keyframes
            # at the first frame with t >= n x segment, so when the frame rate does not divide
            # the segment some GOPs are a frame short (29.97 fps, 2 s: 59 or 60 frames); the
            # length rule alone skips those keyframes, doubling a segment past TARGETDURATION
            # and leaving video one MSN behind audio from then on.
            return sample.is_sync and self._segment_due(tick, sample.duration)
        return tick >= self._grid_boundary() - sample.duration / 2

    def _slot_opened_by(self, sample: Sample, tick: int) -> int | None:
        """The grid slot whose boundary `sample` opens (grid-locked runs), else None."""
        if self._video and not sample.is_sync:
            return None
        rel = tick - self._run_start
        slot = int((rel + self._seg_ticks / 2) // self._seg_ticks)
        off = rel - slot * self._seg_ticks
        # An encoder forces the keyframe at the first frame at or after the boundary: up to a
        # frame late when the rate does not divide the segment (29.97 fps).
        late = sample.duration if self._video else sample.duration / 2
        return slot if -sample.duration / 2 <= off < late else None

    def _segment_due(self, tick: int, duration: int) -> bool:
        """Whether a video sync sample at `tick` opens the next segment."""
        return self._seg_duration >= self._seg_ticks - duration / 2 or tick >= self._grid_boundary() - duration / 2

    def _grid_boundary(self) -> float:
        """Next multiple of segment_duration after the open segment's start, counted from the run's t=0,
        so audio cuts land within one frame of the video's GOP-aligned cuts."""
        # A segment opened up to one frame early still belongs to the grid point it rounds to.
        k = (self._seg_start_tick - self._run_start + self._seg_first_duration) // self._seg_ticks + 1
        return self._run_start + k * self._seg_ticks

    def _audio_segment_complete(self, sample: Sample, tick: int) -> bool:
        end = tick + sample.duration
        return end >= self._grid_boundary() - sample.duration / 2

    def _part_complete(self, sample: Sample, tick: int) -> bool:
        # Complete as soon as another sample of this duration would not fit, so the part goes
        # out without waiting for the next sample (rfc8216bis 6.2.1: a part within one Part Target).
        assert self._part_ticks is not None
        return self._part_duration + sample.duration > self._part_ticks

    # -- state -----------------------------------------------------------------------------

    def _reset_segment(self) -> None:
        self._parts: list[Part] = []
        self._part_samples: list[Sample] = []
        self._part_duration = 0
        self._seg_samples = 0
        self._seg_duration = 0
        self._seg_start_tick = 0
        self._seg_pdt = 0.0
        self._seg_first_duration = 0

    def _open_segment(self, sample: Sample, tick: int) -> None:
        if self._grid_locked:
            # Numbered by slot: a segment that swallowed a slot (a keyframe the encoder did
            # not force) leaves the next number unused rather than shift every later one.
            slot = int((tick - self._run_start + self._seg_ticks / 2) // self._seg_ticks)
            self._next_msn = max(self._next_msn, slot)
        self._seg_start_tick = tick
        self._seg_first_duration = sample.duration
        self._seg_pdt = self._wallclock_at_zero + sample.decode_time / self._ts

    def _close_part(self) -> PartReady:
        samples = self._part_samples
        tick = samples[0].decode_time + self._tick_offset
        chunk = self.chunk_writer(self._sequence, self._track.track_id, samples, tick)
        self._sequence += 1
        part = Part(
            msn=self._next_msn,
            index=len(self._parts),
            start=tick / self._ts,
            duration=self._part_duration / self._ts,
            independent=samples[0].is_sync,
            data=chunk,
        )
        self._parts.append(part)
        self._part_samples = []
        self._part_duration = 0
        return PartReady(part)

    def _close_segment(self) -> list[Event]:
        if not self._seg_samples:
            return []
        events: list[Event] = []
        if self._part_samples:
            ready = self._close_part()
            if self._part_ticks is not None:
                events.append(ready)  # broadcast mode publishes segments only
        segment = Segment(
            msn=self._next_msn,
            start=self._seg_start_tick / self._ts,
            duration=self._seg_duration / self._ts,
            parts=tuple(self._parts),
            discontinuity=self._discontinuity,
            program_date_time=self._seg_pdt,
            data=b"".join(p.data for p in self._parts),
        )
        events.append(SegmentReady(segment))
        self._next_msn += 1
        self._discontinuity = False
        self._reset_segment()
        return events
