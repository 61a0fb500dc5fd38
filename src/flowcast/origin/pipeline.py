"""The live pipeline: encoder outputs -> fMP4 reader -> segmenter -> rendered playlists -> media store.

Data moves one way. Each part is published once; the rendition's playlists (full and delta) and,
when they change, the multivariant playlist and MPD are rendered once per publish and handed to
the store as bytes, which wakes every request waiting for them.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from dataclasses import dataclass, field, replace

from flowcast.config import FlowcastConfig
from flowcast.media.fmp4 import FragmentedMP4Reader
from flowcast.media.types import Fragment, InitSegment, TrackInfo
from flowcast.origin.metrics import OriginMetrics
from flowcast.protect.cenc import ContentKey, TrackEncryptor
from flowcast.protect.rotation import FixedKey, KeyedPeriod, KeySchedule
from flowcast.protect.signalling import dash_content_protection, hls_key_tags
from flowcast.origin.store import MediaStore
from flowcast.package import dash, hls, steering
from flowcast.package.model import Part, Segment
from flowcast.package.segmenter import PartReady, SegmentReady, Segmenter
from flowcast.transcode.forensic import variant_b_output

log = logging.getLogger(__name__)

AUDIO = "audio"
# Epoch of every redundant origin's timeline (Unix epoch): timeline t = media wall clock, and
# a segment starting at t is numbered t / segment duration. Their encoders are epoch-locked
# (transcode/epoch.py): decode times are already seconds since this epoch and segment edges
# fall on its segment-duration grid, so every origin cuts, times and numbers alike.
TIMELINE_EPOCH = 0.0
EARLY_FRAGMENTS = 512  # per rendition, held until an epoch-locked run's first video frame


def aligned_msn(timeline_s: float, segment_duration: float) -> int:
    """The media sequence number (and DASH $Number$) of a segment starting at `timeline_s`
    seconds into the timeline: its slot on the segment-duration grid, rounded so that a run
    starting a little off the grid (a single origin's encoder start; an epoch-locked keyframe
    up to a frame late) still takes the slot it mostly covers."""
    return int(math.floor(timeline_s / segment_duration + 0.5))


@dataclass
class _Period:
    """One encoder run as DASH sees it: a Period with its own start number and time offset."""

    id: str
    start: float  # seconds after availabilityStartTime (== timeline time of the run's t = 0)
    start_number: int
    wall_clock: float  # epoch seconds at the run's t = 0 (ProducerReferenceTime)
    # The last number every rendition completed in this run, set when the next run starts:
    # epoch numbering skips the numbers of the downtime, which no DASH player may ask for.
    last_msn: int | None = None


@dataclass
class _Rendition:
    name: str
    bandwidth: int  # peak, bits/s
    average_bandwidth: int
    fps: float | None
    reader: FragmentedMP4Reader = field(default_factory=FragmentedMP4Reader)
    segmenter: Segmenter | None = None
    track: TrackInfo | None = None
    init: bytes | None = None
    # Timing only (media bytes stripped): the store holds the media, the playlist needs none.
    segments: deque[Segment] = field(default_factory=deque)
    pending_parts: list[Part] = field(default_factory=list)
    parts_stored: deque[Segment] = field(default_factory=deque)  # segments whose part objects are still stored
    growing: int | None = None  # msn of the segment being produced
    last_msn: int = -1
    last_part: int = -1
    discontinuity_sequence: int = 0
    pending_discontinuity: bool = False  # the segment in production opens a new encoder run
    hinted: str | None = None  # path of the part announced in EXT-X-PRELOAD-HINT
    # Encryption: the run's clear init segment and one encryptor per key period in use.
    raw_init: bytes | None = None
    encryptors: dict[int, TrackEncryptor] = field(default_factory=dict)
    # "B": the forensic watermark's variant B of the marked rung: same paths and numbers as
    # its A twin, published into the variant store, never listed in a playlist of its own.
    variant: str = "A"
    # Epoch-locked runs open on the video's first frame (a segment boundary); fragments of the
    # other tracks that come before it wait here (bounded) and are cut from that boundary.
    early: deque[Fragment] = field(default_factory=lambda: deque(maxlen=EARLY_FRAGMENTS))


class LivePipeline:
    """Owns the packager state of one live stream and publishes into a MediaStore."""

    def __init__(
        self,
        config: FlowcastConfig,
        store: MediaStore,
        *,
        metrics: OriginMetrics | None = None,
        time_url: str = "/time",
        content_key: ContentKey | None = None,
        license_url: str = "/license/clearkey",
        variant_store: MediaStore | None = None,
        keys: KeySchedule | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.variant_store = variant_store
        self.metrics = metrics
        self.scheme = config.protection.scheme
        if self.scheme != "none" and content_key is None and keys is None:
            raise ValueError(f"protection.scheme={self.scheme} needs a content key")
        self.content_key = content_key if self.scheme != "none" else None
        if keys is None and self.content_key is not None:
            keys = KeySchedule(self.scheme, FixedKey(self.content_key), license_url=license_url)  # type: ignore[arg-type]
        # Which key, init segment and signalling each segment uses (protect/rotation.py).
        self.keys = keys if self.scheme != "none" else None
        self._key_period = -1  # the highest key period with an init segment published
        # Playlists and MPDs announce the key; the license URL comes from the player's config.
        self.key_signal = self.keys.signal(0, "video") if self.keys is not None and not self.keys.rotates else None
        self.time_url = time_url
        pkg = config.packaging
        self.segment_duration = pkg.segment_s
        self.part_target = pkg.part_s
        self.target_duration = math.ceil(self.segment_duration)
        self.renditions: dict[str, _Rendition] = {}
        for rung in config.ladder.rungs:
            self.renditions[rung.name] = _Rendition(
                name=rung.name,
                bandwidth=rung.max_rate * 1000,
                average_bandwidth=rung.video_bitrate_kbps * 1000,
                fps=rung.fps,
            )
        audio = config.ladder.audio
        self.renditions[AUDIO] = _Rendition(
            name=AUDIO, bandwidth=audio.bitrate_kbps * 1000, average_bandwidth=audio.bitrate_kbps * 1000, fps=None
        )
        # Forensic A/B watermark: the marked rung's variant B, keyed by its encoder output name.
        self.variants: dict[str, _Rendition] = {}
        forensic = config.protection.watermark.forensic
        if forensic is not None:
            if variant_store is None:
                raise ValueError("protection.watermark.forensic needs a variant store")
            a = self.renditions[forensic.rendition]
            self.variants[variant_b_output(a.name)] = _Rendition(
                name=a.name, bandwidth=a.bandwidth, average_bandwidth=a.average_bandwidth, fps=a.fps, variant="B"
            )
        self.availability_start: float | None = None
        # Redundant origins: the encoder's timestamps are on the epoch and segments on its grid.
        self.epoch_locked = config.epoch_locked
        self.periods: list[_Period] = []
        self.run = 0
        self._run_anchor: float | None = None  # wall clock of media time 0 in the current run
        self._run_offset = 0.0  # timeline time of media time 0 in the current run
        self._last_timeline_end = 0.0
        self._announced = False  # multivariant playlist and MPD published
        # Redundant origins (origin.redundant): one HLS pathway / DASH BaseURL each.
        self.pathways = steering.pathways(config.origin.redundant, f"/live/{config.stream}/")
        self.unavailable_pathways: frozenset[str] = frozenset()  # set by origin/peers.py

    # -- encoder events ------------------------------------------------------------------------

    def on_run_start(self, run: int, started_at: float) -> None:
        """A new encoder run: close what the last run left open and re-arm every rendition."""
        if self.run:
            for r in self._all():
                if r.segmenter is not None:
                    self._handle(r, r.segmenter.flush())
        self.run = run
        self._run_anchor = None
        for r in self._all():
            r.reader = FragmentedMP4Reader()
            r.pending_parts.clear()
            r.early.clear()

    def on_output(self, name: str, data: bytes) -> None:
        r = self.renditions.get(name) or self.variants.get(name)
        if r is None:
            return
        for event in r.reader.feed(data):
            if isinstance(event, InitSegment):
                self._on_init(r, event)
            elif isinstance(event, Fragment) and r.segmenter is not None:
                if self._run_anchor is None and event.samples:
                    if self.epoch_locked and r.track is not None and r.track.kind != "video":
                        r.early.append(event)  # cut from the video's first boundary (_open_period)
                        continue
                    self._open_period(r, event)
                self._handle(r, r.segmenter.push(event.samples))

    # -- internals -----------------------------------------------------------------------------

    def _on_init(self, r: _Rendition, init: InitSegment) -> None:
        track = init.tracks[0]
        data = init.data
        if self.keys is not None:
            # Encrypted inits are made per key period, from this run's clear one, as the
            # chunks of each period come (_encryptor); new encryptors for a new run.
            r.raw_init = data
            r.encryptors.clear()
            r.track = track
            if not self.keys.rotates:
                self._encryptor(r, 0)
        if r.init is not None and r.init != data:
            log.warning("rendition %s: init segment changed in run %d", r.name, self.run)
        r.track, r.init = track, data
        if r.variant == "B" and self.renditions[r.name].init not in (None, data):
            # One EXT-X-MAP / SegmentTemplate@initialization serves both variants.
            log.error("rendition %s: variant B init differs from A: the A/B segments will not decode", r.name)
        if self.keys is None:
            self._store(r).put(self._path(r.name, "init.mp4"), data, "init")
        if r.segmenter is None:
            r.segmenter = Segmenter(track, segment_duration=self.segment_duration, part_target=self.part_target)
            if self._run_anchor is not None:
                # Its init came after another rendition anchored the run: join that run.
                self._start_run(r, discontinuity=False, first_msn=self.periods[-1].start_number)
        if self.keys is not None:
            r.segmenter.chunk_writer = lambda seq, tid, samples, tick: self._encrypt_chunk(r, seq, tid, samples, tick)

    def _encrypt_chunk(self, r: _Rendition, sequence: int, track_id: int, samples, tick) -> bytes:  # type: ignore[no-untyped-def]
        """The segmenter's chunk writer: encrypt with the key period of the segment being cut
        (segmenter.next_msn is that segment's number while it writes its chunks)."""
        assert self.keys is not None and r.segmenter is not None
        period = self.keys.period(r.segmenter.next_msn)
        encryptor = self._encryptor(r, period)
        if self.keys.rotates:
            self._encryptor(r, period + 1)  # the next init (and MPD Period) a period early
        return encryptor.encrypt_chunk(sequence, track_id, samples, tick)

    def _encryptor(self, r: _Rendition, period: int) -> TrackEncryptor:
        """The rendition's encryptor for a key period; made on first use, with its init
        segment published under the period's name."""
        assert self.keys is not None and r.raw_init is not None and r.track is not None
        encryptor = r.encryptors.get(period)
        if encryptor is not None:
            return encryptor
        kind = "audio" if r.track.kind == "audio" else "video"
        encryptor = self.keys.encryptor(period, kind, r.track)
        data = encryptor.encrypt_init(r.raw_init)
        r.encryptors[period] = encryptor
        for old in [p for p in r.encryptors if p < period - 1]:
            del r.encryptors[old]
        self._store(r).put(self._path(r.name, self.keys.init_name(period)), data, "init")
        if self.keys.rotates and self.keys.rotation.interval:
            # Init segments of periods older than the DVR window (plus one) are no longer named
            # by any playlist or MPD: remove them, each once, as their successors appear.
            span = self.keys.rotation.interval * self.segment_duration
            stale = period - math.ceil(self.config.packaging.dvr_window / span) - 2
            if stale >= 0:
                self._store(r).remove(self._path(r.name, self.keys.init_name(stale)))
        if self.keys.rotates and period > self._key_period:
            self._key_period = period
            self._publish_mpd()  # lists the new key period's Period ahead of its start
        return encryptor

    def _open_period(self, r: _Rendition, first: Fragment) -> None:
        """Anchor the run on the wall clock: timeline time == seconds since availabilityStartTime."""
        if self.epoch_locked:
            self._open_locked_period(r, first)
            return
        now = time.time()
        # r's own timescale: every rendition is a one-track file, so track ids (all 1) say nothing.
        assert r.track is not None
        t0 = first.samples[0].decode_time / r.track.timescale
        anchor = now - t0
        if self.availability_start is None:
            # A single origin counts timeline and numbers from its first run: FFmpeg 5.1's
            # DASH demuxer follows a live MPD only when the first Period starts at
            # availabilityStartTime with no presentationTimeOffset (its min/max segment
            # numbers ignore both). Redundant origins count from a fixed epoch instead
            # (_open_locked_period).
            self.availability_start = anchor
        offset = max(anchor - self.availability_start, self._last_timeline_end)
        # Snap to the timescale grid shared by all renditions (ms) so every track starts together.
        offset = round(offset, 3)
        self._run_anchor, self._run_offset = anchor, offset
        # msn = the segment-duration slot the run starts in; never backwards (rfc8216bis 6.2.1).
        first_msn = max(
            [aligned_msn(offset, self.segment_duration)]
            + [r.segmenter.next_msn for r in self.renditions.values() if r.segmenter]
        )
        self._begin_period(first_msn, start=offset, wall_clock=anchor, discontinuity=bool(self.periods))

    def _open_locked_period(self, r: _Rendition, first: Fragment) -> None:
        """An epoch-locked run (transcode/epoch.py): decode times are seconds since the UNIX
        epoch and the video's first frame is a segment boundary, so the timeline is the media
        clock itself (no offset), N = t / segment duration, and the run continues the last one
        on the same timeline: no discontinuity (RFC 8216 6.2.4: variant streams' matching
        content has matching Discontinuity Sequence Numbers, and the other origins have none
        here). The numbers of the downtime become gaps (_fill_gaps) and, in DASH, the end of
        the last run's Period."""
        assert r.track is not None
        t0 = first.samples[0].decode_time / r.track.timescale
        lag = time.time() - t0
        if abs(lag) > 120.0:
            log.warning("epoch-locked encoder: first frame %.1f s %s the wall clock; its segments "
                        "will not line up with the other origins'", abs(lag), "behind" if lag > 0 else "ahead of")
        self.availability_start = TIMELINE_EPOCH
        self._run_anchor, self._run_offset = 0.0, -TIMELINE_EPOCH
        first_msn = max(
            [aligned_msn(t0 - TIMELINE_EPOCH, self.segment_duration)]
            + [x.segmenter.next_msn for x in self.renditions.values() if x.segmenter]
        )
        start = first_msn * self.segment_duration
        log.info("run %d epoch-locked: first segment %d at %.3f (first frame %.3f s old)", self.run, first_msn, start, lag)
        self._begin_period(first_msn, start=start, wall_clock=TIMELINE_EPOCH + start, discontinuity=False)
        for other in self._all():
            while other.early and other.segmenter is not None:
                self._handle(other, other.segmenter.push(other.early.popleft().samples))

    def _begin_period(self, first_msn: int, *, start: float, wall_clock: float, discontinuity: bool) -> None:
        """Start every rendition's segmenter on the new run and list the run's DASH Period."""
        if self.periods:
            done = [x.segments[-1].msn for x in self.renditions.values() if x.segments and not x.segments[-1].gap]
            self.periods[-1].last_msn = min(done) if done else None
        for other in self._all():
            if other.segmenter is not None:
                self._start_run(other, discontinuity=discontinuity, first_msn=first_msn)
        self.periods.append(_Period(id=f"p{self.run}", start=start, start_number=first_msn, wall_clock=wall_clock))
        self._publish_mpd()

    def _start_run(self, r: _Rendition, *, discontinuity: bool, first_msn: int) -> None:
        assert r.segmenter is not None and self._run_anchor is not None
        self._fill_gaps(r, first_msn)
        r.segmenter.start_run(
            timeline_offset=self._run_offset,
            wallclock_at_zero=self._run_anchor,
            discontinuity=discontinuity,
            first_msn=first_msn,
            grid_locked=self.epoch_locked,
        )
        r.pending_discontinuity = discontinuity

    def _fill_gaps(self, r: _Rendition, first_msn: int) -> None:
        """Keep numbers aligned across renditions after a restart: when the last run ended
        with this rendition one segment short of the others (audio crossed a boundary that
        video's keyframe had not reached), list the missing numbers as EXT-X-GAP segments
        rather than leave a hole in the media sequence. Epoch-locked, a number is a slot of
        the timeline's segment grid whether or not it was produced (a downtime, a missed
        boundary): its gap covers exactly that slot."""
        if not r.segments:
            return
        last = r.segments[-1]
        for msn in range(last.msn + 1, first_msn):
            peers = [s for o in self.renditions.values() if o is not r for s in o.segments if s.msn == msn]
            duration = peers[0].duration if peers else self.segment_duration
            start = last.start + last.duration
            pdt = last.program_date_time + last.duration
            if self.epoch_locked:
                start, duration = msn * self.segment_duration, self.segment_duration
                pdt = TIMELINE_EPOCH + start
            last = Segment(
                msn=msn,
                start=start,
                duration=max(duration, 0.001),
                parts=(),
                discontinuity=False,
                program_date_time=pdt,
                data=b"",
                gap=True,
            )
            r.segments.append(last)
            log.info("rendition %s: segment %d missing after the encoder restart, listed as a gap", r.name, msn)

    def _handle(self, r: _Rendition, events: list[PartReady | SegmentReady]) -> None:
        for event in events:
            if isinstance(event, PartReady):
                part = event.part
                seg_path = self._path(r.name, f"{part.msn}.m4s")
                if r.growing != part.msn:
                    if self.epoch_locked:
                        self._fill_gaps(r, part.msn)  # a slot this rendition did not produce
                    self._store(r).begin(seg_path)
                    r.growing = part.msn
                    r.pending_parts.clear()
                self._store(r).put(self._path(r.name, f"{part.msn}.{part.index}.m4s"), part.data, "part")
                self._store(r).append(seg_path, part.data)
                r.pending_parts.append(replace(part, data=b""))
                r.last_msn, r.last_part = part.msn, part.index
                if self.metrics is not None and self._run_anchor is not None and r.variant == "A":
                    media_end = self._run_anchor + (part.start + part.duration - self._run_offset)
                    self.metrics.part_published(r.name, time.time() - media_end)
            else:
                seg = event.segment
                seg_path = self._path(r.name, f"{seg.msn}.m4s")
                if r.growing == seg.msn:
                    self._store(r).finish(seg_path)
                else:  # broadcast mode: no parts, the segment arrives whole
                    if self.epoch_locked:
                        self._fill_gaps(r, seg.msn)
                    self._store(r).put(seg_path, seg.data, "segment")
                r.growing = None
                r.pending_parts.clear()
                r.pending_discontinuity = False
                seg = replace(seg, data=b"", parts=tuple(replace(p, data=b"") for p in seg.parts))
                r.segments.append(seg)
                if self.part_target is not None:
                    r.parts_stored.append(seg)
                if not self._announced and all(x.segments for x in self.renditions.values()):
                    # Announce the stream once every rendition has a whole segment: hls.js
                    # treats a playlist of parts alone as empty (levelEmptyError).
                    self._announced = True
                    self._publish_multivariant()
                self._last_timeline_end = max(self._last_timeline_end, seg.start + seg.duration)
                if self.part_target is None:
                    r.last_msn, r.last_part = seg.msn, 0
                self._expire(r)
        if events:
            self._publish_playlist(r)

    def _expire(self, r: _Rendition) -> None:
        """Keep the DVR window; parts stay downloadable 3 target durations after leaving the playlist."""
        window = self.config.packaging.dvr_window
        end = r.segments[-1].start + r.segments[-1].duration if r.segments else 0.0
        # A segment leaves only once all of it is older than the window: the one straddling
        # (live edge - timeShiftBufferDepth) is still available to a DASH client.
        while len(r.segments) > 3 and end - (r.segments[0].start + r.segments[0].duration) > window:
            old = r.segments.popleft()
            if old.discontinuity:
                r.discontinuity_sequence += 1
            self._store(r).remove(self._path(r.name, f"{old.msn}.m4s"))
        # Parts leave the playlist after 3 target durations; remove their objects 3 more later
        # (6.2.2), whether or not their segment is still in the DVR window, and each once.
        if not r.segments:
            return
        horizon = r.segments[-1].start - 6 * self.target_duration
        while r.parts_stored and r.parts_stored[0].start + r.parts_stored[0].duration < horizon:
            for part in r.parts_stored.popleft().parts:
                self._store(r).remove(self._path(r.name, f"{part.msn}.{part.index}.m4s"))

    def _publish_playlist(self, r: _Rendition) -> None:
        if r.variant == "B":
            self._publish_variant_holds(r)
            return
        reports = tuple(
            hls.RenditionReport(
                uri=f"../{o.name}/index.m3u8",
                last_msn=o.last_msn,
                last_part=o.last_part if self.part_target else None,
            )
            for o in self.renditions.values()
            if o is not r and o.last_msn >= 0
        )
        pending = tuple(r.pending_parts)
        next_part = None
        pending_pdt = None
        if self.part_target is not None and r.segmenter is not None:
            next_part = r.segmenter.next_part()
            if pending and self._run_anchor is not None:
                pending_pdt = self._run_anchor + (pending[0].start - self._run_offset)
        if not r.segments and not pending:
            return
        keys: tuple[hls.HlsKey, ...] = ()
        maps: tuple[hls.HlsMap, ...] = ()
        if self.keys is not None:
            msns = [s.msn for s in r.segments] + [p.msn for p in pending[:1]]
            if next_part is not None and next_part[0] not in msns:
                msns.append(next_part[0])
            kind = "audio" if r.name == AUDIO else "video"
            keys, maps = self.keys.hls_changes(msns, kind)
        playlist = hls.MediaPlaylist(
            target_duration=self.target_duration,
            part_target=self.part_target,
            segments=tuple(r.segments),
            pending_parts=pending,
            next_part=next_part,
            discontinuity_sequence=r.discontinuity_sequence,
            rendition_reports=reports,
            ended=False,
            pending_program_date_time=pending_pdt,
            pending_discontinuity=bool(pending) and r.pending_discontinuity,
            keys=keys,
            maps=maps,
        )
        full = hls.render_media_playlist(playlist)
        delta = hls.render_media_playlist(playlist, skip=True) if self.part_target is not None else None
        self.store.put_playlist(
            self._path(r.name, "index.m3u8"),
            full=full,
            delta=delta,
            msn=r.last_msn,
            part=r.last_part,
            target_duration=self.target_duration,
            part_target=self.part_target,
            ended=False,
            complete_msn=r.segments[-1].msn if r.segments else -1,
        )
        if next_part is not None:
            self._expect_hinted(r, self._path(r.name, f"{next_part[0]}.{next_part[1]}.m4s"))

    def _expect_hinted(self, r: _Rendition, path: str) -> None:
        """The hinted part MUST be requestable as soon as the hint appears (rfc8216bis 6.2.6):
        announce it, so its requests are held by the hint's rule rather than the bounded
        speculative one; a hint replaced before its part came is withdrawn."""
        if path == r.hinted:
            return
        store = self._store(r)
        if r.hinted is not None and store.get(r.hinted) is None:
            store.remove(r.hinted)
        store.expect(path, "part")
        r.hinted = path

    def _publish_multivariant(self) -> None:
        variants = []
        for rung in self.config.ladder.rungs:
            r = self.renditions[rung.name]
            assert r.track is not None
            variants.append(
                hls.Variant(
                    name=rung.name,
                    track=r.track,
                    bandwidth=r.bandwidth,
                    average_bandwidth=r.average_bandwidth,
                    frame_rate=rung.fps,
                )
            )
        a = self.renditions[AUDIO]
        assert a.track is not None
        audio = hls.AudioRendition(track=a.track, bandwidth=a.bandwidth, average_bandwidth=a.average_bandwidth)
        session_keys: tuple[str, ...] = ()
        if self.keys is not None:
            # The key in force when the stream is announced (with rotation the Common pssh of
            # its init segment also names the next one; later keys come from EXT-X-KEY).
            current = max((o.last_msn for o in self.renditions.values()), default=0)
            session_keys = hls_key_tags(self.keys.signal(self.keys.period(max(current, 0)), "video"))
        self.store.put_manifest(
            f"{self.config.stream}/master.m3u8",
            hls.render_multivariant(
                variants, audio, session_keys=session_keys, pathways=self.pathways, content_steering=self._steering_tag()
            ),
        )
        if self.pathways:
            self._publish_steering()
        self._publish_mpd()

    def set_unavailable_pathways(self, down: frozenset[str]) -> None:
        """origin/peers.py: these redundant origins are down; rank them last from now on."""
        self.unavailable_pathways = down
        if self.pathways and self._announced:
            self._publish_steering()

    def _publish_steering(self) -> None:
        ids = tuple(p.id for p in self.pathways)
        manifest = steering.SteeringManifest(steering.priority_for(ids, self.unavailable_pathways))
        self.store.put_manifest(f"{self.config.stream}/{steering.STEERING_MANIFEST_NAME}", manifest.render())

    def _period_protection(self, key_period: int) -> dict[str, object]:
        """A rotating stream's Period: its init segment and ContentProtection (else none:
        the MPD-wide descriptors apply)."""
        if self.keys is None or not self.keys.rotates:
            return {}
        return {
            "initialization": f"$RepresentationID$/{self.keys.init_name(key_period)}",
            "content_protection": dash_content_protection(self.keys.signal(key_period, "video")),
            "audio_content_protection": dash_content_protection(self.keys.signal(key_period, "audio")),
        }

    def _steering_tag(self) -> str | None:
        """EXT-X-CONTENT-STEERING: the steering manifest beside master.m3u8 (relative, so each
        origin answers for itself), starting on the first pathway."""
        if not self.pathways:
            return None
        return steering.content_steering_attrs(steering.STEERING_MANIFEST_NAME, self.pathways[0].id)

    def _publish_mpd(self) -> None:
        """The MPD changes only when a Period starts (SegmentTemplate@duration needs no updates)."""
        if not self._announced:
            return
        assert self.availability_start is not None
        window = self.config.packaging.dvr_window
        now = time.time()
        live_from = now - self.availability_start - window
        runs = [(p.id, p.start, p.start_number, p.wall_clock) for p in self.periods]
        if self.keys is not None:
            # Key rotation: one Period per key period, the next one listed ahead of its start.
            cut = self.keys.dash_periods(runs, max(self._key_period, 0), self.segment_duration)
        else:
            cut = [KeyedPeriod(*run, 0) for run in runs]
        periods = [p for i, p in enumerate(cut) if i + 1 == len(cut) or cut[i + 1].start > live_from]
        video = tuple(
            dash.DashRepresentation(
                id=rung.name,
                track=self.renditions[rung.name].track,  # type: ignore[arg-type]
                bandwidth=self.renditions[rung.name].bandwidth,
                frame_rate=f"{rung.fps:g}",
            )
            for rung in self.config.ladder.rungs
        )
        a = self.renditions[AUDIO]
        audio = dash.DashRepresentation(id=AUDIO, track=a.track, bandwidth=a.bandwidth)  # type: ignore[arg-type]
        # Key rotation makes a Period per key period. In chunked (low-latency) mode dash.js 5.2
        # marks a Period "buffering completed" once the first chunk of its last segment is
        # appended, preloads the next Period into the same SourceBuffers, and loses the last
        # chunk(s) of that segment: a 0.5-1 s gap at every rotation (measured; Shaka too). So
        # a rotating stream's MPD is regular DASH (whole segments); HLS stays low-latency.
        low_latency = self.part_target is not None and not (self.keys is not None and self.keys.rotates)
        protection = dash_content_protection(self.key_signal) if self.key_signal is not None else ()
        audio_protection = protection
        if self.keys is not None and not self.keys.rotates:
            audio_protection = dash_content_protection(self.keys.signal(0, "audio"))
        mpd = dash.LiveMpd(
            availability_start_time=self.availability_start,
            publish_time=now,
            periods=tuple(
                dash.MpdPeriod(
                    id=p.id,
                    start=p.start,
                    start_number=p.start_number,
                    presentation_time=p.start,
                    wall_clock=p.wall_clock,
                    **self._period_protection(p.key_period),
                    end_number=self._run_end(
                        p.start_number,
                        nxt.start_number if nxt else None,
                        self.keys.last_msn(p.key_period, nxt.start_number if nxt else None) if self.keys is not None else None,
                    ),
                )
                for p, nxt in zip(periods, [*periods[1:], None])
            ),
            video=video,
            audio=audio,
            segment_duration=self.segment_duration,
            utc_timing_url=self.time_url,
            time_shift_buffer_depth=window,
            part_duration=self.part_target if low_latency else None,
            latency=dash.LatencyTarget(target_ms=1500, min_ms=1000, max_ms=3000) if low_latency else None,
            # Whole-segment live DASH: start three segments behind the edge. Shaka's default
            # delay, 1.5 x minBufferTime, starts it with one segment buffered, and it ran dry
            # once at a key-rotation Period switch under load.
            suggested_presentation_delay=None if low_latency else min(3 * self.segment_duration, max(window - self.segment_duration, self.segment_duration)),
            content_protection=protection,
            audio_content_protection=audio_protection,
            base_urls=tuple((p.base, p.id) for p in self.pathways),
        )
        self.store.put_manifest(f"{self.config.stream}/manifest.mpd", dash.render_mpd(mpd))

    def _run_end(self, start_number: int, next_start: int | None, keyed: int | None) -> int | None:
        """SegmentTemplate@endNumber of a Period: the key period's end (`keyed`), or sooner the
        last number its encoder run completed when the next Period is a later run."""
        ends = [keyed] if keyed is not None else []
        for run in self.periods:
            last = run.last_msn
            if last is not None and run.start_number <= start_number <= last and (next_start is None or next_start > last):
                ends.append(last)
        return min(ends) if ends else None

    def _all(self) -> list[_Rendition]:
        return [*self.renditions.values(), *self.variants.values()]

    def _store(self, r: _Rendition) -> MediaStore:
        if r.variant == "B":
            assert self.variant_store is not None
            return self.variant_store
        return self.store

    def _publish_variant_holds(self, r: _Rendition) -> None:
        """Variant B has no playlist of its own (viewers get A's, rendered once): the variant
        store gets only the position and timing its hold rules need (early and preload-hinted
        requests of B objects are held like A's), with an empty body that is never served."""
        if not r.segments and not r.pending_parts:
            return
        self._store(r).put_playlist(
            self._path(r.name, "index.m3u8"),
            full=b"",
            delta=None,
            msn=r.last_msn,
            part=r.last_part,
            target_duration=self.target_duration,
            part_target=self.part_target,
            ended=False,
            complete_msn=r.segments[-1].msn if r.segments else -1,
        )
        if self.part_target is not None and r.segmenter is not None:
            msn, index = r.segmenter.next_part()
            self._expect_hinted(r, self._path(r.name, f"{msn}.{index}.m4s"))

    def _path(self, rendition: str, name: str) -> str:
        return f"{self.config.stream}/{rendition}/{name}"
