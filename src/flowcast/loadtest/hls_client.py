"""LL-HLS and plain HLS virtual viewers (draft-pantos-hls-rfc8216bis, 6.2.5, 6.3).

LL-HLS, as hls.js in lowLatencyMode does it:
- load the multivariant playlist; pick a variant with the ABR rule (default estimate first);
- load the media playlist once in full, then every reload is a blocking reload for the next
  part (`_HLS_msn`/`_HLS_part`, 6.2.5.2) asking for a delta update (`_HLS_skip=YES`, 6.2.5.1);
- while a blocking reload is pending, fetch the EXT-X-PRELOAD-HINT part (the origin holds the
  request until the part exists, 6.2.6), so the part arrives with the playlist that lists it;
- start at the independent part PART-HOLD-BACK behind the edge, seek to the live sync point;
- switch variants at independent parts (segment starts) when the estimate says so.
Plain HLS: whole segments only, start HOLD-BACK (3 target durations) behind the end,
reload the playlist every target duration (half when it did not change, 6.3.4).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urljoin, urlsplit

from flowcast.loadtest.abr import Abr
from flowcast.loadtest.http import HttpError
from flowcast.loadtest.playback import HlsJsCatchUp, Span
from flowcast.loadtest.viewer import FatalViewerError, Origin, ViewerBase, origin_of
from flowcast.media.boxes import BoxError
from flowcast.media.fmp4 import FragmentedMP4Reader, chunk_timing
from flowcast.media.types import InitSegment
from flowcast.package.m3u8 import (
    ParsedMediaPlaylist,
    ParsedMultivariant,
    ParsedVariant,
    PlaylistError,
    parse_attributes,
    parse_media_playlist,
    parse_multivariant,
)
from flowcast.package.steering import SteeringError, parse_steering_manifest

MEDIA_TIMEOUT = 10.0

MAX_LIVE_SYNC_RATE = 1.25  # hls.js maxLiveSyncPlaybackRate in the player kit (web/player.js)
PATHWAY_PENALTY_S = 300.0  # hls.js content-steering: a failed pathway is avoided this long


@dataclass(frozen=True, slots=True)
class MediaRef:
    """A part (idx >= 0) or a whole segment (idx == -1 in plain HLS) with its capture time."""

    msn: int
    idx: int
    uri: str
    duration: float
    capture_ts: float
    independent: bool
    kid: str | None = None  # ClearKey KEYID in force (hex), None when clear

    @property
    def key(self) -> tuple[int, int]:
        return (self.msn, self.idx)


def _epoch(dt: datetime | None) -> float | None:
    return dt.timestamp() if dt is not None else None


CLEARKEY = "org.w3.clearkey"


def _kid(keys) -> str | None:  # type: ignore[no-untyped-def]
    """The ClearKey KID in force (EXT-X-KEY KEYFORMAT="org.w3.clearkey" KEYID=0x...), as hex."""
    for k in keys:
        if k.keyformat == CLEARKEY and k.method != "NONE" and k.keyid:
            return k.keyid.lower().removeprefix("0x")
    return None


def parts_of(pl: ParsedMediaPlaylist) -> list[MediaRef]:
    """The parts of `pl` in order, each with its capture time (PDT of its segment plus the
    parts before it; a segment without PDT follows the previous one) and its key."""
    out: list[MediaRef] = []
    t: float | None = None
    for seg in pl.segments:
        t = _epoch(seg.program_date_time) or t
        pt = t
        kid = _kid(seg.keys)
        for i, p in enumerate(seg.parts):
            if pt is not None:
                out.append(MediaRef(seg.msn, i, p.uri, p.duration, pt, p.independent, kid))
                pt += p.duration
        if t is not None:
            t += seg.duration
    msn = pl.segments[-1].msn + 1 if pl.segments else pl.first_msn
    t = _epoch(pl.pending_program_date_time) or t
    kid = _kid(pl.pending_keys)
    for i, p in enumerate(pl.pending_parts):
        if t is not None:
            out.append(MediaRef(msn, i, p.uri, p.duration, t, p.independent, kid))
            t += p.duration
    return out


def segments_of(pl: ParsedMediaPlaylist) -> list[MediaRef]:
    out: list[MediaRef] = []
    t: float | None = None
    for seg in pl.segments:
        t = _epoch(seg.program_date_time) or t
        if t is not None:
            out.append(MediaRef(seg.msn, -1, seg.uri, seg.duration, t, True, _kid(seg.keys)))
            t += seg.duration
    return out


def live_start(refs: list[MediaRef], hold_back: float) -> int:
    """Index of the independent ref at or before `hold_back` seconds from the end."""
    if not refs:
        return 0
    edge = refs[-1].capture_ts + refs[-1].duration
    best = 0
    for i, r in enumerate(refs):
        if r.capture_ts <= edge - hold_back + 1e-6 and r.independent:
            best = i
    return best


class HlsViewer(ViewerBase):
    protocol = "ll-hls"
    low_latency = True

    _steering: tuple[str, int] | None = None  # (steering manifest path, TTL s) once loaded
    _steer_at = 0.0
    _timescale: int | None = None  # of the variant's track, from its init segment

    async def play(self) -> None:
        base = self.path
        master = await self.get(self.playlist_conn, base, MEDIA_TIMEOUT)
        try:
            mv = parse_multivariant(master.body)
        except PlaylistError as exc:
            raise FatalViewerError("bad_playlist", str(exc)) from exc
        variants = sorted(await self._pathway_variants(base, mv), key=lambda v: v.bandwidth)
        if not variants:
            raise FatalViewerError("bad_playlist", "no variants")
        self.variants = variants
        self.abr = Abr(tuple(v.bandwidth for v in variants))
        self.cur = self.abr.choose(0, 0.0)
        self.media_path = self._resolve(base, variants[self.cur].uri)
        pl = await self._load(self.media_path, "")
        await self._init(pl)
        if self.low_latency:
            await self._play_ll(pl)
        else:
            await self._play_plain(pl)

    async def _pathway_variants(self, base: str, mv: ParsedMultivariant) -> list[ParsedVariant]:
        """Content Steering (redundant origins): play the variants of the pathway the steering
        manifest ranks first (EXT-X-CONTENT-STEERING's PATHWAY-ID until it is loaded), and
        fail over along its PATHWAY-PRIORITY, as hls.js does."""
        ids: list[str] = []
        for v in mv.variants:
            pid = v.attributes.get("PATHWAY-ID", ".")
            if pid not in ids:
                ids.append(pid)
        if len(ids) < 2:
            return list(mv.variants)
        tag = next((t.split(":", 1)[1] for t in mv.unknown_tags if t.startswith("#EXT-X-CONTENT-STEERING:")), None)
        steer = parse_attributes(tag) if tag is not None else {}
        prio = list(ids)
        if steer.get("PATHWAY-ID") in ids:
            prio.remove(steer["PATHWAY-ID"])
            prio.insert(0, steer["PATHWAY-ID"])
        server = steer.get("SERVER-URI")
        if server:
            u = urlsplit(urljoin(f"http://{self.host}:{self.port}{base}", server))
            if (u.hostname, u.port or 80) in (("127.0.0.1", self.port), ("localhost", self.port)):
                path = u.path + (f"?{u.query}&" if u.query else "?") + f"_HLS_pathway={prio[0]}"
                try:
                    doc = parse_steering_manifest((await self.get(self.playlist_conn, path, MEDIA_TIMEOUT)).body)
                    prio = [p for p in doc.pathway_priority if p in ids] + [p for p in prio if p not in doc.pathway_priority]
                    # Reloaded every TTL from then on (Content Steering 1.2, 4.3), as hls.js does.
                    self._steering = (u.path, doc.ttl)
                    self._steer_at = time.monotonic() + doc.ttl
                except (SteeringError, FatalViewerError):
                    pass  # hls.js keeps the playlist's order when the steering server fails
        by_id = {pid: sorted((v for v in mv.variants if v.attributes.get("PATHWAY-ID", ".") == pid), key=lambda v: v.bandwidth) for pid in ids}
        # Failover keeps the request paths: every pathway must serve the same paths.
        paths = {pid: [self._resolve(base, v.uri) for v in by_id[pid]] for pid in ids}
        if any(paths[p] != paths[prio[0]] for p in prio):
            prio = prio[:1]
        origins: list[Origin] = []
        for pid in prio:
            origins.append(origin_of(pid, urljoin(f"http://{self.host}:{self.port}{base}", by_id[pid][0].uri)))
        await self.use_origins(origins)
        return by_id[prio[0]]

    async def _reload_steering(self) -> None:
        """Every TTL: ask the steering server (on the current pathway's origin) for the
        priority, and move to the pathway it ranks first when that is not the current one.
        A failed reload changes nothing (the next one is a TTL later)."""
        if self._steering is None or time.monotonic() < self._steer_at:
            return
        path, ttl = self._steering
        current = self.origins[self.origin_idx].id
        self._steer_at = time.monotonic() + ttl
        try:
            resp = await self.playlist_conn.get(f"{path}?_HLS_pathway={current}", timeout=MEDIA_TIMEOUT)
            if resp.status != 200:
                return
            doc = parse_steering_manifest(resp.body)
        except (HttpError, OSError, asyncio.TimeoutError, SteeringError):
            return
        self._steer_at = time.monotonic() + doc.ttl
        ids = [o.id for o in self.origins]
        # A pathway that failed is not steered back to for 5 minutes (hls.js's penalty).
        now = time.time()
        penalized = {f["from"] for f in self.result.failovers if f["error"] != "steering" and now - f["at"] < PATHWAY_PENALTY_S}
        first = next((p for p in doc.pathway_priority if p in ids and p not in penalized), None)
        if first is not None and first != current:
            self.result.failovers.append(
                {"at": round(time.time(), 3), "from": current, "to": first, "error": "steering", "resumed_at": None}
            )
            await self._switch_to(ids.index(first))

    def _resolve(self, base: str, uri: str) -> str:
        u = urlsplit(urljoin(base, uri))
        return u.path + (f"?{u.query}" if u.query else "")

    async def _load(self, path: str, query: str, timeout: float = MEDIA_TIMEOUT) -> ParsedMediaPlaylist:
        sep = "&" if "?" in path else "?"
        resp = await self.get(self.playlist_conn, path + (sep + query if query else ""), timeout)
        try:
            pl = parse_media_playlist(resp.body)
        except PlaylistError as exc:
            raise FatalViewerError("bad_playlist", str(exc)) from exc
        # hls.js measures latency from this playlist's edge, dated by the response's first byte
        refs = parts_of(pl) if self.low_latency else segments_of(pl)
        if refs:
            self.pb.edge_age_s = resp.first_byte + self.wall_offset - (refs[-1].capture_ts + refs[-1].duration)
        return pl

    async def _init(self, pl: ParsedMediaPlaylist) -> None:
        if pl.map_uri:
            resp = await self.get(self.media_conn, self._resolve(self.media_path, pl.map_uri), MEDIA_TIMEOUT)
            try:
                init = next((e for e in FragmentedMP4Reader().feed(resp.body) if isinstance(e, InitSegment)), None)
            except BoxError:
                init = None
            self._timescale = init.tracks[0].timescale if init is not None and init.tracks else None

    def _bitrate_kbps(self) -> int:
        return self.variants[self.cur].bandwidth // 1000

    async def _fetch(self, ref: MediaRef, hinted: bool = False) -> None:
        resp = await self.get(self.media_conn, self._resolve(self.media_path, ref.uri), MEDIA_TIMEOUT)
        await self._add(ref, resp, hinted)

    async def _add(self, ref: MediaRef, resp, hinted: bool) -> None:  # type: ignore[no-untyped-def]
        if ref.kid is not None:
            await self.ensure_license(ref.kid)  # undecryptable until then: the buffer drains
        # a hinted part waits at the origin until it exists: measure from its first byte
        t0 = resp.first_byte if hinted else resp.started
        self.abr.sample(resp.nbytes, resp.finished - t0)
        self._note_chunks(resp.body)
        self.pb.append(time.monotonic(), Span(ref.capture_ts, ref.duration, self._bitrate_kbps()))
        self.note_bitrate(self._bitrate_kbps())
        self.sample_latency()

    def _note_chunks(self, body: bytes) -> None:
        """Media continuity (ViewerBase.note_media) from the part's or segment's own tfdt,
        read from its moof boxes only (media.fmp4.chunk_timing: ~10 us a part, no copy)."""
        ts = self._timescale
        if not ts:
            return
        try:
            t = chunk_timing(body)
        except BoxError:
            return
        if t is not None and t.duration:
            self.note_media(t.decode_time / ts, t.duration / ts, t.max_sample_duration / ts)

    async def _maybe_switch(self, ref: MediaRef) -> ParsedMediaPlaylist | None:
        """At an independent part, switch variant if the ABR rule says so; returns the new
        variant's playlist (blocked until it has this part) or None."""
        if not ref.independent:
            return None
        want = self.abr.choose(self.cur, self.pb.buffered_s)
        if want == self.cur:
            return None
        self.cur = want
        self.media_path = self._resolve(self.path, self.variants[want].uri)
        q = f"_HLS_msn={ref.msn}&_HLS_part={max(ref.idx, 0)}" if self.low_latency else ""
        pl = await self._load(self.media_path, q, timeout=MEDIA_TIMEOUT)
        await self._init(pl)
        return pl

    async def _play_ll(self, pl: ParsedMediaPlaylist) -> None:
        sc = pl.server_control
        target = float(pl.target_duration or 2)
        hold_back = (sc.part_hold_back if sc and sc.part_hold_back else 3 * (pl.part_target or 1.0))
        if not (sc and sc.can_block_reload and pl.part_target):
            raise FatalViewerError("not_low_latency", "playlist has no parts or no blocking reload")
        skip = "&_HLS_skip=YES" if sc.can_skip_until else ""
        refs = parts_of(pl)
        i0 = live_start(refs, hold_back)
        self._catch_up(hold_back, target)
        # the live sync point: PART-HOLD-BACK behind the edge seen now, moving in real time
        edge = refs[-1].capture_ts + refs[-1].duration if refs else time.time()
        sync_at = (edge - hold_back, time.monotonic())
        last: tuple[int, int] = (refs[i0].msn, refs[i0].idx - 1) if refs else (pl.first_msn, -1)
        while self.remaining() > 0:
            await self._reload_steering()
            todo = [r for r in parts_of(pl) if r.key > last]
            switched = False
            for ref in todo:
                new = await self._maybe_switch(ref)
                if new is not None:
                    pl, last, switched = new, (ref.msn, ref.idx - 1), True
                    break
                await self._fetch(ref)
                last = ref.key
                self._try_start(sync_at, pl.part_target)
            if switched:
                continue
            if not self.pb.started and self.pb.buffered_s > 0:
                # caught up with the edge: seek to PART-HOLD-BACK behind it and play
                self.pb.start(time.monotonic(), min(hold_back, self.pb.buffered_s))
            # at the edge: blocking reload for the part after `last`, with the hinted part in parallel
            refs_now = parts_of(pl)
            complete = {s.msn: len(s.parts) for s in pl.segments}
            msn, idx = last
            nxt = (msn + 1, 0) if complete.get(msn) == idx + 1 else (msn, idx + 1)
            hint = next((h.uri for h in pl.preload_hints if h.type == "PART"), None)
            reload = asyncio.ensure_future(
                self._load(self.media_path, f"_HLS_msn={nxt[0]}&_HLS_part={nxt[1]}{skip}", timeout=3 * target + 2)
            )
            hinted = None
            if hint is not None and not any(r.uri == hint for r in refs_now):
                hinted = asyncio.ensure_future(
                    self.get(self.media_conn, self._resolve(self.media_path, hint), MEDIA_TIMEOUT)
                )
            try:
                pl = await reload
            except BaseException:
                if hinted is not None:
                    hinted.cancel()
                raise
            if hinted is not None and not any(r.uri == hint for r in parts_of(pl)) and not any(
                h.uri == hint for h in pl.preload_hints
            ):
                # The new playlist neither lists the hinted part nor still hints it (an encoder
                # restart closed that segment short): abandon it, as hls.js does, instead of
                # retrying a part that will never exist while the stream goes on without us.
                hinted.cancel()
                try:
                    await hinted  # let it close its connection before media_conn is used again
                except asyncio.CancelledError:
                    task = asyncio.current_task()
                    if task is not None and task.cancelling():
                        raise  # this viewer itself is being stopped
                except (FatalViewerError, asyncio.TimeoutError):
                    pass
                hinted = None
            if hinted is not None:
                try:
                    resp = await hinted
                except FatalViewerError:
                    resp = None
                ref = next((r for r in parts_of(pl) if r.uri == hint and r.key > last), None)
                if resp is not None and ref is not None and not (ref.independent and self.abr.choose(self.cur, self.pb.buffered_s) != self.cur):
                    await self._add(ref, resp, hinted=True)
                    last = ref.key
                    self._try_start(sync_at, pl.part_target)

    def _catch_up(self, hold_back: float, target: float) -> None:
        """hls.js as the player kit sets it up: back to the hold-back at up to 1.25x, within
        a target duration of it (further is DVR playback)."""
        self.pb.catch_up = HlsJsCatchUp(max_rate=MAX_LIVE_SYNC_RATE, live_range_s=hold_back + target)
        self.pb.target_latency_s = hold_back

    def _try_start(self, sync_at: tuple[float, float], part_target: float) -> None:
        """Start once a part target of media lies past the live sync point (hls.js plays as soon
        as data at the start position is buffered), seeking the playhead to that point."""
        if self.pb.started:
            return
        end = self.pb.buffered_end_capture
        if end is None:
            return
        now = time.monotonic()
        sync = sync_at[0] + (now - sync_at[1])
        if end - sync >= part_target:
            self.pb.start(now, min(end - sync, self.pb.buffered_s))

    async def _play_plain(self, pl: ParsedMediaPlaylist) -> None:
        target = float(pl.target_duration or 2)
        sc = pl.server_control
        hold_back = sc.hold_back if sc and sc.hold_back else 3 * target
        refs = segments_of(pl)
        i0 = live_start(refs, hold_back)
        self._catch_up(hold_back, target)
        last = (refs[i0].msn - 1, -1) if refs else (pl.first_msn - 1, -1)
        while self.remaining() > 0:
            await self._reload_steering()
            todo = [r for r in segments_of(pl) if r.key > last]
            changed = bool(todo)
            switched = False
            for ref in todo:
                new = await self._maybe_switch(ref)
                if new is not None:
                    pl, switched = new, True
                    break
                await self._fetch(ref)
                last = ref.key
                if not self.pb.started:
                    self.pb.start(time.monotonic(), self.pb.buffered_s)
            if switched:
                continue  # fetch from the new variant's playlist at once
            # 6.3.4: reload after a target duration, half of one when nothing changed
            await asyncio.sleep(min(target if changed else target / 2, max(0.0, self.remaining())))
            pl = await self._load(self.media_path, "")


class PlainHlsViewer(HlsViewer):
    protocol = "hls"
    low_latency = False
