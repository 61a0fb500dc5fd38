"""Redundant origins in the sans-I/O layer: Content Steering pathways in the multivariant
playlist, the steering manifest, MPD BaseURLs, and the epoch-aligned numbering."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flowcast.config import ConfigError, parse_config
from flowcast.media.types import TrackInfo
from flowcast.origin.pipeline import aligned_msn
from flowcast.package import dash, hls, steering
from flowcast.package.m3u8 import parse_multivariant
from flowcast.package.mpd import parse_mpd

VIDEO = TrackInfo(track_id=1, kind="video", timescale=90000, codec="avc1.4d401e", width=640, height=360)
AUDIO = TrackInfo(track_id=1, kind="audio", timescale=48000, codec="mp4a.40.2", sample_rate=48000, channels=2)
ORIGINS = ("http://127.0.0.1:8081", "http://127.0.0.1:8082")


def _master(**kw: object) -> bytes:
    variants = [hls.Variant("360p", VIDEO, 660_000, 600_000, 30.0), hls.Variant("180p", VIDEO, 300_000, 250_000, 30.0)]
    audio = hls.AudioRendition(AUDIO, 96_000, 96_000)
    return hls.render_multivariant(variants, audio, **kw)  # type: ignore[arg-type]


def test_multivariant_lists_every_variant_once_per_pathway() -> None:
    pws = steering.pathways(ORIGINS, "/live/live/")
    text = _master(pathways=pws, content_steering=steering.content_steering_attrs("steering.json", pws[0].id))
    mv = parse_multivariant(text)
    assert [(v.attributes["PATHWAY-ID"], v.uri) for v in mv.variants] == [
        ("origin-1", "http://127.0.0.1:8081/live/live/360p/index.m3u8"),
        ("origin-1", "http://127.0.0.1:8081/live/live/180p/index.m3u8"),
        ("origin-2", "http://127.0.0.1:8082/live/live/360p/index.m3u8"),
        ("origin-2", "http://127.0.0.1:8082/live/live/180p/index.m3u8"),
    ]
    # each pathway's variants name an audio group of that pathway, with that origin's URI
    groups = {m.group_id: m.uri for m in mv.media}
    assert groups == {
        "aud-origin-1": "http://127.0.0.1:8081/live/live/audio/index.m3u8",
        "aud-origin-2": "http://127.0.0.1:8082/live/live/audio/index.m3u8",
    }
    assert all(v.audio == f"aud-{v.attributes['PATHWAY-ID']}" for v in mv.variants)
    assert '#EXT-X-CONTENT-STEERING:SERVER-URI="steering.json",PATHWAY-ID="origin-1"' in mv.unknown_tags


def test_single_origin_multivariant_is_unchanged() -> None:
    text = _master().decode()
    assert "PATHWAY-ID" not in text and "CONTENT-STEERING" not in text and "http" not in text
    assert 'GROUP-ID="aud"' in text and "\n360p/index.m3u8\n" in text


def test_steering_manifest_round_trip_and_errors() -> None:
    m = steering.SteeringManifest(("origin-1", "origin-2"), ttl=10, reload_uri="steering.json")
    doc = json.loads(m.render())
    assert doc == {"VERSION": 1, "TTL": 10, "RELOAD-URI": "steering.json", "PATHWAY-PRIORITY": ["origin-1", "origin-2"]}
    assert steering.parse_steering_manifest(m.render()) == m
    for bad, why in (
        (b"[]", "JSON object"),
        (b"{", "not JSON"),
        (b'{"VERSION":2,"TTL":1,"PATHWAY-PRIORITY":["a"]}', "VERSION"),
        (b'{"VERSION":1,"TTL":0,"PATHWAY-PRIORITY":["a"]}', "TTL"),
        (b'{"VERSION":1,"TTL":5,"PATHWAY-PRIORITY":[]}', "PATHWAY-PRIORITY"),
        (b'{"VERSION":1,"TTL":5,"PATHWAY-PRIORITY":["a b"]}', "PATHWAY-PRIORITY"),
    ):
        with pytest.raises(steering.SteeringError, match=why):
            steering.parse_steering_manifest(bad)
    with pytest.raises(steering.SteeringError):
        steering.SteeringManifest(()).render()


def test_steering_request_and_priority() -> None:
    assert steering.parse_steering_query("_HLS_pathway=origin-2&_HLS_throughput=5000000") == steering.SteeringRequest(
        "origin-2", 5_000_000
    )
    with pytest.raises(steering.SteeringError, match="_HLS_throughput"):
        steering.parse_steering_query("_HLS_throughput=-1")
    with pytest.raises(steering.SteeringError, match="_HLS_pathway"):
        steering.parse_steering_query('_HLS_pathway="x"')
    assert steering.priority_for(("a", "b", "c"), frozenset({"a"})) == ("b", "c", "a")
    with pytest.raises(steering.SteeringError):
        steering.pathways(("ftp://x",), "/live/live/")
    with pytest.raises(steering.SteeringError):
        steering.content_steering_attrs('a"b', "origin-1")


def test_mpd_base_urls_render_and_parse() -> None:
    mpd = dash.LiveMpd(
        availability_start_time=0.0,
        publish_time=1_795_000_000.0,
        periods=(dash.MpdPeriod("p1", 1_795_000_000.0, 897_500_000, 1_795_000_000.0, 1_795_000_000.0),),
        video=(dash.DashRepresentation("360p", VIDEO, 660_000, "30"),),
        audio=dash.DashRepresentation("audio", AUDIO, 96_000),
        segment_duration=2.0,
        utc_timing_url="/time",
        time_shift_buffer_depth=60.0,
        part_duration=0.5,
        latency=dash.LatencyTarget(1500, 1000, 3000),
        base_urls=tuple((p.base, p.id) for p in steering.pathways(ORIGINS, "/live/live/")),
    )
    text = dash.render_mpd(mpd)
    parsed = parse_mpd(text)
    assert parsed.base_urls == (("http://127.0.0.1:8081/live/live/", "origin-1"), ("http://127.0.0.1:8082/live/live/", "origin-2"))
    # schema order: BaseURL before ServiceDescription and Period
    assert text.index(b"<BaseURL") < text.index(b"<ServiceDescription") < text.index(b"<Period")
    assert b'availabilityStartTime="1970-01-01T00:00:00.000Z"' in text
    assert b'startNumber="897500000"' in text


def test_config_redundant_errors_name_the_field() -> None:
    cfg = parse_config({"origin": {"redundant": [ORIGINS[0] + "/", ORIGINS[1]]}})
    assert cfg.origin.redundant == ORIGINS
    for bad in (
        [ORIGINS[0]],
        [ORIGINS[0], ORIGINS[0]],
        [ORIGINS[0], "ftp://127.0.0.1:1"],
        [ORIGINS[0], "http://127.0.0.1:1/live"],
        [ORIGINS[0], "http://user:pw@127.0.0.1:1"],
    ):
        with pytest.raises(ConfigError, match=r"origin\.redundant"):
            parse_config({"origin": {"redundant": bad}})


def test_aligned_msn_is_the_segment_slot_of_the_wall_clock() -> None:
    assert aligned_msn(1_795_619_680.0, 2.0) == 897_809_840
    assert aligned_msn(1_795_619_680.9, 2.0) == 897_809_840  # a run starting off the grid takes its slot
    assert aligned_msn(1_795_619_681.1, 2.0) == 897_809_841
    assert aligned_msn(0.0, 6.0) == 0


@given(t=st.floats(min_value=0, max_value=4e9), d=st.sampled_from([1.0, 2.0, 4.0, 6.0]), delta=st.floats(-0.49, 0.49))
def test_two_origins_started_apart_number_alike(t: float, d: float, delta: float) -> None:
    """Two encoders whose runs start up to half a segment apart give the same media the same MSN."""
    a = aligned_msn(round(t / d) * d, d)
    b = aligned_msn(round(t / d) * d + delta * d, d)
    assert a == b
