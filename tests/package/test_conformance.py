"""The conformance checker: it accepts what the renderers produce and flags each rule of
standards.md sections 1 and 2 when a document breaks it (one negative test per rule)."""

from __future__ import annotations

import re

import pytest

from flowcast.media.types import TrackInfo
from flowcast.package.conformance import (
    WARNING,
    check_media_playlist,
    check_media_playlist_update,
    check_mpd,
    check_multivariant,
    errors,
)
from flowcast.package.dash import DashRepresentation, LatencyTarget, LiveMpd, MpdPeriod, render_mpd
from flowcast.package.hls import (
    AudioRendition,
    MediaPlaylist,
    Variant,
    render_media_playlist,
    next_part_hint,
    render_multivariant,
    rendition_report,
)
from flowcast.package.m3u8 import parse_media_playlist
from flowcast.package.model import Part, Segment

T0 = 1_764_000_000.0
NAMES = ("720p", "360p", "audio")


def seg(msn: int, d: float = 2.0, pt: float = 0.5) -> Segment:
    n = round(d / pt)
    parts = tuple(Part(msn, i, msn * d + i * pt, pt, i == 0, b"") for i in range(n))
    return Segment(msn, msn * d, d, parts, False, T0 + msn * d, b"")


def playlist(name: str = "720p", *, count: int = 20, pending: int = 2, ended: bool = False) -> MediaPlaylist:
    segs = tuple(seg(m) for m in range(100, 100 + count))
    nxt = 100 + count
    return MediaPlaylist(
        target_duration=2,
        segments=segs,
        part_target=0.5,
        pending_parts=() if ended else seg(nxt).parts[:pending],
        next_part=None if ended else (nxt, pending),
        rendition_reports=tuple(
            rendition_report(o, nxt, pending - 1) if pending else rendition_report(o, nxt - 1, 3)
            for o in NAMES
            if o != name
        ),
        ended=ended,
    )


GOOD = render_media_playlist(playlist()).decode()
DELTA = render_media_playlist(playlist(), skip=True).decode()
REPORT_URIS = ["../360p/index.m3u8", "../audio/index.m3u8"]


def sub(pattern: str, repl: str, text: str = GOOD, count: int = 0) -> str:
    out, n = re.subn(pattern, repl, text, count=count, flags=re.M)
    assert n, f"pattern {pattern!r} not found"
    return out


def flagged(text: str, needle: str, **kw: object) -> None:
    found = check_media_playlist(text, **kw)  # type: ignore[arg-type]
    assert any(needle in v for v in found), found


def test_good_playlists_pass() -> None:
    assert check_media_playlist(GOOD, expected_reports=REPORT_URIS) == []
    assert check_media_playlist(DELTA, expected_reports=REPORT_URIS) == []


# --- 4.4.3.7 / 4.4.3.8 -----------------------------------------------------------------


def test_part_inf_required_when_parts() -> None:
    flagged(sub(r"^#EXT-X-PART-INF:.*\n", ""), "EXT-X-PART-INF")


def test_can_skip_until_at_least_six_target_durations() -> None:
    flagged(sub(r"CAN-SKIP-UNTIL=12\.0", "CAN-SKIP-UNTIL=11.0"), "CAN-SKIP-UNTIL")


def test_hold_back_at_least_three_target_durations() -> None:
    flagged(sub(r"HOLD-BACK=6\.0", "HOLD-BACK=5.0"), "HOLD-BACK")


def test_part_hold_back_at_least_two_part_targets() -> None:
    bad = sub(r"PART-HOLD-BACK=1\.5", "PART-HOLD-BACK=0.9")
    assert any("PART-HOLD-BACK" in v and not v.startswith(WARNING) for v in check_media_playlist(bad))


def test_part_hold_back_below_three_part_targets_is_a_warning() -> None:
    bad = sub(r"PART-HOLD-BACK=1\.5", "PART-HOLD-BACK=1.2")
    found = check_media_playlist(bad)
    assert found and all(v.startswith(WARNING) for v in found)
    assert errors(found) == []


def test_part_hold_back_required_with_part_inf() -> None:
    flagged(sub(r",PART-HOLD-BACK=1\.5", ""), "PART-HOLD-BACK is REQUIRED")


def test_blocking_reload_offered_with_parts() -> None:
    flagged(sub(r"CAN-BLOCK-RELOAD=YES,", ""), "CAN-BLOCK-RELOAD")


def test_extinf_within_target_duration() -> None:
    flagged(sub(r"^#EXTINF:2\.0,\n100\.m4s", "#EXTINF:2.6,\n100.m4s"), "TARGETDURATION")


# --- 4.4.4.9 EXT-X-PART -------------------------------------------------------------


def test_part_duration_not_above_part_target() -> None:
    flagged(sub(r'DURATION=0\.5,URI="119\.1\.m4s"', 'DURATION=0.6,URI="119.1.m4s"'), "> PART-TARGET")


def test_part_duration_at_least_85_percent() -> None:
    flagged(sub(r'DURATION=0\.5,URI="119\.1\.m4s"', 'DURATION=0.4,URI="119.1.m4s"'), "< 85%")


@pytest.mark.parametrize(
    ("pattern", "repl"),
    [
        # the last part of a segment may be short
        (r'DURATION=0\.5,URI="119\.3\.m4s"', 'DURATION=0.2,URI="119.3.m4s"'),
        # independent parts may be short
        (r'DURATION=0\.5,URI="119\.0\.m4s"', 'DURATION=0.2,URI="119.0.m4s"'),
        # gap parts and the part before a gap part may be short
        (r'DURATION=0\.5,URI="119\.1\.m4s"\n#EXT-X-PART:DURATION=0\.5,URI="119\.2\.m4s"',
         'DURATION=0.2,URI="119.1.m4s"\n#EXT-X-PART:DURATION=0.2,URI="119.2.m4s",GAP=YES'),
    ],
)
def test_short_parts_allowed_by_the_exceptions(pattern: str, repl: str) -> None:
    assert check_media_playlist(sub(pattern, repl)) == []


@pytest.mark.parametrize("tag", ["#EXT-X-DISCONTINUITY", '#EXT-X-KEY:METHOD=NONE', '#EXT-X-MAP:URI="init.mp4"',
                                 "#EXT-X-PROGRAM-DATE-TIME:2025-11-24T16:00:00.000Z"])
def test_segment_tags_before_first_part(tag: str) -> None:
    bad = sub(r'^(#EXT-X-PART:DURATION=0\.5,URI="119\.0\.m4s",INDEPENDENT=YES)$', r"\1\n" + tag)
    flagged(bad, "after the first EXT-X-PART")


def test_part_tags_more_than_three_target_durations_old_warn() -> None:
    bad = sub(r"^(#EXTINF:2\.0,\n105\.m4s)", '#EXT-X-PART:DURATION=0.5,URI="105.0.m4s",INDEPENDENT=YES\n' + r"\1")
    found = check_media_playlist(bad)
    assert any("[6.2.2]" in v and v.startswith(WARNING) for v in found), found


# --- 4.4.5.3 EXT-X-PRELOAD-HINT -----------------------------------------------------


def test_at_most_one_preload_hint_per_type() -> None:
    bad = sub(r'^(#EXT-X-PRELOAD-HINT:.*)$', r'\1\n#EXT-X-PRELOAD-HINT:TYPE=PART,URI="120.3.m4s"')
    flagged(bad, "more than one EXT-X-PRELOAD-HINT")


def test_no_preload_hint_after_endlist() -> None:
    flagged(GOOD + "#EXT-X-ENDLIST\n", "ENDLIST")


def test_preload_hint_type_part_or_map() -> None:
    flagged(sub(r"TYPE=PART,URI=\"120", 'TYPE=SEGMENT,URI="120'), "not PART or MAP")


def test_preload_hint_uri_required() -> None:
    flagged(sub(r'TYPE=PART,URI="120\.2\.m4s"', "TYPE=PART"), "unparseable")


def test_preload_hint_must_match_part_later_added() -> None:
    before = GOOD
    after = render_media_playlist(playlist(pending=3)).decode()
    assert check_media_playlist_update(before, after) == []
    renamed = after.replace('URI="120.2.m4s"', 'URI="120.2b.m4s"')
    assert any("[6.2.6]" in v for v in check_media_playlist_update(before, renamed))


# --- live timing (6.2.1, 6.2.2) -----------------------------------------------------


def test_media_sequence_must_not_decrease() -> None:
    older = sub(r"EXT-X-MEDIA-SEQUENCE:100", "EXT-X-MEDIA-SEQUENCE:99")
    assert any("MEDIA-SEQUENCE decreased" in v for v in check_media_playlist_update(GOOD, older))


def test_target_duration_must_not_change() -> None:
    changed = sub(r"TARGETDURATION:2", "TARGETDURATION:3")
    assert any("TARGETDURATION changed" in v for v in check_media_playlist_update(GOOD, changed))


def test_playlist_must_not_shrink_below_three_target_durations() -> None:
    short = render_media_playlist(playlist(count=2)).decode()
    assert any("shrank" in v for v in check_media_playlist_update(GOOD, short))
    longer = render_media_playlist(playlist(count=3, pending=0)).decode()
    assert check_media_playlist_update(short, longer) == []  # growing from the start is fine


def test_media_sequence_required() -> None:
    flagged(sub(r"^#EXT-X-MEDIA-SEQUENCE:100\n", ""), "MEDIA-SEQUENCE")


def test_program_date_time_required() -> None:
    flagged(sub(r"^#EXT-X-PROGRAM-DATE-TIME:.*\n", ""), "PROGRAM-DATE-TIME")


def test_program_date_time_after_discontinuity() -> None:
    bad = sub(r"^#EXT-X-PROGRAM-DATE-TIME:.*\n(#EXTINF:2\.0,\n110\.m4s)", r"#EXT-X-DISCONTINUITY\n\1")
    flagged(bad, "after a discontinuity")


# --- delta updates (6.2.5.1, 4.4.5.2) -----------------------------------------------


def test_skip_needs_version_9() -> None:
    flagged(sub(r"EXT-X-VERSION:9", "EXT-X-VERSION:8", DELTA), "VERSION >= 9")


def test_skip_needs_can_skip_until() -> None:
    flagged(sub(r"CAN-SKIP-UNTIL=12\.0,", "", DELTA), "without CAN-SKIP-UNTIL")


def test_skip_must_keep_the_skip_boundary() -> None:
    n = int(re.search(r"SKIPPED-SEGMENTS=(\d+)", DELTA).group(1))  # type: ignore[union-attr]
    over = sub(r"SKIPPED-SEGMENTS=\d+", f"SKIPPED-SEGMENTS={n + 3}", DELTA)
    # remove three more segments to make it consistent, then check
    for _ in range(3):
        over = sub(r"^#EXT-X-PROGRAM-DATE-TIME:.*\n#EXTINF:2\.0,\n\d+\.m4s\n", "", over, count=1)
    flagged(over, "Skip Boundary")


def test_no_skip_with_endlist() -> None:
    flagged(sub(r"^(#EXT-X-RENDITION-REPORT.*audio.*)$", r"\1\n#EXT-X-ENDLIST", sub(
        r"^#EXT-X-PRELOAD-HINT.*\n", "", DELTA)), "EXT-X-SKIP in a playlist with EXT-X-ENDLIST")


# --- 4.4.5.4 rendition reports -----------------------------------------------------


def test_rendition_report_per_other_rendition() -> None:
    bad = sub(r"^#EXT-X-RENDITION-REPORT:URI=\"\.\./audio.*\n", "")
    flagged(bad, "no EXT-X-RENDITION-REPORT for ../audio/index.m3u8", expected_reports=REPORT_URIS)


def test_rendition_report_needs_last_msn() -> None:
    flagged(sub(r"LAST-MSN=120,", "", count=1), "without LAST-MSN")


def test_rendition_report_needs_last_part_with_parts() -> None:
    flagged(sub(r",LAST-PART=1", "", count=1), "without LAST-PART")


def test_rendition_report_uri_relative() -> None:
    flagged(sub(r'URI="\.\./360p', 'URI="https://cdn.example/live/360p'), "not relative")


# --- multivariant and cross-playlist rules -------------------------------------------

VIDEO = (
    Variant("720p", TrackInfo(1, "video", 90000, "avc1.64001f", 1280, 720), 3_000_000, 2_500_000, 30.0),
    Variant("360p", TrackInfo(1, "video", 90000, "avc1.42e01e", 640, 360), 900_000, 800_000, 30.0),
)
AUDIO = AudioRendition(TrackInfo(2, "audio", 48000, "mp4a.40.2", sample_rate=48000, channels=2), 128_000)
MASTER = render_multivariant(VIDEO, AUDIO).decode()


def media_set() -> dict[str, str]:
    return {f"{n}/index.m3u8": render_media_playlist(playlist(n)).decode() for n in NAMES}


def test_multivariant_set_passes() -> None:
    assert check_multivariant(MASTER, media_set()) == []


def test_server_control_same_across_media_playlists() -> None:
    media = media_set()
    media["audio/index.m3u8"] = media["audio/index.m3u8"].replace("HOLD-BACK=6.0", "HOLD-BACK=8.0")
    assert any("[6.2.4]" in v for v in check_multivariant(MASTER, media))
    media = media_set()
    media["audio/index.m3u8"] = re.sub(r"^#EXT-X-SERVER-CONTROL:.*\n", "", media["audio/index.m3u8"], flags=re.M)
    assert any("[6.2.4]" in v for v in check_multivariant(MASTER, media))


def test_rendition_reports_checked_across_the_set() -> None:
    media = media_set()
    media["360p/index.m3u8"] = re.sub(r"^#EXT-X-RENDITION-REPORT:URI=\"\.\./720p.*\n", "",
                                      media["360p/index.m3u8"], flags=re.M)
    assert any("360p/index.m3u8" in v and "../720p/index.m3u8" in v for v in check_multivariant(MASTER, media))


def test_part_hold_back_against_max_part_target() -> None:
    media = media_set()
    media["audio/index.m3u8"] = media["audio/index.m3u8"].replace("PART-TARGET=0.5", "PART-TARGET=0.6")
    found = check_multivariant(MASTER, media)
    assert any("max PART-TARGET" in v and v.startswith(WARNING) for v in found), found


def test_variant_audio_group_must_exist() -> None:
    bad = re.sub(r"^#EXT-X-MEDIA:.*\n", "", MASTER, flags=re.M)
    assert any("AUDIO group" in v for v in check_multivariant(bad))


def test_variant_codecs_required_and_complete() -> None:
    assert any("without CODECS" in v for v in check_multivariant(re.sub(r',CODECS="[^"]*"', "", MASTER)))
    assert any("audio codec" in v for v in check_multivariant(MASTER.replace(',mp4a.40.2"', '"')))


def test_content_steering_at_most_once() -> None:
    tag = '#EXT-X-CONTENT-STEERING:SERVER-URI="/steer.json"\n'
    bad = MASTER.replace("#EXT-X-INDEPENDENT-SEGMENTS\n", "#EXT-X-INDEPENDENT-SEGMENTS\n" + tag + tag)
    assert any("CONTENT-STEERING" in v for v in check_multivariant(bad))
    assert check_multivariant(MASTER.replace("#EXT-X-INDEPENDENT-SEGMENTS\n",
                                             "#EXT-X-INDEPENDENT-SEGMENTS\n" + tag)) == []


def test_missing_media_playlist_reported() -> None:
    media = media_set()
    del media["audio/index.m3u8"]
    assert any("audio/index.m3u8 not supplied" in v for v in check_multivariant(MASTER, media))


# --- section 2: LL-DASH ------------------------------------------------------------

UTC = "https://origin.example/time"
MPD = render_mpd(
    LiveMpd(
        availability_start_time=T0,
        publish_time=T0 + 60,
        periods=(MpdPeriod("p0", 0.0, 0),),
        video=(DashRepresentation("720p", VIDEO[0].track, 3_000_000, "30"),),
        audio=DashRepresentation("audio", AUDIO.track, 128_000),
        segment_duration=2.0,
        part_duration=0.5,
        latency=LatencyTarget(3000, 1500, 6000),
        utc_timing_url=UTC,
        time_shift_buffer_depth=60.0,
    )
).decode()


def mflag(text: str, needle: str) -> None:
    found = check_mpd(text)
    assert any(needle in v for v in found), found


def msub(pattern: str, repl: str, text: str = MPD) -> str:
    out, n = re.subn(pattern, repl, text, flags=re.S)
    assert n, pattern
    return out


def test_good_mpd_passes() -> None:
    assert check_mpd(MPD) == []


def test_mpd_service_description_latency_target() -> None:
    mflag(msub(r"<ServiceDescription.*?</ServiceDescription>\s*", ""), "ServiceDescription")
    mflag(msub(r' target="3000"', ""), "Latency@target")


def test_mpd_utc_timing_scheme() -> None:
    mflag(msub(r"<UTCTiming schemeIdUri=\"urn:mpeg:dash:utc:http-xsdate:2014\" value=\"[^\"]*\" />\s*</MPD>",
               '<UTCTiming schemeIdUri="urn:mpeg:dash:utc:direct:2014" value="2025-01-01T00:00:00Z" /></MPD>'),
          "UTCTiming")
    ok = MPD.replace("http-xsdate:2014", "http-iso:2014")  # all three HTTP schemes are fine
    assert check_mpd(ok) == []


def test_mpd_low_latency_profile_should_be_listed() -> None:
    found = check_mpd(MPD.replace(",http://www.dashif.org/guidelines/low-latency-live-v5", ""))
    assert found and all(v.startswith(WARNING) for v in found), found


def test_mpd_producer_reference_time_required() -> None:
    mflag(msub(r"<ProducerReferenceTime.*?</ProducerReferenceTime>\s*", ""), "no ProducerReferenceTime")


def test_mpd_producer_reference_time_type_and_utc() -> None:
    mflag(MPD.replace('type="encoder"', 'type="application"'), "ProducerReferenceTime@type")
    mflag(msub(r"(<ProducerReferenceTime[^>]*>\s*<UTCTiming[^>]*value=\")[^\"]*", r"\1https://other/time"),
          "UTCTiming differs")


def test_mpd_producer_reference_time_unique_ids() -> None:
    dup = msub(r"(<ProducerReferenceTime.*?</ProducerReferenceTime>)", r"\1\1")
    mflag(dup, "not unique")


def test_mpd_template_uses_number() -> None:
    mflag(MPD.replace("$Number$", "$Index$"), "$Number$")


def test_mpd_availability_time_offset_rules() -> None:
    mflag(msub(r' availabilityTimeOffset="[^"]*"', ""), "availabilityTimeOffset missing")
    mflag(MPD.replace('availabilityTimeOffset="1.5"', 'availabilityTimeOffset="0"'), "not > 0")
    mflag(MPD.replace('availabilityTimeOffset="1.5"', 'availabilityTimeOffset="2"'), "not below the maximum")
    # (maxSegDur - ATO) < target latency: 2 - 0.5 = 1.5 s >= a 1.2 s target
    late = MPD.replace('availabilityTimeOffset="1.5"', 'availabilityTimeOffset="0.5"').replace(
        'target="3000" min="1500"', 'target="1200" min="1000"')
    mflag(late, "not below the target latency")


def test_mpd_availability_time_complete_false() -> None:
    mflag(msub(r' availabilityTimeComplete="false"', ""), "availabilityTimeComplete missing")
    mflag(MPD.replace('availabilityTimeComplete="false"', 'availabilityTimeComplete="true"'), "not false")


def test_mpd_dynamic_needs_timing() -> None:
    mflag(msub(r' availabilityStartTime="[^"]*"', ""), "availabilityStartTime")
    mflag(msub(r' publishTime="[^"]*"', ""), "publishTime")


def test_checker_reports_unparseable_documents() -> None:
    assert check_mpd(b"<MPD") and check_mpd(b"<MPD")[0].startswith("unparseable")
    assert check_media_playlist("nope")[0].startswith("unparseable")
    assert check_multivariant("nope")[0].startswith("unparseable")


def test_map_needs_version_6() -> None:
    bad = render_media_playlist(
        MediaPlaylist(target_duration=6, segments=(Segment(0, 0.0, 6.0, (), False, T0, b""),))
    ).decode().replace("EXT-X-VERSION:7", "EXT-X-VERSION:5")
    flagged(bad, "VERSION >= 6")


def test_warnings_are_separable_from_errors() -> None:
    found = ["warning: a", "b"]
    assert errors(found) == ["b"]


# --- the real segmenter's output, published the way the origin does --------------------


def test_segmenter_output_renders_conformant_at_every_publish() -> None:
    """Two encoder runs (a restart at 30 s), video + audio, every publish checked."""
    segmenter = pytest.importorskip("flowcast.package.segmenter")
    from flowcast.media.types import Sample

    tracks = {
        "720p": TrackInfo(1, "video", 90000, "avc1.64001f", 1280, 720),
        "audio": TrackInfo(2, "audio", 48000, "mp4a.40.2", sample_rate=48000, channels=2),
    }
    segs = {n: segmenter.Segmenter(t, segment_duration=2.0, part_target=0.5) for n, t in tracks.items()}
    run = {"offset": 0.0, "wall": T0, "disc": False}
    for s in segs.values():
        s.start_run(timeline_offset=0.0, wallclock_at_zero=T0, discontinuity=False)
    state: dict[str, dict] = {n: {"segments": [], "pending": [], "edge": None, "disc": False} for n in tracks}
    previous: dict[str, str] = {}
    published = 0

    def samples(name: str, t0: float, t1: float) -> list[Sample]:
        if name == "720p":  # 30 fps, IDR every 2 s
            return [Sample(i * 3000, 3000, 0, i % 60 == 0, 0, b"v") for i in range(round(t0 * 30), round(t1 * 30))]
        return [Sample(i * 1024, 1024, 0, True, 0, b"a") for i in range(int(t0 * 48000 / 1024), int(t1 * 48000 / 1024))]

    def publish(name: str) -> None:
        nonlocal published
        st_ = state[name]
        others = tuple(
            rendition_report(o, *state[o]["edge"]) for o in tracks if o != name and state[o]["edge"] is not None
        )
        segments = tuple(st_["segments"][-30:])
        pending = tuple(st_["pending"])
        nxt = next_part_hint(pending, next_msn=segments[-1].msn + 1 if segments else 0, segment_duration=2.0)
        pl = MediaPlaylist(
            target_duration=2,
            segments=segments,
            part_target=0.5,
            pending_parts=pending,
            next_part=nxt,
            rendition_reports=others,
            discontinuity_sequence=sum(1 for s in st_["segments"][:-30] if s.discontinuity),
            # what the origin knows about the segment in production (Parts carry no clock)
            pending_discontinuity=bool(pending) and st_["disc"],
            pending_program_date_time=(run["wall"] + pending[0].start - run["offset"]) if pending else None,
        )
        full = render_media_playlist(pl).decode()
        expected = [f"../{o}/index.m3u8" for o in tracks if o != name and state[o]["edge"] is not None]
        assert check_media_playlist(full, expected_reports=expected) == [], full
        delta = render_media_playlist(pl, skip=True)
        assert check_media_playlist(delta, expected_reports=expected) == []
        if name in previous:
            assert check_media_playlist_update(previous[name], full) == [], full
        previous[name] = full
        published += 1

    for step in range(160):  # 80 s in 0.5 s pushes; the encoder restarts at 30 s
        if step == 60:
            run.update(offset=30.0, wall=T0 + 35.0, disc=True)
            for name, seg in segs.items():
                seg.start_run(timeline_offset=30.0, wallclock_at_zero=T0 + 35.0, discontinuity=True)
                state[name]["disc"] = True
        t0 = step * 0.5 - (30.0 if step >= 60 else 0.0)
        for name, seg in segs.items():
            events = seg.push(samples(name, t0, t0 + 0.5))
            for ev in events:
                st_ = state[name]
                if isinstance(ev, segmenter.PartReady):
                    if st_["pending"] and st_["pending"][0].msn != ev.part.msn:
                        st_["pending"] = []
                    st_["pending"].append(ev.part)
                    st_["edge"] = (ev.part.msn, ev.part.index)
                else:
                    st_["segments"].append(ev.segment)
                    st_["pending"] = []
                    if ev.segment.discontinuity:
                        st_["disc"] = False
            if events:
                publish(name)
    assert published > 300
    video = parse_media_playlist(previous["720p"])
    assert video.discontinuity_sequence == 0 and [s.msn for s in video.segments if s.discontinuity] == [15]
    restart = next(s for s in video.segments if s.discontinuity)
    assert restart.program_date_time is not None and restart.program_date_time.timestamp() == T0 + 35.0
