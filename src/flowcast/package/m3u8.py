"""M3U8 parser (media and multivariant playlists) into frozen dataclasses.

Used by the tests, the end-to-end checks and the load tester's virtual viewers (streamlink
split: parser here, model/worker elsewhere). Malformed input raises `PlaylistError` and
nothing else. Unknown tags are kept in `unknown_tags`, never rejected (4.1: clients MUST
ignore unrecognised tags).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime


class PlaylistError(ValueError):
    """The text is not a playlist this parser can read."""


_ATTR_RE = re.compile(r'([A-Z0-9-]+)=("[^"\r\n]*"|[^",=\s]*)')


def parse_attributes(text: str) -> dict[str, str]:
    """An attribute-list (4.2) into a dict; quoted values are unquoted."""
    attrs: dict[str, str] = {}
    pos = 0
    n = len(text)
    while pos < n:
        m = _ATTR_RE.match(text, pos)
        if m is None:
            raise PlaylistError(f"bad attribute list at {pos}: {text!r}")
        name, value = m.group(1), m.group(2)
        if name in attrs:
            raise PlaylistError(f"attribute {name} repeated")
        attrs[name] = value[1:-1] if value.startswith('"') else value
        pos = m.end()
        if pos < n:
            if text[pos] != ",":
                raise PlaylistError(f"expected ',' at {pos}: {text!r}")
            pos += 1
            if pos == n:
                raise PlaylistError("trailing comma in attribute list")
    return attrs


def _int(value: str, what: str) -> int:
    if not value.isascii() or not value.isdigit() or len(value) > 20:
        raise PlaylistError(f"{what}: not a decimal-integer: {value!r}")
    return int(value)


def _float(value: str, what: str) -> float:
    if not re.fullmatch(r"-?[0-9]+(\.[0-9]*)?", value or ""):
        raise PlaylistError(f"{what}: not a decimal-floating-point: {value!r}")
    return float(value)


def _date(value: str) -> datetime:
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise PlaylistError(f"bad date-time {value!r}") from None
    if dt.tzinfo is None:
        raise PlaylistError(f"date-time without time zone {value!r}")
    return dt


def _required(attrs: dict[str, str], name: str, tag: str) -> str:
    if name not in attrs:
        raise PlaylistError(f"{tag} without {name}")
    return attrs[name]


@dataclass(frozen=True, slots=True)
class ServerControl:
    can_block_reload: bool = False
    can_skip_until: float | None = None
    can_skip_dateranges: bool = False
    hold_back: float | None = None
    part_hold_back: float | None = None


@dataclass(frozen=True, slots=True)
class ParsedPart:
    uri: str
    duration: float
    independent: bool = False
    gap: bool = False
    byterange: str | None = None


@dataclass(frozen=True, slots=True)
class ParsedKey:
    """An EXT-X-KEY or EXT-X-SESSION-KEY (4.4.4.4, 4.4.6.5)."""

    method: str
    uri: str | None
    keyformat: str  # "identity" when absent
    keyformatversions: str | None
    keyid: str | None  # KEYID attribute as written (0x...)
    iv: str | None
    attributes: dict[str, str]


def parse_key(value: str, tag: str = "#EXT-X-KEY") -> ParsedKey:
    a = parse_attributes(value)
    method = _required(a, "METHOD", tag)
    if method != "NONE" and "URI" not in a:
        raise PlaylistError(f"{tag} METHOD={method} without URI")
    return ParsedKey(
        method=method,
        uri=a.get("URI"),
        keyformat=a.get("KEYFORMAT", "identity"),
        keyformatversions=a.get("KEYFORMATVERSIONS"),
        keyid=a.get("KEYID"),
        iv=a.get("IV"),
        attributes=a,
    )


@dataclass(frozen=True, slots=True)
class ParsedSegment:
    msn: int
    uri: str
    duration: float
    title: str = ""
    parts: tuple[ParsedPart, ...] = ()
    program_date_time: datetime | None = None
    discontinuity: bool = False
    map_uri: str | None = None
    gap: bool = False
    keys: tuple[ParsedKey, ...] = ()  # the keys in force, one per KEYFORMAT


@dataclass(frozen=True, slots=True)
class PreloadHint:
    type: str
    uri: str


@dataclass(frozen=True, slots=True)
class ParsedRenditionReport:
    uri: str
    last_msn: int | None
    last_part: int | None


@dataclass(frozen=True, slots=True)
class ParsedMediaPlaylist:
    version: int | None
    target_duration: int | None
    media_sequence: int | None  # None when the tag is absent (then 0 applies)
    discontinuity_sequence: int
    part_target: float | None
    server_control: ServerControl | None
    server_control_text: str | None  # the raw attribute list, for cross-playlist checks
    segments: tuple[ParsedSegment, ...]
    pending_parts: tuple[ParsedPart, ...]  # parts after the last segment URI
    pending_program_date_time: datetime | None
    pending_discontinuity: bool
    preload_hints: tuple[PreloadHint, ...]
    rendition_reports: tuple[ParsedRenditionReport, ...]
    skipped_segments: int
    ended: bool
    playlist_type: str | None
    independent_segments: bool
    map_uri: str | None
    unknown_tags: tuple[str, ...]
    pending_keys: tuple[ParsedKey, ...] = ()  # keys in force after the last segment

    @property
    def first_msn(self) -> int:
        return (self.media_sequence or 0) + self.skipped_segments

    @property
    def last_msn_part(self) -> tuple[int, int | None]:
        """(LAST-MSN, LAST-PART) of this playlist, as a rendition report would give it."""
        if self.pending_parts:
            msn = self.segments[-1].msn + 1 if self.segments else self.first_msn
            return msn, len(self.pending_parts) - 1
        if self.segments:
            s = self.segments[-1]
            return s.msn, (len(s.parts) - 1 if s.parts else None)
        return self.first_msn - 1, None


def _lines(text: str | bytes) -> list[str]:
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise PlaylistError("playlist is not UTF-8") from None
    if text.startswith("\ufeff"):
        raise PlaylistError("playlist must not start with a BOM")
    lines = [ln.rstrip("\r") for ln in text.split("\n")]
    if not lines or lines[0] != "#EXTM3U":
        raise PlaylistError("missing #EXTM3U on the first line")
    return [ln.strip() for ln in lines[1:] if ln.strip()]


def _split_tag(line: str) -> tuple[str, str]:
    name, sep, value = line.partition(":")
    return name, value


def parse_media_playlist(text: str | bytes) -> ParsedMediaPlaylist:
    lines = _lines(text)
    version = target = media_seq = None
    disc_seq = 0
    part_target = None
    sc = None
    sc_text = None
    segments: list[ParsedSegment] = []
    hints: list[PreloadHint] = []
    reports: list[ParsedRenditionReport] = []
    unknown: list[str] = []
    skipped = 0
    ended = False
    playlist_type = None
    independent = False
    map_uri: str | None = None
    first_map: str | None = None
    # per-segment state
    parts: list[ParsedPart] = []
    pdt: datetime | None = None
    disc = False
    extinf: tuple[float, str] | None = None
    gap = False
    seen_segment_content = False
    # 4.4.4.4: a key applies until the next EXT-X-KEY with the same KEYFORMAT; NONE clears.
    keys: dict[str, ParsedKey] = {}

    for line in lines:
        if not line.startswith("#"):
            if extinf is None:
                raise PlaylistError(f"URI without EXTINF: {line!r}")
            base = (media_seq or 0) + skipped
            segments.append(
                ParsedSegment(
                    base + len(segments),
                    line,
                    extinf[0],
                    extinf[1],
                    tuple(parts),
                    pdt,
                    disc,
                    map_uri,
                    gap,
                    tuple(keys.values()),
                )
            )
            parts, pdt, disc, extinf, gap = [], None, False, None, False
            continue
        if not line.startswith("#EXT"):
            continue  # comment
        name, value = _split_tag(line)
        if name == "#EXT-X-VERSION":
            version = _int(value, name)
        elif name == "#EXT-X-TARGETDURATION":
            target = _int(value, name)
        elif name == "#EXT-X-MEDIA-SEQUENCE":
            if segments or seen_segment_content:
                raise PlaylistError("EXT-X-MEDIA-SEQUENCE after the first segment")
            media_seq = _int(value, name)
        elif name == "#EXT-X-DISCONTINUITY-SEQUENCE":
            disc_seq = _int(value, name)
        elif name == "#EXT-X-PLAYLIST-TYPE":
            if value not in ("EVENT", "VOD"):
                raise PlaylistError(f"bad EXT-X-PLAYLIST-TYPE {value!r}")
            playlist_type = value
        elif name == "#EXT-X-INDEPENDENT-SEGMENTS":
            independent = True
        elif name == "#EXT-X-ENDLIST":
            ended = True
        elif name == "#EXT-X-PART-INF":
            part_target = _float(_required(parse_attributes(value), "PART-TARGET", name), name)
        elif name == "#EXT-X-SERVER-CONTROL":
            a = parse_attributes(value)
            sc_text = value
            sc = ServerControl(
                can_block_reload=a.get("CAN-BLOCK-RELOAD") == "YES",
                can_skip_until=_float(a["CAN-SKIP-UNTIL"], name) if "CAN-SKIP-UNTIL" in a else None,
                can_skip_dateranges=a.get("CAN-SKIP-DATERANGES") == "YES",
                hold_back=_float(a["HOLD-BACK"], name) if "HOLD-BACK" in a else None,
                part_hold_back=_float(a["PART-HOLD-BACK"], name) if "PART-HOLD-BACK" in a else None,
            )
        elif name == "#EXT-X-SKIP":
            if segments or seen_segment_content:
                raise PlaylistError("EXT-X-SKIP after the first segment")
            skipped = _int(_required(parse_attributes(value), "SKIPPED-SEGMENTS", name), name)
        elif name == "#EXT-X-MAP":
            map_uri = _required(parse_attributes(value), "URI", name)
            first_map = first_map or map_uri
        elif name == "#EXTINF":
            dur, _, title = value.partition(",")
            extinf = (_float(dur.strip(), name), title)
            seen_segment_content = True
        elif name == "#EXT-X-PROGRAM-DATE-TIME":
            pdt = _date(value)
            seen_segment_content = True
        elif name == "#EXT-X-DISCONTINUITY":
            disc = True
            seen_segment_content = True
        elif name == "#EXT-X-GAP":
            gap = True
        elif name == "#EXT-X-KEY":
            key = parse_key(value, name)
            if key.method == "NONE":
                keys.clear()
            else:
                keys[key.keyformat] = key
        elif name == "#EXT-X-PART":
            a = parse_attributes(value)
            parts.append(
                ParsedPart(
                    uri=_required(a, "URI", name),
                    duration=_float(_required(a, "DURATION", name), name),
                    independent=a.get("INDEPENDENT") == "YES",
                    gap=a.get("GAP") == "YES",
                    byterange=a.get("BYTERANGE"),
                )
            )
            seen_segment_content = True
        elif name == "#EXT-X-PRELOAD-HINT":
            a = parse_attributes(value)
            hints.append(PreloadHint(_required(a, "TYPE", name), _required(a, "URI", name)))
        elif name == "#EXT-X-RENDITION-REPORT":
            a = parse_attributes(value)
            reports.append(
                ParsedRenditionReport(
                    _required(a, "URI", name),
                    _int(a["LAST-MSN"], name) if "LAST-MSN" in a else None,
                    _int(a["LAST-PART"], name) if "LAST-PART" in a else None,
                )
            )
        elif name in ("#EXT-X-STREAM-INF", "#EXT-X-MEDIA", "#EXT-X-I-FRAME-STREAM-INF"):
            raise PlaylistError(f"{name} in a media playlist")
        else:
            unknown.append(line)
    if extinf is not None:
        raise PlaylistError("EXTINF without a URI")
    if target is None:
        raise PlaylistError("missing EXT-X-TARGETDURATION")
    return ParsedMediaPlaylist(
        version=version,
        target_duration=target,
        media_sequence=media_seq,
        discontinuity_sequence=disc_seq,
        part_target=part_target,
        server_control=sc,
        server_control_text=sc_text,
        segments=tuple(segments),
        pending_parts=tuple(parts),
        pending_program_date_time=pdt,
        pending_discontinuity=disc,
        preload_hints=tuple(hints),
        rendition_reports=tuple(reports),
        skipped_segments=skipped,
        ended=ended,
        playlist_type=playlist_type,
        independent_segments=independent,
        map_uri=first_map,
        unknown_tags=tuple(unknown),
        pending_keys=tuple(keys.values()),
    )


@dataclass(frozen=True, slots=True)
class ParsedVariant:
    uri: str
    bandwidth: int
    average_bandwidth: int | None
    codecs: tuple[str, ...]
    resolution: tuple[int, int] | None
    frame_rate: float | None
    audio: str | None
    attributes: dict[str, str]


@dataclass(frozen=True, slots=True)
class ParsedMedia:
    type: str
    group_id: str
    name: str
    uri: str | None
    default: bool
    autoselect: bool
    language: str | None
    channels: str | None
    attributes: dict[str, str]


@dataclass(frozen=True, slots=True)
class ParsedMultivariant:
    version: int | None
    independent_segments: bool
    variants: tuple[ParsedVariant, ...]
    media: tuple[ParsedMedia, ...]
    unknown_tags: tuple[str, ...]
    session_keys: tuple[ParsedKey, ...] = ()


def parse_multivariant(text: str | bytes) -> ParsedMultivariant:
    lines = _lines(text)
    version = None
    independent = False
    variants: list[ParsedVariant] = []
    media: list[ParsedMedia] = []
    unknown: list[str] = []
    session_keys: list[ParsedKey] = []
    pending: dict[str, str] | None = None
    for line in lines:
        if not line.startswith("#"):
            if pending is None:
                raise PlaylistError(f"URI without EXT-X-STREAM-INF: {line!r}")
            a = pending
            res = None
            if "RESOLUTION" in a:
                m = re.fullmatch(r"([0-9]{1,6})x([0-9]{1,6})", a["RESOLUTION"])
                if m is None:
                    raise PlaylistError(f"bad RESOLUTION {a['RESOLUTION']!r}")
                res = (int(m.group(1)), int(m.group(2)))
            variants.append(
                ParsedVariant(
                    uri=line,
                    bandwidth=_int(_required(a, "BANDWIDTH", "EXT-X-STREAM-INF"), "BANDWIDTH"),
                    average_bandwidth=(
                        _int(a["AVERAGE-BANDWIDTH"], "AVERAGE-BANDWIDTH") if "AVERAGE-BANDWIDTH" in a else None
                    ),
                    codecs=tuple(c.strip() for c in a["CODECS"].split(",")) if "CODECS" in a else (),
                    resolution=res,
                    frame_rate=_float(a["FRAME-RATE"], "FRAME-RATE") if "FRAME-RATE" in a else None,
                    audio=a.get("AUDIO"),
                    attributes=a,
                )
            )
            pending = None
            continue
        if not line.startswith("#EXT"):
            continue
        name, value = _split_tag(line)
        if name == "#EXT-X-VERSION":
            version = _int(value, name)
        elif name == "#EXT-X-INDEPENDENT-SEGMENTS":
            independent = True
        elif name == "#EXT-X-STREAM-INF":
            if pending is not None:
                raise PlaylistError("EXT-X-STREAM-INF without a URI")
            pending = parse_attributes(value)
        elif name == "#EXT-X-MEDIA":
            a = parse_attributes(value)
            media.append(
                ParsedMedia(
                    type=_required(a, "TYPE", name),
                    group_id=_required(a, "GROUP-ID", name),
                    name=_required(a, "NAME", name),
                    uri=a.get("URI"),
                    default=a.get("DEFAULT") == "YES",
                    autoselect=a.get("AUTOSELECT") == "YES",
                    language=a.get("LANGUAGE"),
                    channels=a.get("CHANNELS"),
                    attributes=a,
                )
            )
        elif name == "#EXT-X-SESSION-KEY":
            key = parse_key(value, name)
            if key.method == "NONE":
                raise PlaylistError("EXT-X-SESSION-KEY with METHOD=NONE")
            session_keys.append(key)
        elif name in ("#EXTINF", "#EXT-X-TARGETDURATION", "#EXT-X-PART", "#EXT-X-MEDIA-SEQUENCE", "#EXT-X-KEY"):
            raise PlaylistError(f"{name} in a multivariant playlist")
        else:
            unknown.append(line)
    if pending is not None:
        raise PlaylistError("EXT-X-STREAM-INF without a URI")
    return ParsedMultivariant(version, independent, tuple(variants), tuple(media), tuple(unknown), tuple(session_keys))
