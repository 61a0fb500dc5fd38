"""DASH / LL-DASH MPD rendering: render -> parse -> check (standards.md section 2)."""

from __future__ import annotations

import dataclasses
import xml.etree.ElementTree as ET
from datetime import datetime, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowcast.media.types import TrackInfo
from flowcast.package.conformance import check_mpd
from flowcast.package.dash import (
    PROFILE_CMAF,
    PROFILE_LIVE,
    PROFILE_LL,
    UTC_HTTP_XSDATE,
    DashRepresentation,
    LatencyTarget,
    LiveMpd,
    MpdPeriod,
    format_duration,
    render_mpd,
)
from flowcast.package.mpd import MpdError, parse_duration, parse_mpd

AST = 1_764_000_000.0
UTC_URL = "https://origin.example/time"
V720 = DashRepresentation("720p", TrackInfo(1, "video", 90000, "avc1.64001f", 1280, 720), 3_000_000, "30")
V360 = DashRepresentation("360p", TrackInfo(1, "video", 90000, "avc1.42e01e", 640, 360), 900_000, "30")
AUD = DashRepresentation("audio", TrackInfo(2, "audio", 48000, "mp4a.40.2", sample_rate=48000, channels=2), 128_000)
LAT = LatencyTarget(target_ms=3000, min_ms=1500, max_ms=6000, playback_rate_min=0.96, playback_rate_max=1.04)


def ll_mpd(**kw: object) -> LiveMpd:
    base = dict(
        availability_start_time=AST,
        publish_time=AST + 600.0,
        periods=(MpdPeriod("p0", 0.0, 0, presentation_time=0.0),),
        video=(V720, V360),
        audio=AUD,
        segment_duration=2.0,
        part_duration=0.5,
        latency=LAT,
        utc_timing_url=UTC_URL,
        time_shift_buffer_depth=120.0,
    )
    base.update(kw)
    return LiveMpd(**base)  # type: ignore[arg-type]


def test_ll_mpd_conforms() -> None:
    assert check_mpd(render_mpd(ll_mpd())) == []


def test_rendering_is_pure() -> None:
    m = ll_mpd()
    assert render_mpd(m) == render_mpd(m)
    with pytest.raises(dataclasses.FrozenInstanceError):
        m.ended = True  # type: ignore[misc]
    ET.fromstring(render_mpd(m))  # well-formed XML


def test_mpd_top_level_attributes() -> None:
    m = parse_mpd(render_mpd(ll_mpd()))
    assert m.type == "dynamic"
    assert m.profiles == (PROFILE_LIVE, PROFILE_CMAF, PROFILE_LL)  # LL profile SHOULD be listed
    assert m.availability_start_time == datetime.fromtimestamp(AST, tz=timezone.utc)
    assert m.publish_time == datetime.fromtimestamp(AST + 600, tz=timezone.utc)
    assert m.minimum_update_period == 2.0
    assert m.time_shift_buffer_depth == 120.0
    assert m.max_segment_duration == 2.0
    assert m.min_buffer_time == 0.5
    assert m.media_presentation_duration is None


def test_service_description_latency_and_playback_rate() -> None:
    m = parse_mpd(render_mpd(ll_mpd()))
    (sd,) = m.service_descriptions
    assert (sd.latency_target, sd.latency_min, sd.latency_max) == (3000, 1500, 6000)
    assert (sd.playback_rate_min, sd.playback_rate_max) == (0.96, 1.04)
    assert sd.latency_reference_id == "0"
    prt_ids = {p.id for a in m.periods[0].adaptation_sets for p in a.producer_reference_times}
    assert sd.latency_reference_id in prt_ids


def test_utc_timing_scheme_and_url() -> None:
    m = parse_mpd(render_mpd(ll_mpd()))
    assert [(u.scheme_id_uri, u.value) for u in m.utc_timings] == [(UTC_HTTP_XSDATE, UTC_URL)]


def test_adaptation_sets_and_representations() -> None:
    (period,) = parse_mpd(render_mpd(ll_mpd())).periods
    assert (period.id, period.start) == ("p0", 0.0)
    video, audio = period.adaptation_sets
    assert video.kind == "video" and audio.kind == "audio"
    assert video.segment_alignment and video.start_with_sap == 1
    assert [(r.id, r.codecs, r.bandwidth, r.width, r.height, r.frame_rate) for r in video.representations] == [
        ("720p", "avc1.64001f", 3_000_000, 1280, 720, "30"),
        ("360p", "avc1.42e01e", 900_000, 640, 360, "30"),
    ]
    assert [(r.id, r.codecs, r.audio_sampling_rate) for r in audio.representations] == [("audio", "mp4a.40.2", "48000")]


def test_segment_template_low_latency_attributes() -> None:
    (period,) = parse_mpd(render_mpd(ll_mpd())).periods
    for aset, timescale in zip(period.adaptation_sets, (90000, 48000)):
        t = aset.segment_template
        assert t is not None
        assert t.timescale == timescale
        assert t.duration == 2 * timescale
        assert t.start_number == 0
        assert t.presentation_time_offset == 0
        assert t.media == "$RepresentationID$/$Number$.m4s"
        assert t.initialization == "$RepresentationID$/init.mp4"
        assert t.availability_time_offset == pytest.approx(1.5)  # segment - part
        assert 0 < t.availability_time_offset < 2.0  # > 0, < max segment duration
        assert 2.0 - t.availability_time_offset < LAT.target_ms / 1000  # (maxSegDur - ATO) < target
        assert t.availability_time_complete is False
        assert not t.has_timeline


def test_producer_reference_time_per_adaptation_set() -> None:
    mpd = ll_mpd(periods=(MpdPeriod("p0", 0.0, 0, presentation_time=10.0, wall_clock=AST + 3.25),))
    (period,) = parse_mpd(render_mpd(mpd)).periods
    ids = []
    for aset, timescale in zip(period.adaptation_sets, (90000, 48000)):
        (prt,) = aset.producer_reference_times
        ids.append(prt.id)
        assert prt.type == "encoder"
        assert prt.wall_clock_time == datetime.fromtimestamp(AST + 3.25, tz=timezone.utc)
        assert prt.presentation_time == 10 * timescale
        assert [(u.scheme_id_uri, u.value) for u in prt.utc_timings] == [(UTC_HTTP_XSDATE, UTC_URL)]
        assert aset.segment_template is not None
        assert aset.segment_template.presentation_time_offset == 10 * timescale
    assert len(set(ids)) == 2


def test_element_order_follows_schema() -> None:
    root = ET.fromstring(render_mpd(ll_mpd()))
    local = [c.tag.split("}")[1] for c in root]
    assert local == ["ServiceDescription", "Period", "UTCTiming"]
    aset = root.find("{urn:mpeg:dash:schema:mpd:2011}Period/{urn:mpeg:dash:schema:mpd:2011}AdaptationSet")
    assert aset is not None
    names = [c.tag.split("}")[1] for c in aset]
    assert names.index("ProducerReferenceTime") < names.index("SegmentTemplate") < names.index("Representation")


def test_new_period_after_encoder_restart() -> None:
    periods = (
        MpdPeriod("p0", 0.0, 0, presentation_time=0.0),
        MpdPeriod("p1", 300.0, 150, presentation_time=0.0, wall_clock=AST + 300.0),
    )
    m = parse_mpd(render_mpd(ll_mpd(periods=periods)))
    assert [(p.id, p.start) for p in m.periods] == [("p0", 0.0), ("p1", 300.0)]
    t = m.periods[1].adaptation_sets[0].segment_template
    assert t is not None and t.start_number == 150
    assert check_mpd(render_mpd(ll_mpd(periods=periods))) == []


def test_broadcast_mpd_has_no_low_latency_bits() -> None:
    raw = render_mpd(ll_mpd(part_duration=None, latency=None, segment_duration=6.0))
    m = parse_mpd(raw)
    assert PROFILE_LL not in m.profiles
    assert m.service_descriptions == ()
    for aset in m.periods[0].adaptation_sets:
        assert aset.producer_reference_times == ()
        t = aset.segment_template
        assert t is not None and t.availability_time_offset is None and t.availability_time_complete is None
    assert m.min_buffer_time == 6.0
    assert [(u.scheme_id_uri, u.value) for u in m.utc_timings] == [(UTC_HTTP_XSDATE, UTC_URL)]
    assert check_mpd(raw) == []


def test_ended_mpd_is_static() -> None:
    raw = render_mpd(ll_mpd(part_duration=None, latency=None, ended=True, media_presentation_duration=3600.5))
    m = parse_mpd(raw)
    assert m.type == "static"
    assert m.media_presentation_duration == 3600.5
    assert m.minimum_update_period is None and m.time_shift_buffer_depth is None
    assert check_mpd(raw) == []
    with pytest.raises(ValueError):
        render_mpd(ll_mpd(ended=True))


def test_model_validation() -> None:
    with pytest.raises(ValueError):
        ll_mpd(periods=())
    with pytest.raises(ValueError):
        ll_mpd(part_duration=2.0)  # ATO would be 0
    with pytest.raises(ValueError):
        ll_mpd(latency=None)
    with pytest.raises(ValueError):
        ll_mpd(video=(), audio=None)


def test_duration_formats() -> None:
    assert format_duration(2.0) == "PT2S"
    assert format_duration(0.5) == "PT0.5S"
    assert parse_duration("PT2S") == 2.0
    assert parse_duration("PT1H2M3.5S") == 3723.5
    assert parse_duration("P1DT1S") == 86401.0
    for bad in ("", "P", "PT", "2S", "PTxS", "P1DT"):
        with pytest.raises(MpdError):
            parse_duration(bad)


@pytest.mark.parametrize(
    "bad",
    [
        b"",
        b"<not-xml",
        b"<Other/>",
        b'<!DOCTYPE x [<!ENTITY a "b">]><MPD/>',
        b'<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" availabilityStartTime="yesterday"/>',
        b'<MPD><Period><AdaptationSet><Representation bandwidth="1"/></AdaptationSet></Period></MPD>',
        b'<MPD><Period><AdaptationSet><Representation id="a" bandwidth="x"/></AdaptationSet></Period></MPD>',
        b'<MPD><Period><AdaptationSet><SegmentTemplate availabilityTimeComplete="maybe"/></AdaptationSet></Period></MPD>',
        b'<MPD maxSegmentDuration="2 seconds"/>',
    ],
)
def test_parser_rejects(bad: bytes) -> None:
    with pytest.raises(MpdError):
        parse_mpd(bad)


_GOOD = render_mpd(ll_mpd()).decode()


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.text(),
        st.binary(),
        # mutate a real MPD: drop a slice, or splice random text in
        st.tuples(st.integers(0, len(_GOOD)), st.integers(0, 200), st.text(max_size=30)).map(
            lambda t: _GOOD[: t[0]] + t[2] + _GOOD[t[0] + t[1] :]
        ),
    )
)
def test_fuzz_parser_raises_only_mpd_error(data: str | bytes) -> None:
    try:
        parse_mpd(data)
    except MpdError:
        pass
    check_mpd(data)  # never raises


@settings(max_examples=100, deadline=None)
@given(
    st.sampled_from([(2.0, 0.5), (1.0, 0.2), (4.0, 1.0), (2.002, 1001 / 3000), (6.0, 0.5)]),
    st.integers(0, 10**6),
    st.floats(0, 10**5, allow_nan=False),
)
def test_property_ll_mpd_conforms(timing: tuple[float, float], start_number: int, pt: float) -> None:
    seg, part = timing
    mpd = ll_mpd(
        segment_duration=seg,
        part_duration=part,
        periods=(MpdPeriod("p", 0.0, start_number, presentation_time=pt),),
        latency=LatencyTarget(int(1000 * (part + 1.5)), 500, 10_000),
    )
    assert check_mpd(render_mpd(mpd)) == []


def test_ended_low_latency_mpd_drops_chunked_signalling() -> None:
    raw = render_mpd(ll_mpd(ended=True, media_presentation_duration=600.0))
    m = parse_mpd(raw)
    assert m.type == "static"
    assert PROFILE_LL not in m.profiles and m.service_descriptions == ()
    t = m.periods[0].adaptation_sets[0].segment_template
    assert t is not None and t.availability_time_complete is None and t.availability_time_offset is None
    assert check_mpd(raw) == []
