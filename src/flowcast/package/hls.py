"""HLS and Low-Latency HLS playlists: frozen models in, playlist bytes out.

Rendering is a pure function of the model (globocom/m3u8 style): the origin renders a
playlist once per publish and serves the bytes to every waiting request. Clause numbers
refer to draft-pantos-hls-rfc8216bis (protocol version 13).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from datetime import datetime, timezone

from flowcast.media.types import TrackInfo
from flowcast.package.model import Part, Segment
from flowcast.package.steering import Pathway

# EXT-X-SKIP (delta updates) needs protocol version 9 (4.4.5.2); the LL tags themselves
# need no more, so every low-latency playlist says 9 and a delta update never changes it.
LL_VERSION = 9
# fMP4 segments with EXT-X-MAP outside I-frame playlists need version 6; 7 is what players
# expect for CMAF broadcast playlists.
BROADCAST_VERSION = 7

MULTIVARIANT_URI = "master.m3u8"
MEDIA_PLAYLIST_NAME = "index.m3u8"


@dataclass(frozen=True, slots=True)
class RenditionReport:
    """EXT-X-RENDITION-REPORT (4.4.5.4): where another rendition's live edge is."""

    uri: str  # relative to the reporting playlist: ../<rendition>/index.m3u8
    last_msn: int
    last_part: int | None = None  # REQUIRED when that rendition has parts


def rendition_report(rendition: str, last_msn: int, last_part: int | None = None) -> RenditionReport:
    """The report for `rendition` as seen from a sibling rendition's media playlist."""
    return RenditionReport(f"../{rendition}/{MEDIA_PLAYLIST_NAME}", last_msn, last_part)


def format_pdt(epoch: float) -> str:
    """EXT-X-PROGRAM-DATE-TIME value: ISO 8601, UTC, millisecond precision, 'Z'."""
    dt = datetime.fromtimestamp(epoch, tz=timezone.utc)
    return dt.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@functools.lru_cache(maxsize=16384)
def _plain_segment(msn: int, duration: float, program_date_time: float, gap: bool) -> str:
    """PDT, (GAP), EXTINF and URI of a segment listed without parts, rendered once."""
    gap_line = "#EXT-X-GAP\n" if gap else ""
    return (
        f"#EXT-X-PROGRAM-DATE-TIME:{format_pdt(program_date_time)}\n"
        f"{gap_line}#EXTINF:{_num(duration)},\n{msn}.m4s"
    )


def _num(value: float, places: int = 5) -> str:
    """A decimal-floating-point attribute: enough places for 90 kHz / 48 kHz timing."""
    text = f"{value:.{places}f}".rstrip("0")
    return text + "0" if text.endswith(".") else text


def target_duration_for(segment_duration: float) -> int:
    """EXT-X-TARGETDURATION for a nominal segment duration (4.4.3.1).

    Choose it once from the configured duration and keep it: the tag MUST NOT change.
    """
    return max(1, math.ceil(segment_duration - 1e-9))


@dataclass(frozen=True, slots=True)
class HlsKey:
    """The EXT-X-KEY tags in force from segment `msn` on (4.4.4.4), until the next HlsKey.

    `tags`: attribute lists, one per KEYFORMAT (e.g. ClearKey and Widevine side by side),
    rendered by `protect.signalling`; this module only places them.
    """

    msn: int
    tags: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class HlsMap:
    """The EXT-X-MAP in force from segment `msn` on (4.4.4.5), until the next HlsMap.

    Key rotation gives each key period its own init segment (its tenc names the period's
    KID), so the map changes with the key.
    """

    msn: int
    uri: str


def _in_force(changes: tuple, msn: int, first: bool):  # type: ignore[type-arg]
    """The change (HlsKey/HlsMap) to write before segment `msn`: the one in force for the
    first segment written (a delta update or a sliding window may have dropped the tag that
    introduced it), else only one that starts exactly at `msn`."""
    current = None
    for c in changes:
        if c.msn > msn:
            break
        current = c
    if current is None or (not first and current.msn != msn):
        return None
    return current


@dataclass(frozen=True, slots=True)
class MediaPlaylist:
    """The state of one rendition's media playlist at one publish.

    `segments` are the complete segments in the DVR window, oldest first. `pending_parts`
    are the parts already published of the segment in production; `next_part` is the
    (msn, index) of the part being produced, announced as EXT-X-PRELOAD-HINT.
    `part_target` None renders a plain (broadcast) HLS playlist.
    """

    target_duration: int
    segments: tuple[Segment, ...]
    part_target: float | None = None
    pending_parts: tuple[Part, ...] = ()
    next_part: tuple[int, int] | None = None
    media_sequence: int | None = None  # None: the first segment's (or pending part's) msn
    discontinuity_sequence: int = 0
    rendition_reports: tuple[RenditionReport, ...] = ()
    ended: bool = False
    map_uri: str = "init.mp4"
    # The segment in production: its wall clock (None: follows the last segment) and
    # whether it starts after an encoder restart.
    pending_program_date_time: float | None = None
    pending_discontinuity: bool = False
    # Encryption: key changes, oldest first (empty: clear media, nothing rendered).
    keys: tuple[HlsKey, ...] = ()
    # Init segment changes, oldest first (empty: `map_uri` for every segment).
    maps: tuple[HlsMap, ...] = ()

    def __post_init__(self) -> None:
        if self.target_duration < 1:
            raise ValueError("target_duration must be a positive integer")
        if self.part_target is not None and not 0 < self.part_target <= self.target_duration:
            raise ValueError("part_target must be in (0, target_duration]")
        if self.part_target is None and (self.pending_parts or self.next_part):
            raise ValueError("parts need a part_target")
        msns = [s.msn for s in self.segments] + [p.msn for p in self.pending_parts[:1]]
        if any(b != a + 1 for a, b in zip(msns, msns[1:])):
            raise ValueError("segments must have consecutive media sequence numbers")
        if self.pending_parts and len({p.msn for p in self.pending_parts}) != 1:
            raise ValueError("pending_parts must belong to one segment")
        if any(b.msn <= a.msn for a, b in zip(self.keys, self.keys[1:])):
            raise ValueError("keys must be in increasing msn order")
        if any(b.msn <= a.msn for a, b in zip(self.maps, self.maps[1:])):
            raise ValueError("maps must be in increasing msn order")

    def key_tags_before(self, msn: int, first: bool) -> tuple[str, ...]:
        """EXT-X-KEY attribute lists to write before segment `msn`.

        The first segment written gets the keys in force (a delta update or a sliding
        window may have dropped the tag that introduced them); later ones only a change.
        """
        current = _in_force(self.keys, msn, first)
        return () if current is None else current.tags

    def map_before(self, msn: int, first: bool) -> str | None:
        """The EXT-X-MAP URI to write before segment `msn` (same rule as the keys)."""
        if not self.maps:
            return self.map_uri if first else None
        current = _in_force(self.maps, msn, first)
        return None if current is None else current.uri

    def _change_lines(self, msn: int, first: bool) -> list[str]:
        # KEY before MAP: with SAMPLE-AES the init segment itself is clear (4.4.4.5), and a
        # player that loads the key as it meets the new map has it before the first sample.
        out = [f"#EXT-X-KEY:{t}" for t in self.key_tags_before(msn, first)]
        uri = self.map_before(msn, first) if self.maps else None  # else written once at the top
        if uri is not None:
            out.append(f'#EXT-X-MAP:URI="{uri}"')
        return out

    @property
    def low_latency(self) -> bool:
        return self.part_target is not None

    @property
    def first_msn(self) -> int:
        if self.media_sequence is not None:
            return self.media_sequence
        if self.segments:
            return self.segments[0].msn
        if self.pending_parts:
            return self.pending_parts[0].msn
        if self.next_part is not None:
            return self.next_part[0]
        return 0

    @property
    def hold_back(self) -> float:
        """HOLD-BACK: the minimum the spec allows, 3 x Target Duration (4.4.3.8)."""
        return 3.0 * self.target_duration

    @property
    def part_hold_back(self) -> float | None:
        """PART-HOLD-BACK: 3 x PART-TARGET (MUST >= 2x, SHOULD >= 3x; 4.4.3.8)."""
        return None if self.part_target is None else round(3.0 * self.part_target, 5)

    @property
    def can_skip_until(self) -> float | None:
        """The Skip Boundary: 6 x Target Duration, the minimum allowed (4.4.3.8).

        Only low-latency playlists offer delta updates; broadcast clients reload rarely.
        """
        return 6.0 * self.target_duration if self.low_latency else None

    @property
    def last_part(self) -> tuple[int, int | None] | None:
        """(LAST-MSN, LAST-PART) as a sibling's EXT-X-RENDITION-REPORT states them."""
        if self.pending_parts:
            p = self.pending_parts[-1]
            return p.msn, p.index
        if self.segments:
            s = self.segments[-1]
            return s.msn, (s.parts[-1].index if s.parts and self.low_latency else None)
        return None

    def report_as(self, rendition: str) -> RenditionReport | None:
        """This playlist's edge as a RenditionReport for the other renditions' playlists."""
        edge = self.last_part
        return None if edge is None else rendition_report(rendition, edge[0], edge[1])

    @property
    def end_time(self) -> float:
        """End of the playlist on the rendition timeline (last published media)."""
        if self.pending_parts:
            p = self.pending_parts[-1]
            return p.start + p.duration
        if self.segments:
            s = self.segments[-1]
            return s.start + s.duration
        return 0.0

    def skipped_count(self) -> int:
        """Segments a delta update replaces: those wholly older than the Skip Boundary."""
        boundary = self.can_skip_until
        if boundary is None or self.ended:
            return 0
        end = self.end_time
        n = 0
        for seg in self.segments:
            if end - (seg.start + seg.duration) >= boundary:
                n += 1
            else:
                break
        return n


def next_part_hint(
    pending_parts: tuple[Part, ...] | list[Part],
    *,
    next_msn: int,
    segment_duration: float,
    tolerance: float = 1e-3,
) -> tuple[int, int]:
    """The (msn, index) for EXT-X-PRELOAD-HINT: the part that will be published next.

    The hinted URI MUST be the one later added (6.2.6), and the origin holds requests for
    it until it exists. A segment whose parts already fill `segment_duration` will be
    closed by the next sync sample, so its successor's part 0 comes next, not another
    part of it (with GOPs aligned to segments, as our encoder ladder sets them).
    `next_msn`: the msn of the next segment when nothing is pending.
    """
    if not pending_parts:
        return next_msn, 0
    last = pending_parts[-1]
    filled = sum(p.duration for p in pending_parts)
    if filled >= segment_duration - tolerance:
        return last.msn + 1, 0
    return last.msn, last.index + 1


def _part_line(part: Part) -> str:
    attrs = f'DURATION={_num(part.duration)},URI="{part.msn}.{part.index}.m4s"'
    if part.independent:
        attrs += ",INDEPENDENT=YES"
    return f"#EXT-X-PART:{attrs}"


def _starting_lines(pl: MediaPlaylist, msn: int) -> list[str]:
    """KEY/MAP lines of changes that start exactly at `msn` (nothing when none does)."""
    out = [f"#EXT-X-KEY:{t}" for k in pl.keys if k.msn == msn for t in k.tags]
    out += [f'#EXT-X-MAP:URI="{m.uri}"' for m in pl.maps if m.msn == msn]
    return out


def render_media_playlist(pl: MediaPlaylist, *, skip: bool = False) -> bytes:
    """Render `pl`; `skip=True` gives the delta update (`_HLS_skip=YES|v2`, 6.2.5.1).

    An ended playlist drops pending parts and the preload hint (no hint after ENDLIST).

    `skip` is ignored when the playlist offers no CAN-SKIP-UNTIL or has ended, as the
    spec requires of the server.
    """
    ll = pl.low_latency
    out: list[str] = ["#EXTM3U", f"#EXT-X-VERSION:{LL_VERSION if ll else BROADCAST_VERSION}"]
    out.append(f"#EXT-X-TARGETDURATION:{pl.target_duration}")
    control = []
    if ll:
        control.append("CAN-BLOCK-RELOAD=YES")
        control.append(f"CAN-SKIP-UNTIL={_num(pl.can_skip_until or 0)}")
    control.append(f"HOLD-BACK={_num(pl.hold_back)}")
    if ll:
        control.append(f"PART-HOLD-BACK={_num(pl.part_hold_back or 0)}")
    out.append("#EXT-X-SERVER-CONTROL:" + ",".join(control))
    if ll:
        out.append(f"#EXT-X-PART-INF:PART-TARGET={_num(pl.part_target or 0)}")
    out.append(f"#EXT-X-MEDIA-SEQUENCE:{pl.first_msn}")
    out.append(f"#EXT-X-DISCONTINUITY-SEQUENCE:{pl.discontinuity_sequence}")
    skipped = pl.skipped_count() if skip else 0
    # EXT-X-MAP applies to the segments after it, so it follows EXT-X-SKIP: a delta
    # update keeps every tag that is not a skipped segment's (6.2.5.1).
    if skipped:
        out.append(f"#EXT-X-SKIP:SKIPPED-SEGMENTS={skipped}")
    if not pl.maps:
        out.append(f'#EXT-X-MAP:URI="{pl.map_uri}"')

    # Parts are kept for segments ending within 3 Target Durations of the end (6.2.2).
    end = pl.end_time
    keep_parts_after = end - 3.0 * pl.target_duration
    first = True
    for seg in pl.segments[skipped:]:
        # DISCONTINUITY, KEY, PDT (and MAP) come before the segment's first EXT-X-PART (4.4.4.9).
        if seg.discontinuity:
            out.append("#EXT-X-DISCONTINUITY")
        if pl.keys:
            out.extend(f"#EXT-X-KEY:{t}" for t in pl.key_tags_before(seg.msn, first))
        if pl.maps:
            uri = pl.map_before(seg.msn, first)
            if uri is not None:
                out.append(f'#EXT-X-MAP:URI="{uri}"')
        first = False
        if ll and seg.start + seg.duration > keep_parts_after + 1e-9:
            out.append(f"#EXT-X-PROGRAM-DATE-TIME:{format_pdt(seg.program_date_time)}")
            out.extend(_part_line(p) for p in seg.parts)
            if seg.gap:
                out.append("#EXT-X-GAP")
            out.append(f"#EXTINF:{_num(seg.duration)},")
            out.append(f"{seg.msn}.m4s")
        else:
            # Segments without parts render the same way every publish: keep their lines.
            out.append(_plain_segment(seg.msn, seg.duration, seg.program_date_time, seg.gap))

    if ll and not pl.ended and pl.pending_parts:
        # The segment in production: its tags go before its first part (4.4.4.9); with no
        # part yet there is nothing for them to precede, so only the hint is written.
        if pl.pending_discontinuity:
            out.append("#EXT-X-DISCONTINUITY")
        if pl.keys:
            out.extend(f"#EXT-X-KEY:{t}" for t in pl.key_tags_before(pl.pending_parts[0].msn, first))
        if pl.maps:
            uri = pl.map_before(pl.pending_parts[0].msn, first)
            if uri is not None:
                out.append(f'#EXT-X-MAP:URI="{uri}"')
        first = False
        pdt = pl.pending_program_date_time
        if pdt is None and pl.segments and not pl.pending_discontinuity:
            last = pl.segments[-1]
            pdt = last.program_date_time + last.duration
        if pdt is not None:
            out.append(f"#EXT-X-PROGRAM-DATE-TIME:{format_pdt(pdt)}")
        out.extend(_part_line(p) for p in pl.pending_parts)
    if ll and not pl.ended and pl.next_part is not None:
        msn, index = pl.next_part
        if index == 0 and not pl.pending_parts and (pl.keys or pl.maps):
            # The hinted part opens a segment: when that segment starts a key period, its
            # EXT-X-KEY and EXT-X-MAP go before the hint, so a player that preloads the part
            # (hls.js attaches a hinted part to the segment being parsed) decrypts it with the
            # new key and parses it with the new init segment; they apply to the next
            # segment, which the next reload lists after them (4.4.4.4, 4.4.4.5).
            out.extend(pl._change_lines(msn, first) if first else _starting_lines(pl, msn))
        # At most one hint per TYPE, never after ENDLIST (4.4.5.3).
        out.append(f'#EXT-X-PRELOAD-HINT:TYPE=PART,URI="{msn}.{index}.m4s"')

    for rr in pl.rendition_reports:
        attrs = f'URI="{rr.uri}",LAST-MSN={rr.last_msn}'
        if rr.last_part is not None:
            attrs += f",LAST-PART={rr.last_part}"
        out.append(f"#EXT-X-RENDITION-REPORT:{attrs}")
    if pl.ended:
        out.append("#EXT-X-ENDLIST")
    return ("\n".join(out) + "\n").encode()


@dataclass(frozen=True, slots=True)
class Variant:
    """One video rendition as an EXT-X-STREAM-INF; audio is added from the audio group."""

    name: str  # rendition name, e.g. "720p"; URI is <name>/index.m3u8
    track: TrackInfo
    bandwidth: int  # peak bits/s of the video rendition alone
    average_bandwidth: int | None = None  # average bits/s of the video rendition alone
    frame_rate: float | None = None

    @property
    def uri(self) -> str:
        return f"{self.name}/{MEDIA_PLAYLIST_NAME}"


@dataclass(frozen=True, slots=True)
class AudioRendition:
    """The audio rendition as EXT-X-MEDIA TYPE=AUDIO (one group, shared by all variants)."""

    track: TrackInfo
    bandwidth: int  # peak bits/s
    average_bandwidth: int | None = None
    name: str = "audio"
    group_id: str = "aud"
    language: str | None = None

    @property
    def uri(self) -> str:
        return f"{self.name}/{MEDIA_PLAYLIST_NAME}"


def render_multivariant(
    variants: tuple[Variant, ...] | list[Variant],
    audio: AudioRendition | None,
    *,
    independent_segments: bool = True,
    session_keys: tuple[str, ...] = (),
    pathways: tuple[Pathway, ...] = (),
    content_steering: str | None = None,
) -> bytes:
    """The multivariant playlist (master.m3u8).

    `pathways` (redundant origins, package.steering): every variant and the audio group
    once per pathway, with the pathway's absolute URIs, PATHWAY-ID, and an audio group of
    its own (a pathway's variants name its renditions only); `content_steering`: the
    EXT-X-CONTENT-STEERING attribute list (4.4.6.6).

    BANDWIDTH is the peak rate of the whole variant (video + audio, 4.4.6.2), AVERAGE-
    BANDWIDTH likewise; CODECS lists every codec the variant needs. `session_keys`:
    EXT-X-SESSION-KEY attribute lists (4.4.6.5) so players can set up DRM before loading
    a media playlist.
    """
    if not variants:
        raise ValueError("at least one variant")
    out = ["#EXTM3U", f"#EXT-X-VERSION:{BROADCAST_VERSION}"]
    if independent_segments:
        out.append("#EXT-X-INDEPENDENT-SEGMENTS")
    out.extend(f"#EXT-X-SESSION-KEY:{t}" for t in session_keys)
    if content_steering is not None:
        out.append(f"#EXT-X-CONTENT-STEERING:{content_steering}")
    for pw in pathways or (None,):
        _render_pathway(out, variants, audio, pw)
    return ("\n".join(out) + "\n").encode()


def _render_pathway(out: list[str], variants, audio: AudioRendition | None, pw: Pathway | None) -> None:  # type: ignore[no-untyped-def]
    base = pw.base if pw is not None else ""
    group = f"{audio.group_id}-{pw.id}" if audio is not None and pw is not None else (audio.group_id if audio else "")
    if audio is not None:
        attrs = [
            "TYPE=AUDIO",
            f'GROUP-ID="{group}"',
            f'NAME="{audio.name}"',
        ]
        if audio.language:
            attrs.append(f'LANGUAGE="{audio.language}"')
        attrs += ["DEFAULT=YES", "AUTOSELECT=YES"]
        if audio.track.channels:
            attrs.append(f'CHANNELS="{audio.track.channels}"')
        attrs.append(f'URI="{base}{audio.uri}"')
        out.append("#EXT-X-MEDIA:" + ",".join(attrs))
    for v in variants:
        peak = v.bandwidth + (audio.bandwidth if audio else 0)
        attrs = [f"BANDWIDTH={peak}"]
        if v.average_bandwidth is not None:
            avg_audio = (audio.average_bandwidth or audio.bandwidth) if audio else 0
            attrs.append(f"AVERAGE-BANDWIDTH={v.average_bandwidth + avg_audio}")
        codecs = v.track.codec + (f",{audio.track.codec}" if audio else "")
        attrs.append(f'CODECS="{codecs}"')
        if v.track.width and v.track.height:
            attrs.append(f"RESOLUTION={v.track.width}x{v.track.height}")
        if v.frame_rate:
            attrs.append(f"FRAME-RATE={v.frame_rate:.3f}")
        if audio is not None:
            attrs.append(f'AUDIO="{group}"')
        # No CEA-608/708 in our encodes: NONE on every variant (4.4.6.2) tells players not
        # to probe segments for captions. Shaka 5.2 otherwise probes a young live stream's
        # in-progress segment, which has only parts and no URI yet, and fails to load.
        attrs.append("CLOSED-CAPTIONS=NONE")
        if pw is not None:
            attrs.append(f'PATHWAY-ID="{pw.id}"')
        out.append("#EXT-X-STREAM-INF:" + ",".join(attrs))
        out.append(base + v.uri)
