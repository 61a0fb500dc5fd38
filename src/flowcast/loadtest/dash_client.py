"""LL-DASH virtual viewer (DASH-IF Low-latency Modes for DASH; ISO/IEC 23009-1 5.3.9.5).

As dash.js in low-latency mode:
- load the MPD and synchronise the clock with its UTCTiming (http-xsdate `/time`);
- live edge from the MPD timing: segment k of a SegmentTemplate($Number$) is available from
  availabilityStartTime + Period@start + (k + 1) x duration - availabilityTimeOffset;
- start at the ServiceDescription target latency behind now, on the segment that holds it,
  and seek to it once the first chunks are in;
- fetch each segment as soon as its first chunk is available; the origin streams the rest
  with chunked transfer encoding; every CMAF chunk (moof+mdat) is added to the buffer when
  its last byte arrives, timed from its samples (flowcast.media.fmp4 reads them); a segment
  re-requested from another BaseURL after a failover adds only the chunks not yet buffered
  (MSE overwrites the same time range), and the decode times say whether the new origin's
  media continues the old one's (ViewerBase.note_media);
- latency from ProducerReferenceTime (wallClockTime <-> presentationTime) against the
  synchronised clock; ABR from chunk bursts (bytes over the time they took to arrive
  back to back), since a chunked segment arrives at the encoder's pace.
"""

from __future__ import annotations

import asyncio
import time
from urllib.parse import urljoin, urlsplit

from flowcast.loadtest.abr import Abr
from flowcast.loadtest.playback import DashJsCatchUp, Span
from flowcast.loadtest.viewer import FatalViewerError, ViewerBase, origin_of
from flowcast.media.fmp4 import FragmentedMP4Reader
from flowcast.media.types import Fragment
from flowcast.package.mpd import MpdError, parse_datetime, parse_mpd

MEDIA_TIMEOUT = 10.0
BURST_GAP_S = 0.03  # reads closer than this belong to one burst


class DashViewer(ViewerBase):
    protocol = "ll-dash"

    base_path = ""  # path of the BaseURL in use ("": the MPD's own URL)

    def _resolve(self, uri: str) -> str:
        u = urlsplit(urljoin(urljoin(self.path, self.base_path), uri))
        return u.path + (f"?{u.query}" if u.query else "")

    async def _base_urls(self, base_urls: tuple[tuple[str, str | None], ...]) -> None:
        """MPD-level BaseURLs (redundant origins): segments resolve against the first, and a
        failing origin moves the viewer to the next, as dash.js's BaseURL failover does.
        Failover keeps request paths, so only BaseURLs with the first one's path qualify."""
        if not base_urls:
            return
        first = urlsplit(base_urls[0][0])
        self.base_path = first.path
        if first.scheme and first.hostname:
            origins = [
                origin_of(loc or f"base-{i}", url)
                for i, (url, loc) in enumerate(base_urls)
                if urlsplit(url).path == first.path and urlsplit(url).hostname
            ]
            await self.use_origins(origins)

    async def _clock_offset(self, mpd_timing: str | None) -> float:
        """server time - local wall time, from an http-xsdate UTCTiming (0 without one)."""
        if not mpd_timing:
            return 0.0
        resp = await self.get(self.playlist_conn, self._resolve(mpd_timing), MEDIA_TIMEOUT)
        try:
            server = parse_datetime(resp.body.decode().strip()).timestamp()
        except (MpdError, UnicodeDecodeError) as exc:
            raise FatalViewerError("bad_utctiming", str(exc)) from exc
        mid = (resp.started + resp.finished) / 2 + self.wall_offset
        return server - mid

    async def play(self) -> None:
        resp = await self.get(self.playlist_conn, self.path, MEDIA_TIMEOUT)
        try:
            mpd = parse_mpd(resp.body)
        except MpdError as exc:
            raise FatalViewerError("bad_manifest", str(exc)) from exc
        if mpd.type != "dynamic" or mpd.availability_start_time is None or not mpd.periods:
            raise FatalViewerError("bad_manifest", "not a live MPD")
        await self._base_urls(mpd.base_urls)
        timing = next((u.value for u in mpd.utc_timings if "xsdate" in u.scheme_id_uri or "iso" in u.scheme_id_uri), None)
        offset = await self._clock_offset(timing)
        period = mpd.periods[0]
        video = next((a for a in period.adaptation_sets if a.kind == "video"), None)
        if video is None or not video.representations:
            raise FatalViewerError("bad_manifest", "no video adaptation set")
        kid = next((cp.default_kid for cp in video.content_protections if cp.default_kid), None)
        if kid is not None:
            # EME asks for the license on the first encrypted init segment; nothing plays before
            await self.ensure_license(kid.replace("-", "").lower())
        reps = sorted(video.representations, key=lambda r: r.bandwidth)
        tpls = [r.segment_template or video.segment_template for r in reps]
        if any(t is None or t.duration is None or not t.media for t in tpls):
            raise FatalViewerError("bad_manifest", "needs SegmentTemplate@duration with $Number$")
        self.abr = Abr(tuple(r.bandwidth for r in reps))
        cur = self.abr.choose(0, 0.0)
        tpl = tpls[cur]
        assert tpl is not None and tpl.duration is not None and tpl.media is not None
        ts, seg_d = tpl.timescale, tpl.duration / tpl.timescale
        ato = tpl.availability_time_offset or 0.0
        ast = mpd.availability_start_time.timestamp() + (period.start or 0.0)
        prt = video.producer_reference_times[0] if video.producer_reference_times else None
        pto = tpl.presentation_time_offset / ts
        if prt is not None and prt.wall_clock_time is not None:
            prt_wall, prt_media = prt.wall_clock_time.timestamp(), (prt.presentation_time or 0) / ts
        else:  # without PRT, media time 0 is availabilityStartTime
            prt_wall, prt_media = ast, pto
        sd = mpd.service_descriptions[0] if mpd.service_descriptions else None
        target_latency = (sd.latency_target / 1000.0) if sd and sd.latency_target else 3.0
        min_buffer = min(mpd.min_buffer_time or 0.5, target_latency / 2)
        # dash.js as the player kit sets it up: liveCatchup playbackRate -0.2 .. +0.25
        self.pb.catch_up = DashJsCatchUp(max_delta=0.25, min_delta=-0.2)
        self.pb.target_latency_s = target_latency

        def server_now() -> float:
            return time.time() + offset

        live_media = server_now() - ast - target_latency  # media time (since AST) of the sync point
        k = max(0, int(live_media // seg_d))
        inits: dict[str, bytes] = {}
        while self.remaining() > 0:
            want = self.abr.choose(cur, self.pb.buffered_s)
            if want != cur:
                cur = want
                tpl = tpls[cur]
            rep = reps[cur]
            kbps = rep.bandwidth // 1000
            if rep.id not in inits:
                init_uri = (tpl.initialization or "").replace("$RepresentationID$", rep.id)
                inits[rep.id] = (await self.get(self.media_conn, self._resolve(init_uri), MEDIA_TIMEOUT)).body
            number = tpl.start_number + k
            available = ast + (k + 1) * seg_d - ato
            wait = available - server_now()
            if wait > 0:
                await asyncio.sleep(min(wait, max(0.0, self.remaining())))
            uri = tpl.media.replace("$RepresentationID$", rep.id).replace("$Number$", str(number))
            reader = FragmentedMP4Reader()
            reader.feed(inits[rep.id])
            burst = [0.0, 0.0, 0]  # start, last, bytes

            def on_data(data: bytes, t: float) -> None:
                if burst[2] and t - burst[1] > BURST_GAP_S:
                    self.abr.sample(int(burst[2]), burst[1] - burst[0])
                    burst[0], burst[2] = t, 0
                if not burst[2]:
                    burst[0] = t
                burst[1] = t
                burst[2] += len(data)
                for ev in reader.feed(data):
                    if isinstance(ev, Fragment) and ev.samples:
                        first = ev.samples[0].decode_time / ts
                        dur = sum(s.duration for s in ev.samples) / ts
                        if not self.note_media(first, dur, max(s.duration for s in ev.samples) / ts):
                            continue  # re-sent after a failover: already buffered
                        capture = prt_wall + (first - prt_media)
                        self.pb.append(t, Span(capture - offset, dur, kbps))
                        self.note_bitrate(kbps)
                        if not self.pb.started:
                            # the sync point is target_latency behind the (server) now
                            keep = (capture + dur) - (server_now() - target_latency)
                            if keep >= min_buffer:
                                self.pb.start(t, min(keep, self.pb.buffered_s))
                        self.sample_latency()

            resp = await self.get(self.media_conn, self._resolve(uri), MEDIA_TIMEOUT, on_data=on_data)
            if burst[2]:
                self.abr.sample(int(burst[2]), burst[1] - burst[0])
            del resp
            if not self.pb.started and self.pb.buffered_s > 0 and server_now() - ast > (k + 1) * seg_d + target_latency:
                self.pb.start(time.monotonic(), self.pb.buffered_s)  # fell behind during startup: play what we have
            k += 1
            # a player that fell more than a segment past its target catches up (dash.js seeks)
            behind = server_now() - ast - k * seg_d
            if behind > 3 * seg_d + target_latency:
                k = int((server_now() - ast - target_latency) // seg_d)


