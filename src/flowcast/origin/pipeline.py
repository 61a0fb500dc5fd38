"""The live pipeline: encoder outputs -> fMP4 reader -> segmenter -> rendered playlists -> media store.

Data moves one way. Each part is published once; the rendition's playlists (full and delta) and,
when they change, the multivariant playlist and MPD are rendered once per publish and handed to
the store as bytes, which wakes every request waiting for them.
"""

from __future__ import annotations

import logging
import math
import secrets
import time
from collections import deque
from dataclasses import dataclass, field, replace

from flowcast.config import FlowcastConfig
from flowcast.media.fmp4 import FragmentedMP4Reader
from flowcast.media.types import Fragment, InitSegment, TrackInfo
from flowcast.origin.metrics import OriginMetrics
from flowcast.protect.cenc import ContentKey, TrackEncryptor
from flowcast.protect.signalling import clearkey_signal, dash_content_protection, hls_key, hls_key_tags
from flowcast.origin.store import MediaStore
from flowcast.package import dash, hls
from flowcast.package.model import Part, Segment
from flowcast.package.segmenter import PartReady, SegmentReady, Segmenter

log = logging.getLogger(__name__)

AUDIO = "audio"


@dataclass
class _Period:
    """One encoder run as DASH sees it: a Period with its own start number and time offset."""

    id: str
    start: float  # seconds after availabilityStartTime (== timeline time of the run's t = 0)
    start_number: int
    wall_clock: float  # epoch seconds at the run's t = 0 (ProducerReferenceTime)


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
    ) -> None:
        self.config = config
        self.store = store
        self.metrics = metrics
        self.scheme = config.protection.scheme
        if self.scheme != "none" and content_key is None:
            raise ValueError(f"protection.scheme={self.scheme} needs a content key")
        self.content_key = content_key if self.scheme != "none" else None
        # Playlists and MPDs announce the key; the license URL comes from the player's config.
        self.key_signal = (
            clearkey_signal(self.content_key.kid, self.scheme, license_url) if self.content_key is not None else None
        )
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
        self.availability_start: float | None = None
        self.periods: list[_Period] = []
        self.run = 0
        self._run_anchor: float | None = None  # wall clock of media time 0 in the current run
        self._run_offset = 0.0  # timeline time of media time 0 in the current run
        self._last_timeline_end = 0.0
        self._announced = False  # multivariant playlist and MPD published

    # -- encoder events ------------------------------------------------------------------------

    def on_run_start(self, run: int, started_at: float) -> None:
        """A new encoder run: close what the last run left open and re-arm every rendition."""
        if self.run:
            for r in self.renditions.values():
                if r.segmenter is not None:
                    self._handle(r, r.segmenter.flush())
        self.run = run
        self._run_anchor = None
        for r in self.renditions.values():
            r.reader = FragmentedMP4Reader()
            r.pending_parts.clear()

    def on_output(self, name: str, data: bytes) -> None:
        r = self.renditions.get(name)
        if r is None:
            return
        for event in r.reader.feed(data):
            if isinstance(event, InitSegment):
                self._on_init(r, event)
            elif isinstance(event, Fragment) and r.segmenter is not None:
                if self._run_anchor is None and event.samples:
                    self._open_period(r, event)
                self._handle(r, r.segmenter.push(event.samples))

    # -- internals -----------------------------------------------------------------------------

    def _on_init(self, r: _Rendition, init: InitSegment) -> None:
        track = init.tracks[0]
        data = init.data
        encryptor = None
        if self.content_key is not None:
            key = self.content_key
            if self.scheme == "cenc":
                # CTR mode: a fresh random start for the per-sample IVs of every encoder run,
                # so no IV is ever reused under this key (the IVs travel in senc, not init).
                key = ContentKey(kid=key.kid, key=key.key, iv=secrets.token_bytes(8))
            encryptor = TrackEncryptor(self.scheme, track, key)
            data = encryptor.encrypt_init(data)
        if r.init is not None and r.init != data:
            log.warning("rendition %s: init segment changed in run %d", r.name, self.run)
        r.track, r.init = track, data
        self.store.put(self._path(r.name, "init.mp4"), data, "init")
        if r.segmenter is None:
            r.segmenter = Segmenter(track, segment_duration=self.segment_duration, part_target=self.part_target)
            if self._run_anchor is not None:
                # Its init came after another rendition anchored the run: join that run.
                self._start_run(r, discontinuity=False, first_msn=self.periods[-1].start_number)
        if encryptor is not None:
            r.segmenter.chunk_writer = encryptor.encrypt_chunk

    def _open_period(self, r: _Rendition, first: Fragment) -> None:
        """Anchor the run on the wall clock: timeline time == seconds since availabilityStartTime."""
        now = time.time()
        # r's own timescale: every rendition is a one-track file, so track ids (all 1) say nothing.
        assert r.track is not None
        t0 = first.samples[0].decode_time / r.track.timescale
        anchor = now - t0
        if self.availability_start is None:
            self.availability_start = anchor
        offset = max(anchor - self.availability_start, self._last_timeline_end)
        # Snap to the timescale grid shared by all renditions (ms) so every track starts together.
        offset = round(offset, 3)
        self._run_anchor, self._run_offset = anchor, offset
        first_msn = max((r.segmenter.next_msn for r in self.renditions.values() if r.segmenter), default=0)
        discontinuity = bool(self.periods)
        for other in self.renditions.values():
            if other.segmenter is not None:
                self._start_run(other, discontinuity=discontinuity, first_msn=first_msn)
        self.periods.append(_Period(id=f"p{self.run}", start=offset, start_number=first_msn, wall_clock=anchor))
        self._publish_mpd()

    def _start_run(self, r: _Rendition, *, discontinuity: bool, first_msn: int) -> None:
        assert r.segmenter is not None and self._run_anchor is not None
        self._fill_gaps(r, first_msn)
        r.segmenter.start_run(
            timeline_offset=self._run_offset,
            wallclock_at_zero=self._run_anchor,
            discontinuity=discontinuity,
            first_msn=first_msn,
        )
        r.pending_discontinuity = discontinuity

    def _fill_gaps(self, r: _Rendition, first_msn: int) -> None:
        """Keep numbers aligned across renditions after a restart: when the last run ended
        with this rendition one segment short of the others (audio crossed a boundary that
        video's keyframe had not reached), list the missing numbers as EXT-X-GAP segments
        rather than leave a hole in the media sequence."""
        if not r.segments:
            return
        last = r.segments[-1]
        for msn in range(last.msn + 1, first_msn):
            peers = [s for o in self.renditions.values() if o is not r for s in o.segments if s.msn == msn]
            duration = peers[0].duration if peers else self.segment_duration
            start = last.start + last.duration
            last = Segment(
                msn=msn,
                start=start,
                duration=max(duration, 0.001),
                parts=(),
                discontinuity=False,
                program_date_time=last.program_date_time + last.duration,
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
                    self.store.begin(seg_path)
                    r.growing = part.msn
                    r.pending_parts.clear()
                self.store.put(self._path(r.name, f"{part.msn}.{part.index}.m4s"), part.data, "part")
                self.store.append(seg_path, part.data)
                r.pending_parts.append(replace(part, data=b""))
                r.last_msn, r.last_part = part.msn, part.index
                if self.metrics is not None and self._run_anchor is not None:
                    media_end = self._run_anchor + (part.start + part.duration - self._run_offset)
                    self.metrics.part_published(r.name, time.time() - media_end)
            else:
                seg = event.segment
                seg_path = self._path(r.name, f"{seg.msn}.m4s")
                if r.growing == seg.msn:
                    self.store.finish(seg_path)
                else:  # broadcast mode: no parts, the segment arrives whole
                    self.store.put(seg_path, seg.data, "segment")
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
            self.store.remove(self._path(r.name, f"{old.msn}.m4s"))
        # Parts leave the playlist after 3 target durations; remove their objects 3 more later
        # (6.2.2), whether or not their segment is still in the DVR window, and each once.
        if not r.segments:
            return
        horizon = r.segments[-1].start - 6 * self.target_duration
        while r.parts_stored and r.parts_stored[0].start + r.parts_stored[0].duration < horizon:
            for part in r.parts_stored.popleft().parts:
                self.store.remove(self._path(r.name, f"{part.msn}.{part.index}.m4s"))

    def _publish_playlist(self, r: _Rendition) -> None:
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
            keys=(hls_key(self.key_signal, 0),) if self.key_signal is not None else (),
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
        if r.hinted is not None and self.store.get(r.hinted) is None:
            self.store.remove(r.hinted)
        self.store.expect(path, "part")
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
        session_keys = hls_key_tags(self.key_signal) if self.key_signal is not None else ()
        self.store.put_manifest(
            f"{self.config.stream}/master.m3u8", hls.render_multivariant(variants, audio, session_keys=session_keys)
        )
        self._publish_mpd()

    def _publish_mpd(self) -> None:
        """The MPD changes only when a Period starts (SegmentTemplate@duration needs no updates)."""
        if not self._announced:
            return
        assert self.availability_start is not None
        window = self.config.packaging.dvr_window
        now = time.time()
        live_from = now - self.availability_start - window
        periods = [p for i, p in enumerate(self.periods) if i + 1 == len(self.periods) or self.periods[i + 1].start > live_from]
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
        low_latency = self.part_target is not None
        protection = dash_content_protection(self.key_signal) if self.key_signal is not None else ()
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
                )
                for p in periods
            ),
            video=video,
            audio=audio,
            segment_duration=self.segment_duration,
            utc_timing_url=self.time_url,
            time_shift_buffer_depth=window,
            part_duration=self.part_target,
            latency=dash.LatencyTarget(target_ms=1500, min_ms=1000, max_ms=3000) if low_latency else None,
            content_protection=protection,
            audio_content_protection=protection,
        )
        self.store.put_manifest(f"{self.config.stream}/manifest.mpd", dash.render_mpd(mpd))

    def _path(self, rendition: str, name: str) -> str:
        return f"{self.config.stream}/{rendition}/{name}"
