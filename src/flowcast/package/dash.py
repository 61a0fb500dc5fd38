"""DASH and low-latency DASH MPDs: frozen models in, MPD bytes out.

Low-latency per DASH-IF "Low-latency Modes for DASH" (CR-Low-Latency-Live r8): chunked
CMAF segments announced with SegmentTemplate@availabilityTimeOffset and
@availabilityTimeComplete="false", a ServiceDescription with the latency target, a
UTCTiming the player syncs to, and a ProducerReferenceTime per adaptation set.
Rendering is a pure function of the model; the origin renders once per publish.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import datetime, timezone

from flowcast.media.types import TrackInfo

MPD_NS = "urn:mpeg:dash:schema:mpd:2011"
PROFILE_LIVE = "urn:mpeg:dash:profile:isoff-live:2011"
PROFILE_CMAF = "urn:mpeg:dash:profile:cmaf:2019"
PROFILE_LL = "http://www.dashif.org/guidelines/low-latency-live-v5"
UTC_HTTP_XSDATE = "urn:mpeg:dash:utc:http-xsdate:2014"
MP4PROTECTION_SCHEME = "urn:mpeg:dash:mp4protection:2011"
CENC_NS = "urn:mpeg:cenc:2013"
DASHIF_CPS_NS = "https://dashif.org/CPS"  # dashif:Laurl (DASH-IF IOP 4.3 / CPS)
CLEARKEY_NS = "http://dashif.org/guidelines/clearKey"  # clearkey:Laurl, older dash.js
MSPR_NS = "urn:microsoft:playready"  # mspr:pro, the PlayReady Object (PlayReady DASH guidance)
MEDIA_TEMPLATE = "$RepresentationID$/$Number$.m4s"
INIT_TEMPLATE = "$RepresentationID$/init.mp4"


def format_datetime(epoch: float) -> str:
    """xs:dateTime in UTC with milliseconds."""
    dt = datetime.fromtimestamp(epoch, tz=timezone.utc)
    return dt.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def format_duration(seconds: float) -> str:
    """xs:duration in seconds only (PT...S), which every player parses."""
    text = f"{seconds:.3f}".rstrip("0").rstrip(".")
    return f"PT{text or '0'}S"


def _num(value: float, places: int = 3) -> str:
    text = f"{value:.{places}f}".rstrip("0").rstrip(".")
    return text or "0"


@dataclass(frozen=True, slots=True)
class DashRepresentation:
    """One Representation; `id` is the rendition name (720p, audio) used in the URLs."""

    id: str
    track: TrackInfo
    bandwidth: int  # bits/s
    frame_rate: str | None = None  # "30", "30000/1001"


@dataclass(frozen=True, slots=True)
class MpdPeriod:
    """A Period: one per encoder run (a restart starts a new Period).

    `start`: seconds after availabilityStartTime. `presentation_time`: the media time (s,
    rendition timeline) at the Period start, written as presentationTimeOffset in each
    timescale; segment `start_number` begins there. `wall_clock`: the epoch time at which
    that media time was produced (ProducerReferenceTime), None to use AST + start.
    """

    id: str
    start: float
    start_number: int
    presentation_time: float = 0.0
    wall_clock: float | None = None
    # Key rotation: each key period is a Period with its own init segment (its tenc names
    # the period's KID) and its own ContentProtection; None: the MPD-wide ones.
    initialization: str | None = None
    # The last segment number of the Period (SegmentTemplate@endNumber, 23009-1 5th ed.):
    # dash.js then never fetches the next Period's first segment under this Period. Not
    # also as DASH-IF IOP 4.4.3.6 last-segment-number: Shaka 5.2 reads that value minus one
    # and drops each Period's last segment (measured: a 2 s gap per key period).
    end_number: int | None = None
    content_protection: tuple["ContentProtection", ...] | None = None
    audio_content_protection: tuple["ContentProtection", ...] | None = None


@dataclass(frozen=True, slots=True)
class ContentProtection:
    """One ContentProtection descriptor (23009-1 5.8.4.1, DASH-IF IOP 7.6).

    `default_kid`: UUID text, written as cenc:default_KID. `pssh`: base64 of a whole pssh
    box (cenc:pssh). `laurl`: dashif:Laurl (Shaka reads only this spelling, dash.js
    either case); `clearkey_laurl`: clearkey:Laurl Lic_type="EME-1.0", which older dash.js
    and Shaka read for ClearKey. Built by `protect.signalling`.
    """

    scheme_id_uri: str
    value: str | None = None
    default_kid: str | None = None
    pssh: str | None = None
    laurl: str | None = None
    clearkey_laurl: str | None = None
    pro: str | None = None  # mspr:pro: base64 PlayReady Object (the PlayReady pssh data)


@dataclass(frozen=True, slots=True)
class LatencyTarget:
    """ServiceDescription: Latency (ms) and PlaybackRate."""

    target_ms: int
    min_ms: int
    max_ms: int
    playback_rate_min: float = 0.96
    playback_rate_max: float = 1.04


@dataclass(frozen=True, slots=True)
class LiveMpd:
    """Everything a (LL-)DASH MPD states. `part_duration` None renders broadcast DASH."""

    availability_start_time: float  # epoch seconds
    publish_time: float  # epoch seconds
    periods: tuple[MpdPeriod, ...]
    video: tuple[DashRepresentation, ...]
    audio: DashRepresentation | None
    segment_duration: float  # seconds
    utc_timing_url: str
    time_shift_buffer_depth: float  # the DVR window, seconds
    part_duration: float | None = None  # CMAF chunk duration; None: not low-latency
    latency: LatencyTarget | None = None  # required when low-latency
    minimum_update_period: float | None = None  # None: one segment duration
    min_buffer_time: float | None = None  # None: one segment (LL: one part)
    suggested_presentation_delay: float | None = None
    ended: bool = False
    media_presentation_duration: float | None = None  # when ended
    # Encryption signalling: on every AdaptationSet; audio may use its own (None: same).
    content_protection: tuple[ContentProtection, ...] = ()
    audio_content_protection: tuple[ContentProtection, ...] | None = None
    # Redundant origins (package.steering): MPD-level BaseURLs as (absolute URL, serviceLocation),
    # in priority order; players move to the next on errors (DASH-IF IOP 4.3, 23009-1 5.6).
    base_urls: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if not self.periods:
            raise ValueError("at least one Period")
        if not self.video and self.audio is None:
            raise ValueError("at least one Representation")
        if self.part_duration is not None:
            if not 0 < self.part_duration < self.segment_duration:
                raise ValueError("part_duration must be in (0, segment_duration)")
            if self.latency is None:
                raise ValueError("low-latency MPD needs a LatencyTarget")

    @property
    def low_latency(self) -> bool:
        return self.part_duration is not None

    @property
    def chunked(self) -> bool:
        """Low-latency signalling applies while live; an ended (static) MPD drops it."""
        return self.part_duration is not None and not self.ended

    @property
    def availability_time_offset(self) -> float | None:
        """ATO: a segment's first chunk is available one chunk after its start, i.e.
        segment_duration - part_duration before the whole segment is (DASH-IF LL 9.X)."""
        if self.part_duration is None:
            return None
        return round(self.segment_duration - self.part_duration, 6)


def _content_protection(parent: ET.Element, cps: tuple[ContentProtection, ...]) -> None:
    # Prefixed names are written literally; render_mpd declares the prefixes on the root.
    for cp in cps:
        attrs = {"schemeIdUri": cp.scheme_id_uri}
        if cp.value is not None:
            attrs["value"] = cp.value
        if cp.default_kid is not None:
            attrs["cenc:default_KID"] = cp.default_kid
        el = ET.SubElement(parent, "ContentProtection", attrs)
        if cp.laurl is not None:
            ET.SubElement(el, "dashif:Laurl").text = cp.laurl
        if cp.clearkey_laurl is not None:
            ET.SubElement(el, "clearkey:Laurl", {"Lic_type": "EME-1.0"}).text = cp.clearkey_laurl
        if cp.pssh is not None:
            ET.SubElement(el, "cenc:pssh").text = cp.pssh
        if cp.pro is not None:
            ET.SubElement(el, "mspr:pro").text = cp.pro


def _all_protection(mpd: LiveMpd) -> tuple[ContentProtection, ...]:
    out = mpd.content_protection + (mpd.audio_content_protection or ())
    for p in mpd.periods:
        out += (p.content_protection or ()) + (p.audio_content_protection or ())
    return out


def _utc_timing(parent: ET.Element, url: str) -> None:
    ET.SubElement(parent, "UTCTiming", schemeIdUri=UTC_HTTP_XSDATE, value=url)


def _adaptation_set(
    period_el: ET.Element,
    mpd: LiveMpd,
    period: MpdPeriod,
    reps: tuple[DashRepresentation, ...],
    set_id: int,
) -> None:
    kind = reps[0].track.kind
    attrs = {
        "id": str(set_id),
        "contentType": kind,
        "mimeType": f"{kind}/mp4",
        "segmentAlignment": "true",
        "startWithSAP": "1",
    }
    if kind == "video":
        attrs["maxWidth"] = str(max(r.track.width for r in reps))
        attrs["maxHeight"] = str(max(r.track.height for r in reps))
        rates = {r.frame_rate for r in reps if r.frame_rate}
        if len(rates) == 1:
            attrs["frameRate"] = rates.pop()
    else:
        attrs["lang"] = "und"
    aset = ET.SubElement(period_el, "AdaptationSet", attrs)
    timescale = reps[0].track.timescale
    if any(r.track.timescale != timescale for r in reps):
        raise ValueError("Representations of one AdaptationSet must share a timescale")
    pto = round(period.presentation_time * timescale)
    if kind == "audio" and reps[0].track.channels:
        ET.SubElement(
            aset,
            "AudioChannelConfiguration",
            schemeIdUri="urn:mpeg:dash:23003:3:audio_channel_configuration:2011",
            value=str(reps[0].track.channels),
        )
    # Schema order: ContentProtection follows AudioChannelConfiguration (RepresentationBase).
    cps = mpd.content_protection
    if kind == "audio" and mpd.audio_content_protection is not None:
        cps = mpd.audio_content_protection
    if period.content_protection is not None:
        cps = period.content_protection
        if kind == "audio" and period.audio_content_protection is not None:
            cps = period.audio_content_protection
    _content_protection(aset, cps)
    if mpd.chunked:
        # Schema order: ProducerReferenceTime is a RepresentationBase child, before
        # SegmentTemplate. Same UTCTiming as the MPD (DASH-IF LL).
        wall = period.wall_clock
        if wall is None:
            wall = mpd.availability_start_time + period.start
        prt = ET.SubElement(
            aset,
            "ProducerReferenceTime",
            id=str(set_id),
            type="encoder",
            wallClockTime=format_datetime(wall),
            presentationTime=str(pto),
        )
        _utc_timing(prt, mpd.utc_timing_url)
    if kind == "audio":
        ET.SubElement(aset, "Role", schemeIdUri="urn:mpeg:dash:role:2011", value="main")
    st = {
        "timescale": str(timescale),
        "duration": str(round(mpd.segment_duration * timescale)),
        "startNumber": str(period.start_number),
        "presentationTimeOffset": str(pto),
        "media": MEDIA_TEMPLATE,
        "initialization": period.initialization or INIT_TEMPLATE,
    }
    if period.end_number is not None:
        st["endNumber"] = str(period.end_number)
    if mpd.chunked:
        st["availabilityTimeOffset"] = _num(mpd.availability_time_offset or 0, 6)
        st["availabilityTimeComplete"] = "false"
    ET.SubElement(aset, "SegmentTemplate", st)
    for r in reps:
        rattrs = {"id": r.id, "codecs": r.track.codec, "bandwidth": str(r.bandwidth)}
        if kind == "video":
            rattrs["width"] = str(r.track.width)
            rattrs["height"] = str(r.track.height)
            if r.frame_rate:
                rattrs["frameRate"] = r.frame_rate
            rattrs["sar"] = "1:1"
        else:
            if r.track.sample_rate:
                rattrs["audioSamplingRate"] = str(r.track.sample_rate)
        ET.SubElement(aset, "Representation", rattrs)


def render_mpd(mpd: LiveMpd) -> bytes:
    """The MPD (manifest.mpd): dynamic while live, static once ended."""
    static = mpd.ended
    attrs = {
        "xmlns": MPD_NS,
        "profiles": ",".join([PROFILE_LIVE, PROFILE_CMAF] + ([PROFILE_LL] if mpd.chunked else [])),
        "type": "static" if static else "dynamic",
    }
    protection = _all_protection(mpd)
    if protection:
        attrs["xmlns:cenc"] = CENC_NS
        if any(cp.laurl is not None for cp in protection):
            attrs["xmlns:dashif"] = DASHIF_CPS_NS
        if any(cp.clearkey_laurl is not None for cp in protection):
            attrs["xmlns:clearkey"] = CLEARKEY_NS
        if any(cp.pro is not None for cp in protection):
            attrs["xmlns:mspr"] = MSPR_NS
    max_seg = mpd.segment_duration
    if static:
        duration = mpd.media_presentation_duration
        if duration is None:
            raise ValueError("an ended MPD needs media_presentation_duration")
        attrs["mediaPresentationDuration"] = format_duration(duration)
        attrs["availabilityStartTime"] = format_datetime(mpd.availability_start_time)
    else:
        attrs["availabilityStartTime"] = format_datetime(mpd.availability_start_time)
        attrs["publishTime"] = format_datetime(mpd.publish_time)
        mup = mpd.minimum_update_period if mpd.minimum_update_period is not None else mpd.segment_duration
        attrs["minimumUpdatePeriod"] = format_duration(mup)
        attrs["timeShiftBufferDepth"] = format_duration(mpd.time_shift_buffer_depth)
        if mpd.suggested_presentation_delay is not None:
            attrs["suggestedPresentationDelay"] = format_duration(mpd.suggested_presentation_delay)
    if static:
        attrs["publishTime"] = format_datetime(mpd.publish_time)
    attrs["maxSegmentDuration"] = format_duration(max_seg)
    mbt = mpd.min_buffer_time
    if mbt is None:
        mbt = mpd.part_duration if mpd.chunked else mpd.segment_duration
    attrs["minBufferTime"] = format_duration(mbt or mpd.segment_duration)
    root = ET.Element("MPD", attrs)

    # Schema order: ProgramInformation, BaseURL*, Location, ... ServiceDescription, Period+, ..., UTCTiming.
    for url, location in mpd.base_urls:
        ET.SubElement(root, "BaseURL", serviceLocation=location).text = url
    if mpd.chunked and mpd.latency is not None:
        sd = ET.SubElement(root, "ServiceDescription", id="0")
        lat = mpd.latency
        ET.SubElement(
            sd,
            "Latency",
            referenceId="0",
            target=str(lat.target_ms),
            min=str(lat.min_ms),
            max=str(lat.max_ms),
        )
        ET.SubElement(sd, "PlaybackRate", min=_num(lat.playback_rate_min), max=_num(lat.playback_rate_max))
    for period in mpd.periods:
        pel = ET.SubElement(root, "Period", id=period.id, start=format_duration(period.start))
        set_id = 0
        if mpd.video:
            _adaptation_set(pel, mpd, period, mpd.video, set_id)
            set_id += 1
        if mpd.audio is not None:
            _adaptation_set(pel, mpd, period, (mpd.audio,), set_id)
    _utc_timing(root, mpd.utc_timing_url)
    ET.indent(root)
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="utf-8", xml_declaration=False) + b"\n"
