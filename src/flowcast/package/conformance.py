"""Conformance checks for LL-HLS playlists and LL-DASH MPDs, from the documents alone.

Each function returns human-readable violations, empty when the document conforms.
A MUST (or REQUIRED) broken is an error; a SHOULD broken is reported with the prefix
"warning: " (`errors()` keeps only the errors). Rules and clause numbers follow
/work/shared/reference/standards.md sections 1 (draft-pantos-hls-rfc8216bis) and 2
(DASH-IF CR-Low-Latency-Live r8). Rules that need time or HTTP (blocking, caching, 503s,
chunked transfer) belong to the origin tests; rules that need two successive playlists
(MEDIA-SEQUENCE never decreasing, preload-hint URI later matching) are in
`check_media_playlist_update`.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Mapping

from flowcast.package.m3u8 import (
    ParsedMediaPlaylist,
    PlaylistError,
    parse_attributes,
    parse_media_playlist,
    parse_multivariant,
)
from flowcast.package.mpd import Manifest, MpdError, parse_mpd

WARNING = "warning: "
# Printed durations are rounded (5 decimals here, 3 in many packagers): tolerate that.
_EPS = 1e-3
_SEGMENT_TAGS_BEFORE_PARTS = (
    "#EXT-X-DISCONTINUITY",
    "#EXT-X-KEY",
    "#EXT-X-MAP",
    "#EXT-X-PROGRAM-DATE-TIME",
)
DASH_UTC_SCHEMES = (
    "urn:mpeg:dash:utc:http-xsdate:2014",
    "urn:mpeg:dash:utc:http-iso:2014",
    "urn:mpeg:dash:utc:http-ntp:2014",
)
DASH_LL_PROFILE = "http://www.dashif.org/guidelines/low-latency-live-v5"


def errors(violations: Iterable[str]) -> list[str]:
    """Only the MUST-level violations."""
    return [v for v in violations if not v.startswith(WARNING)]


def _text(doc: str | bytes) -> str:
    return doc.decode("utf-8", "replace") if isinstance(doc, bytes) else doc


def _order_violations(text: str) -> list[str]:
    """4.4.4.9: DISCONTINUITY, KEY, MAP, PROGRAM-DATE-TIME before the segment's first PART."""
    out = []
    in_parts = False
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        if not line.startswith("#"):
            in_parts = False  # a segment URI closes the segment
            continue
        name = line.partition(":")[0]
        if name == "#EXT-X-PART":
            in_parts = True
        elif in_parts and name in _SEGMENT_TAGS_BEFORE_PARTS:
            out.append(f"[4.4.4.9] {name} after the first EXT-X-PART of its segment")
    return out


def check_media_playlist(
    doc: str | bytes,
    *,
    expected_reports: Iterable[str] | None = None,
) -> list[str]:
    """Check one media playlist. `expected_reports`: the URIs (relative to this playlist)
    of every other rendition, each of which needs an EXT-X-RENDITION-REPORT."""
    text = _text(doc)
    try:
        pl = parse_media_playlist(text)
    except PlaylistError as exc:
        return [f"unparseable media playlist: {exc}"]
    out: list[str] = []
    td = pl.target_duration or 0
    parts = [p for s in pl.segments for p in s.parts] + list(pl.pending_parts)
    sc = pl.server_control

    if pl.media_sequence is None:
        out.append("[4.4.3.2] EXT-X-MEDIA-SEQUENCE missing")
    for s in pl.segments:
        if round(s.duration) > td:
            out.append(f"[4.4.3.1] segment {s.msn}: EXTINF {s.duration} rounds above TARGETDURATION {td}")
    if pl.map_uri is not None and (pl.version or 1) < 6:
        out.append("[4.4.4.5] EXT-X-MAP needs EXT-X-VERSION >= 6")

    # PROGRAM-DATE-TIME on every media playlist (B.1): we require it on the first segment
    # (so a sliding window or a delta update never loses the wall clock) and on every
    # segment after a discontinuity, where it cannot be derived.
    if pl.segments:
        if pl.segments[0].program_date_time is None:
            out.append("[B.1] first segment has no EXT-X-PROGRAM-DATE-TIME")
        for s in pl.segments[1:]:
            if s.discontinuity and s.program_date_time is None:
                out.append(f"[B.1] segment {s.msn} after a discontinuity has no EXT-X-PROGRAM-DATE-TIME")
    elif pl.pending_parts and pl.pending_program_date_time is None:
        # Stream start, before the first segment completes: a Part carries no wall clock,
        # so a server may not know it yet (MediaPlaylist.pending_program_date_time).
        out.append(f"{WARNING}[B.1] no EXT-X-PROGRAM-DATE-TIME")

    # Parts, PART-INF and SERVER-CONTROL (4.4.3.7, 4.4.3.8).
    if parts and pl.part_target is None:
        out.append("[4.4.3.7] EXT-X-PART present but EXT-X-PART-INF:PART-TARGET missing")
    if sc is not None:
        if sc.can_skip_until is not None and sc.can_skip_until < 6 * td - _EPS:
            out.append(f"[4.4.3.8] CAN-SKIP-UNTIL {sc.can_skip_until} < 6 x TARGETDURATION ({6 * td})")
        if sc.hold_back is not None and sc.hold_back < 3 * td - _EPS:
            out.append(f"[4.4.3.8] HOLD-BACK {sc.hold_back} < 3 x TARGETDURATION ({3 * td})")
    if pl.part_target is not None:
        pt = pl.part_target
        phb = sc.part_hold_back if sc is not None else None
        if phb is None:
            out.append("[4.4.3.8] PART-HOLD-BACK is REQUIRED with EXT-X-PART-INF")
        elif phb < 2 * pt - _EPS:
            out.append(f"[4.4.3.8] PART-HOLD-BACK {phb} < 2 x PART-TARGET ({2 * pt:g})")
        elif phb < 3 * pt - _EPS:
            out.append(f"{WARNING}[4.4.3.8] PART-HOLD-BACK {phb} < 3 x PART-TARGET ({3 * pt:g})")
        if sc is None or not sc.can_block_reload:
            out.append("[6.2.5.2] a playlist with parts must offer CAN-BLOCK-RELOAD=YES")
        if pt > td:
            out.append(f"[4.4.3.7] PART-TARGET {pt} exceeds TARGETDURATION {td}")

        # Part durations (4.4.4.9): <= PART-TARGET; >= 85% except independent, gap, the
        # part before a gap part, and the last part of a (complete) segment.
        groups = [(s.msn, list(s.parts), True) for s in pl.segments if s.parts]
        if pl.pending_parts:
            groups.append((pl.last_msn_part[0], list(pl.pending_parts), False))
        for msn, seg_parts, complete in groups:
            for i, p in enumerate(seg_parts):
                if p.duration > pt + _EPS:
                    out.append(f"[4.4.4.9] part {p.uri}: DURATION {p.duration} > PART-TARGET {pt}")
                last = complete and i == len(seg_parts) - 1
                before_gap = i + 1 < len(seg_parts) and seg_parts[i + 1].gap
                if p.independent or p.gap or before_gap or last:
                    continue
                if p.duration < 0.85 * pt - _EPS:
                    out.append(f"[4.4.4.9] part {p.uri}: DURATION {p.duration} < 85% of PART-TARGET {pt}")
        # Parts SHOULD go once more than 3 Target Durations from the end (6.2.2).
        end = sum(s.duration for s in pl.segments) + sum(p.duration for p in pl.pending_parts)
        elapsed = 0.0
        for s in pl.segments:
            elapsed += s.duration
            if s.parts and end - elapsed > 3 * td + _EPS:
                out.append(f"{WARNING}[6.2.2] segment {s.msn} keeps EXT-X-PART tags > 3 x TD from the end")

    out.extend(_order_violations(text))

    # Preload hints (4.4.5.3).
    types = [h.type for h in pl.preload_hints]
    for t in set(types):
        if types.count(t) > 1:
            out.append(f"[4.4.5.3] more than one EXT-X-PRELOAD-HINT of TYPE={t}")
    for h in pl.preload_hints:
        if h.type not in ("PART", "MAP"):
            out.append(f"[4.4.5.3] EXT-X-PRELOAD-HINT TYPE={h.type} is not PART or MAP")
        if h.type == "PART" and any(p.uri == h.uri for p in parts):
            out.append(f"[4.4.5.3] EXT-X-PRELOAD-HINT {h.uri} names a part already in the playlist")
    if pl.ended and pl.preload_hints:
        out.append("[4.4.5.3] EXT-X-PRELOAD-HINT in a playlist with EXT-X-ENDLIST")

    # Delta updates (4.4.5.2, 6.2.5.1).
    if pl.skipped_segments:
        if (pl.version or 1) < 9:
            out.append("[4.4.5.2] EXT-X-SKIP needs EXT-X-VERSION >= 9")
        if sc is None or sc.can_skip_until is None:
            out.append("[6.2.5.1] EXT-X-SKIP without CAN-SKIP-UNTIL")
        else:
            kept = sum(s.duration for s in pl.segments) + sum(p.duration for p in pl.pending_parts)
            if kept < sc.can_skip_until - _EPS:
                out.append(
                    f"[6.2.5.1] delta update keeps {kept:.3f} s, less than the Skip Boundary {sc.can_skip_until}"
                )
        if pl.ended:
            out.append("[6.2.5.1] EXT-X-SKIP in a playlist with EXT-X-ENDLIST")

    # Rendition reports (4.4.5.4).
    for rr in pl.rendition_reports:
        if rr.last_msn is None:
            out.append(f"[4.4.5.4] EXT-X-RENDITION-REPORT {rr.uri} without LAST-MSN")
        if pl.part_target is not None and rr.last_part is None:
            out.append(f"[4.4.5.4] EXT-X-RENDITION-REPORT {rr.uri} without LAST-PART")
        if "://" in rr.uri or rr.uri.startswith("/"):
            out.append(f"[4.4.5.4] EXT-X-RENDITION-REPORT URI {rr.uri} is not relative")
    if expected_reports is not None:
        have = {posixpath.normpath(r.uri) for r in pl.rendition_reports}
        for uri in expected_reports:
            if posixpath.normpath(uri) not in have:
                out.append(f"[4.4.5.4] no EXT-X-RENDITION-REPORT for {uri}")
    return out


def check_media_playlist_update(previous: str | bytes, current: str | bytes) -> list[str]:
    """Rules between two successive full playlists of one rendition (6.2.1, 6.2.2, 6.2.6)."""
    try:
        a = parse_media_playlist(_text(previous))
        b = parse_media_playlist(_text(current))
    except PlaylistError as exc:
        return [f"unparseable media playlist: {exc}"]
    out = []
    if (b.media_sequence or 0) < (a.media_sequence or 0):
        out.append("[6.2.1] EXT-X-MEDIA-SEQUENCE decreased")
    if b.discontinuity_sequence < a.discontinuity_sequence:
        out.append("[6.2.1] EXT-X-DISCONTINUITY-SEQUENCE decreased")
    if a.target_duration != b.target_duration:
        out.append("[4.4.3.1] EXT-X-TARGETDURATION changed")
    td = b.target_duration or 0

    def duration(p: ParsedMediaPlaylist) -> float:
        return sum(s.duration for s in p.segments)

    if not b.ended and duration(b) < min(3 * td, duration(a)) - _EPS:
        out.append("[6.2.2] playlist shrank below 3 x TARGETDURATION")
    b_parts = {p.uri for s in b.segments for p in s.parts} | {p.uri for p in b.pending_parts}
    for h in a.preload_hints:
        if h.type == "PART" and h.uri not in b_parts and h not in b.preload_hints:
            out.append(f"[6.2.6] preload hint {h.uri} was not later added as that part")
    return out


def check_multivariant(
    doc: str | bytes,
    media_playlists: Mapping[str, str | bytes] | None = None,
) -> list[str]:
    """Check the multivariant playlist; with `media_playlists` (URI relative to it ->
    text), also the rules across its media playlists: the same EXT-X-SERVER-CONTROL
    everywhere (6.2.4), a rendition report for every other rendition (4.4.5.4), and
    PART-HOLD-BACK >= 3 x the largest PART-TARGET (4.4.3.8)."""
    text = _text(doc)
    try:
        mv = parse_multivariant(text)
    except PlaylistError as exc:
        return [f"unparseable multivariant playlist: {exc}"]
    out: list[str] = []
    if not mv.variants:
        out.append("[4.4.6.2] no EXT-X-STREAM-INF")
    groups = {(m.type, m.group_id) for m in mv.media}
    for v in mv.variants:
        if not v.codecs:
            out.append(f"[4.4.6.2] variant {v.uri} without CODECS")
        if v.audio is not None and ("AUDIO", v.audio) not in groups:
            out.append(f"[4.4.6.2] variant {v.uri} names AUDIO group {v.audio} that has no EXT-X-MEDIA")
        if v.average_bandwidth is not None and v.average_bandwidth > v.bandwidth:
            out.append(f"[4.4.6.2] variant {v.uri}: AVERAGE-BANDWIDTH above BANDWIDTH")
        if v.audio is not None and len(v.codecs) < 2:
            out.append(f"[4.4.6.2] variant {v.uri}: CODECS lacks the audio codec")
    steering = [t for t in mv.unknown_tags if t.startswith("#EXT-X-CONTENT-STEERING")]
    if len(steering) > 1:
        out.append("[7] EXT-X-CONTENT-STEERING more than once")
    if media_playlists is None:
        return out

    uris = [v.uri for v in mv.variants] + [m.uri for m in mv.media if m.uri]
    uris = list(dict.fromkeys(uris))
    for uri in uris:
        if uri not in media_playlists:
            out.append(f"media playlist {uri} not supplied")
    parsed: dict[str, ParsedMediaPlaylist] = {}
    for uri in uris:
        if uri in media_playlists:
            body = _text(media_playlists[uri])
            base = posixpath.dirname(uri)
            expected = [posixpath.relpath(o, base or ".") for o in uris if o != uri]
            out.extend(f"{uri}: {v}" for v in check_media_playlist(body, expected_reports=expected))
            try:
                parsed[uri] = parse_media_playlist(body)
            except PlaylistError:
                pass
    controls = {uri: _server_control_key(p) for uri, p in parsed.items()}
    if len(set(controls.values())) > 1:
        detail = "; ".join(f"{u}: {c or 'none'}" for u, c in controls.items())
        out.append(f"[6.2.4] EXT-X-SERVER-CONTROL differs across media playlists: {detail}")
    targets = [p.part_target for p in parsed.values() if p.part_target is not None]
    if targets:
        top = max(targets)
        for uri, p in parsed.items():
            phb = p.server_control.part_hold_back if p.server_control else None
            if phb is not None and phb < 3 * top - _EPS:
                out.append(f"{WARNING}[4.4.3.8] {uri}: PART-HOLD-BACK {phb} < 3 x max PART-TARGET {top}")
    return out


def _server_control_key(p: ParsedMediaPlaylist) -> str:
    if p.server_control_text is None:
        return ""
    attrs = parse_attributes(p.server_control_text)
    return ",".join(f"{k}={attrs[k]}" for k in sorted(attrs))


def _is_low_latency(m: Manifest) -> bool:
    if DASH_LL_PROFILE in m.profiles:
        return True
    for p in m.periods:
        for a in p.adaptation_sets:
            t = a.segment_template
            if t is not None and (t.availability_time_complete is False or (t.availability_time_offset or 0) > 0):
                return True
    return False


def check_mpd(doc: str | bytes, *, low_latency: bool | None = None) -> list[str]:
    """Check an MPD; `low_latency` None detects it (LL profile or ATO/ATC present)."""
    try:
        m = parse_mpd(doc)
    except MpdError as exc:
        return [f"unparseable MPD: {exc}"]
    out: list[str] = []
    dynamic = m.type == "dynamic"
    ll = _is_low_latency(m) if low_latency is None else low_latency
    if m.type not in ("static", "dynamic"):
        out.append(f"MPD@type {m.type!r} is neither static nor dynamic")
    if dynamic and m.availability_start_time is None:
        out.append("dynamic MPD without availabilityStartTime")
    if dynamic and m.publish_time is None:
        out.append("dynamic MPD without publishTime")
    if not m.periods:
        out.append("MPD without Period")

    mpd_utc = {(u.scheme_id_uri, u.value) for u in m.utc_timings}
    good_utc = [u for u in m.utc_timings if u.scheme_id_uri in DASH_UTC_SCHEMES]
    if (ll or dynamic) and not good_utc:
        out.append("[DASH-IF LL] no UTCTiming with an http-xsdate/http-iso/http-ntp 2014 scheme")

    target_s: float | None = None
    if ll:
        if DASH_LL_PROFILE not in m.profiles:
            out.append(f"{WARNING}[DASH-IF LL] profile {DASH_LL_PROFILE} not listed")
        targets = [sd for sd in m.service_descriptions if sd.latency_target is not None]
        if not targets:
            out.append("[DASH-IF LL] no ServiceDescription with Latency@target")
        else:
            sd = targets[0]
            target_s = (sd.latency_target or 0) / 1000.0
            if sd.latency_min is not None and sd.latency_min > (sd.latency_target or 0):
                out.append("[DASH-IF LL] Latency@min above Latency@target")
            if sd.latency_max is not None and sd.latency_max < (sd.latency_target or 0):
                out.append("[DASH-IF LL] Latency@max below Latency@target")
            if (
                sd.playback_rate_min is not None
                and sd.playback_rate_max is not None
                and sd.playback_rate_min > sd.playback_rate_max
            ):
                out.append("[DASH-IF LL] PlaybackRate@min above @max")

    for period in m.periods:
        pname = f"Period {period.id}"
        for a in period.adaptation_sets:
            aname = f"{pname} AdaptationSet {a.id} ({a.kind})"
            templates = [r.segment_template or a.segment_template for r in a.representations]
            if not a.representations:
                out.append(f"{aname}: no Representation")
            for t in templates:
                if t is None:
                    out.append(f"{aname}: no SegmentTemplate")
                    continue
                media = t.media or ""
                if t.has_timeline:
                    if "$Number$" not in media and "$Time$" not in media:
                        out.append(f"{aname}: SegmentTimeline template without $Number$/$Time$")
                elif "$Number$" not in media:
                    out.append(f"{aname}: SegmentTemplate@media without $Number$")
                elif t.duration is None:
                    out.append(f"{aname}: $Number$ template without @duration or SegmentTimeline")
            if not ll:
                continue
            ids = [p.id for p in a.producer_reference_times]
            if not ids:
                out.append(f"[DASH-IF LL] {aname}: no ProducerReferenceTime")
            if len(set(ids)) != len(ids) or None in ids:
                out.append(f"[DASH-IF LL] {aname}: ProducerReferenceTime ids missing or not unique")
            for prt in a.producer_reference_times:
                if prt.type not in ("encoder", "captured"):
                    out.append(f"[DASH-IF LL] {aname}: ProducerReferenceTime@type {prt.type!r}")
                if prt.wall_clock_time is None or prt.presentation_time is None:
                    out.append(f"[DASH-IF LL] {aname}: ProducerReferenceTime without wallClockTime/presentationTime")
                if not prt.utc_timings or not {(u.scheme_id_uri, u.value) for u in prt.utc_timings} <= mpd_utc:
                    out.append(f"[DASH-IF LL] {aname}: ProducerReferenceTime UTCTiming differs from the MPD's")
            for t in templates:
                if t is None:
                    continue
                max_seg = m.max_segment_duration
                if max_seg is None and t.duration is not None and t.timescale:
                    max_seg = t.duration / t.timescale
                ato = t.availability_time_offset
                if ato is None:
                    out.append(f"[DASH-IF LL] {aname}: availabilityTimeOffset missing")
                else:
                    if ato <= 0:
                        out.append(f"[DASH-IF LL] {aname}: availabilityTimeOffset {ato} not > 0")
                    if max_seg is not None and ato >= max_seg:
                        out.append(
                            f"[DASH-IF LL] {aname}: availabilityTimeOffset {ato} not below "
                            f"the maximum segment duration {max_seg}"
                        )
                    if max_seg is not None and target_s is not None and max_seg - ato >= target_s:
                        out.append(
                            f"[DASH-IF LL] {aname}: maxSegmentDuration - availabilityTimeOffset "
                            f"({max_seg - ato:.3f} s) not below the target latency {target_s} s"
                        )
                if t.availability_time_complete is None:
                    out.append(f"[DASH-IF LL] {aname}: availabilityTimeComplete missing")
                elif t.availability_time_complete:
                    out.append(f"[DASH-IF LL] {aname}: availabilityTimeComplete is not false")
                break  # one template per set is what we render; report once per set
    return out
