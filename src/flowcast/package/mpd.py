"""MPD parser into frozen dataclasses (stdlib xml.etree).

Reads what the tests, the end-to-end checks and the load tester need: MPD timing
attributes, ServiceDescription, UTCTiming, Periods, AdaptationSets, Representations,
SegmentTemplate (incl. availabilityTimeOffset/Complete) and ProducerReferenceTime.
Malformed input raises `MpdError` and nothing else. DTDs/entities are refused, so an
MPD from the network cannot expand entities.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import datetime


class MpdError(ValueError):
    """The text is not an MPD this parser can read."""


_DURATION_RE = re.compile(
    r"(-)?P(?:(\d+(?:\.\d+)?)Y)?(?:(\d+(?:\.\d+)?)M)?(?:(\d+(?:\.\d+)?)D)?"
    r"(?:T(?:(\d+(?:\.\d+)?)H)?(?:(\d+(?:\.\d+)?)M)?(?:(\d+(?:\.\d*)?)S)?)?"
)


def parse_duration(text: str) -> float:
    """xs:duration to seconds (years as 365 d, months as 30 d, as players do)."""
    m = _DURATION_RE.fullmatch(text.strip())
    if m is None or text.strip() in ("P", "PT", "-P") or text.strip().endswith("T"):
        raise MpdError(f"bad xs:duration {text!r}")
    sign, y, mo, d, h, mi, s = m.groups()
    total = (
        float(y or 0) * 365 * 86400
        + float(mo or 0) * 30 * 86400
        + float(d or 0) * 86400
        + float(h or 0) * 3600
        + float(mi or 0) * 60
        + float(s or 0)
    )
    return -total if sign else total


def parse_datetime(text: str) -> datetime:
    try:
        dt = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise MpdError(f"bad xs:dateTime {text!r}") from None
    return dt


@dataclass(frozen=True, slots=True)
class UTCTiming:
    scheme_id_uri: str
    value: str


@dataclass(frozen=True, slots=True)
class ServiceDescription:
    id: str | None
    latency_target: int | None  # ms
    latency_min: int | None
    latency_max: int | None
    latency_reference_id: str | None
    playback_rate_min: float | None
    playback_rate_max: float | None


@dataclass(frozen=True, slots=True)
class ProducerReferenceTime:
    id: str | None
    type: str
    wall_clock_time: datetime | None
    presentation_time: int | None
    utc_timings: tuple[UTCTiming, ...]


@dataclass(frozen=True, slots=True)
class SegmentTemplate:
    timescale: int
    duration: int | None
    start_number: int
    presentation_time_offset: int
    media: str | None
    initialization: str | None
    availability_time_offset: float | None
    availability_time_complete: bool | None
    has_timeline: bool


@dataclass(frozen=True, slots=True)
class Representation:
    id: str
    bandwidth: int
    codecs: str | None
    width: int | None
    height: int | None
    frame_rate: str | None
    audio_sampling_rate: str | None
    segment_template: SegmentTemplate | None  # its own, or None (inherits the set's)


@dataclass(frozen=True, slots=True)
class ParsedContentProtection:
    scheme_id_uri: str
    value: str | None
    default_kid: str | None  # cenc:default_KID as written
    pssh: tuple[str, ...]  # cenc:pssh texts (base64)
    laurl: str | None  # dashif:Laurl (or laurl)
    clearkey_laurl: str | None  # clearkey:Laurl


@dataclass(frozen=True, slots=True)
class AdaptationSet:
    id: str | None
    content_type: str | None
    mime_type: str | None
    segment_alignment: bool
    start_with_sap: int | None
    segment_template: SegmentTemplate | None
    producer_reference_times: tuple[ProducerReferenceTime, ...]
    representations: tuple[Representation, ...]
    content_protections: tuple[ParsedContentProtection, ...] = ()

    @property
    def kind(self) -> str | None:
        if self.content_type:
            return self.content_type
        if self.mime_type:
            return self.mime_type.split("/")[0]
        return None


@dataclass(frozen=True, slots=True)
class Period:
    id: str | None
    start: float | None
    duration: float | None
    adaptation_sets: tuple[AdaptationSet, ...]


@dataclass(frozen=True, slots=True)
class Manifest:
    type: str
    profiles: tuple[str, ...]
    availability_start_time: datetime | None
    publish_time: datetime | None
    minimum_update_period: float | None
    time_shift_buffer_depth: float | None
    suggested_presentation_delay: float | None
    max_segment_duration: float | None
    min_buffer_time: float | None
    media_presentation_duration: float | None
    service_descriptions: tuple[ServiceDescription, ...]
    utc_timings: tuple[UTCTiming, ...]
    periods: tuple[Period, ...]
    # MPD-level BaseURLs (23009-1 5.6): (URL, serviceLocation or None), in document order
    base_urls: tuple[tuple[str, str | None], ...] = ()


def _local(tag: object) -> str:
    if not isinstance(tag, str):
        return ""
    return tag.rsplit("}", 1)[-1]


def _children(el: ET.Element, name: str) -> list[ET.Element]:
    return [c for c in el if _local(c.tag) == name]


def _int(value: str | None, what: str, default: int | None = None) -> int | None:
    if value is None:
        return default
    v = value.strip()
    if not re.fullmatch(r"[0-9]{1,20}", v):
        raise MpdError(f"{what}: not an unsigned integer: {value!r}")
    return int(v)


def _float(value: str | None, what: str) -> float | None:
    if value is None:
        return None
    v = value.strip()
    if v.upper() == "INF":
        return float("inf")
    if not re.fullmatch(r"-?[0-9]+(\.[0-9]*)?([eE][-+]?[0-9]+)?", v):
        raise MpdError(f"{what}: not a number: {value!r}")
    return float(v)


def _bool(value: str | None, what: str) -> bool | None:
    if value is None:
        return None
    if value.strip() in ("true", "1"):
        return True
    if value.strip() in ("false", "0"):
        return False
    raise MpdError(f"{what}: not a boolean: {value!r}")


def _dur(value: str | None) -> float | None:
    return None if value is None else parse_duration(value)


def _utc(el: ET.Element) -> tuple[UTCTiming, ...]:
    out = []
    for u in _children(el, "UTCTiming"):
        scheme = u.get("schemeIdUri")
        if scheme is None:
            raise MpdError("UTCTiming without schemeIdUri")
        out.append(UTCTiming(scheme, u.get("value", "")))
    return tuple(out)


def _template(el: ET.Element | None, parent: SegmentTemplate | None = None) -> SegmentTemplate | None:
    if el is None:
        return None
    p = parent

    def inherit(name: str, attr: str, conv):  # type: ignore[no-untyped-def]
        raw = el.get(attr)
        if raw is not None:
            return conv(raw, attr)
        return getattr(p, name) if p is not None else None

    timescale = inherit("timescale", "timescale", _int)
    start_number = inherit("start_number", "startNumber", _int)
    pto = inherit("presentation_time_offset", "presentationTimeOffset", _int)
    return SegmentTemplate(
        timescale=1 if timescale is None else timescale,
        duration=inherit("duration", "duration", _int),
        start_number=1 if start_number is None else start_number,
        presentation_time_offset=0 if pto is None else pto,
        media=el.get("media", p.media if p else None),
        initialization=el.get("initialization", p.initialization if p else None),
        availability_time_offset=inherit("availability_time_offset", "availabilityTimeOffset", _float),
        availability_time_complete=inherit("availability_time_complete", "availabilityTimeComplete", _bool),
        has_timeline=bool(_children(el, "SegmentTimeline")) or bool(p and p.has_timeline),
    )


_CENC_NS = "{urn:mpeg:cenc:2013}"
_DASHIF_NS = "{https://dashif.org/CPS}"
_CLEARKEY_NS = "{http://dashif.org/guidelines/clearKey}"


def _content_protections(el: ET.Element) -> tuple[ParsedContentProtection, ...]:
    out = []
    for cp in _children(el, "ContentProtection"):
        scheme = cp.get("schemeIdUri")
        if scheme is None:
            raise MpdError("ContentProtection without schemeIdUri")
        laurl = ck_laurl = None
        pssh = []
        for child in cp:
            tag = child.tag if isinstance(child.tag, str) else ""
            text = (child.text or "").strip()
            if tag == _CENC_NS + "pssh":
                pssh.append(text)
            elif tag == _DASHIF_NS + "laurl" or tag == _DASHIF_NS + "Laurl":
                laurl = text
            elif tag == _CLEARKEY_NS + "Laurl":
                ck_laurl = text
        out.append(
            ParsedContentProtection(
                scheme_id_uri=scheme,
                value=cp.get("value"),
                default_kid=cp.get(_CENC_NS + "default_KID"),
                pssh=tuple(pssh),
                laurl=laurl,
                clearkey_laurl=ck_laurl,
            )
        )
    return tuple(out)


def _first(el: ET.Element, name: str) -> ET.Element | None:
    found = _children(el, name)
    return found[0] if found else None


def parse_mpd(text: str | bytes) -> Manifest:
    if isinstance(text, str):
        text = text.encode("utf-8", "surrogatepass") if text else b""
    if b"<!DOCTYPE" in text or b"<!ENTITY" in text:
        raise MpdError("DTDs and entities are not accepted in an MPD")
    try:
        root = ET.fromstring(text)
    except (ET.ParseError, ValueError, UnicodeError, LookupError) as exc:  # LookupError: unknown encoding
        raise MpdError(f"not XML: {exc}") from None
    if _local(root.tag) != "MPD":
        raise MpdError(f"root element is {root.tag!r}, not MPD")
    try:
        return _manifest(root)
    except MpdError:
        raise
    except (ValueError, TypeError, OverflowError, AttributeError) as exc:
        raise MpdError(f"bad MPD: {exc}") from None


def _manifest(root: ET.Element) -> Manifest:
    sds = []
    for sd in _children(root, "ServiceDescription"):
        lat = _first(sd, "Latency")
        pr = _first(sd, "PlaybackRate")
        sds.append(
            ServiceDescription(
                id=sd.get("id"),
                latency_target=_int(lat.get("target"), "Latency@target") if lat is not None else None,
                latency_min=_int(lat.get("min"), "Latency@min") if lat is not None else None,
                latency_max=_int(lat.get("max"), "Latency@max") if lat is not None else None,
                latency_reference_id=lat.get("referenceId") if lat is not None else None,
                playback_rate_min=_float(pr.get("min"), "PlaybackRate@min") if pr is not None else None,
                playback_rate_max=_float(pr.get("max"), "PlaybackRate@max") if pr is not None else None,
            )
        )
    periods = []
    for p in _children(root, "Period"):
        sets = []
        for a in _children(p, "AdaptationSet"):
            a_tpl = _template(_first(a, "SegmentTemplate"))
            prts = []
            for prt in _children(a, "ProducerReferenceTime"):
                wct = prt.get("wallClockTime")
                prts.append(
                    ProducerReferenceTime(
                        id=prt.get("id"),
                        type=prt.get("type", "encoder"),
                        wall_clock_time=parse_datetime(wct) if wct is not None else None,
                        presentation_time=_int(prt.get("presentationTime"), "presentationTime"),
                        utc_timings=_utc(prt),
                    )
                )
            reps = []
            for r in _children(a, "Representation"):
                rid = r.get("id")
                if rid is None:
                    raise MpdError("Representation without id")
                bw = _int(r.get("bandwidth"), "bandwidth")
                if bw is None:
                    raise MpdError(f"Representation {rid} without bandwidth")
                reps.append(
                    Representation(
                        id=rid,
                        bandwidth=bw,
                        codecs=r.get("codecs", a.get("codecs")),
                        width=_int(r.get("width"), "width"),
                        height=_int(r.get("height"), "height"),
                        frame_rate=r.get("frameRate", a.get("frameRate")),
                        audio_sampling_rate=r.get("audioSamplingRate", a.get("audioSamplingRate")),
                        segment_template=_template(_first(r, "SegmentTemplate"), a_tpl),
                    )
                )
            sets.append(
                AdaptationSet(
                    id=a.get("id"),
                    content_type=a.get("contentType"),
                    mime_type=a.get("mimeType"),
                    segment_alignment=a.get("segmentAlignment") in ("true", "1"),
                    start_with_sap=_int(a.get("startWithSAP"), "startWithSAP"),
                    segment_template=a_tpl,
                    producer_reference_times=tuple(prts),
                    representations=tuple(reps),
                    content_protections=_content_protections(a),
                )
            )
        periods.append(Period(p.get("id"), _dur(p.get("start")), _dur(p.get("duration")), tuple(sets)))
    ast, pt = root.get("availabilityStartTime"), root.get("publishTime")
    return Manifest(
        type=root.get("type", "static"),
        profiles=tuple(x.strip() for x in root.get("profiles", "").split(",") if x.strip()),
        availability_start_time=parse_datetime(ast) if ast else None,
        publish_time=parse_datetime(pt) if pt else None,
        minimum_update_period=_dur(root.get("minimumUpdatePeriod")),
        time_shift_buffer_depth=_dur(root.get("timeShiftBufferDepth")),
        suggested_presentation_delay=_dur(root.get("suggestedPresentationDelay")),
        max_segment_duration=_dur(root.get("maxSegmentDuration")),
        min_buffer_time=_dur(root.get("minBufferTime")),
        media_presentation_duration=_dur(root.get("mediaPresentationDuration")),
        service_descriptions=tuple(sds),
        utc_timings=_utc(root),
        periods=tuple(periods),
        base_urls=tuple(
            ((b.text or "").strip(), b.get("serviceLocation")) for b in _children(root, "BaseURL") if (b.text or "").strip()
        ),
    )
