"""HLS / LL-HLS rendering: render -> parse -> check, one assertion per spec rule.

Clause numbers: draft-pantos-hls-rfc8216bis (standards.md section 1).
"""

from __future__ import annotations

import dataclasses
import math
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowcast.media.types import TrackInfo
from flowcast.package.conformance import check_media_playlist, check_media_playlist_update, check_multivariant
from flowcast.package.hls import (
    AudioRendition,
    MediaPlaylist,
    RenditionReport,
    Variant,
    format_pdt,
    render_media_playlist,
    render_multivariant,
    rendition_report,
    target_duration_for,
)
from flowcast.package.m3u8 import PlaylistError, parse_attributes, parse_media_playlist, parse_multivariant
from flowcast.package.model import Part, Segment

T0 = 1_764_000_000.0  # wall clock of msn 0


def make_segment(msn: int, *, seg: float = 2.0, part: float = 0.5, discontinuity: bool = False) -> Segment:
    """A segment whose parts tile it; the last part is shorter when seg % part != 0."""
    start = msn * seg
    parts = []
    t = 0.0
    i = 0
    while t < seg - 1e-9:
        d = min(part, seg - t)
        parts.append(Part(msn, i, start + t, d, i == 0, b"\0" * 8))
        t += d
        i += 1
    return Segment(msn, start, seg, tuple(parts), discontinuity, T0 + start, b"\0" * 32)


def ll_state(
    first: int = 100,
    count: int = 20,
    pending: int = 2,
    *,
    seg: float = 2.0,
    part: float = 0.5,
    reports: tuple[RenditionReport, ...] = (),
    ended: bool = False,
    discontinuity_at: int | None = None,
) -> MediaPlaylist:
    segments = tuple(
        make_segment(m, seg=seg, part=part, discontinuity=(m == discontinuity_at)) for m in range(first, first + count)
    )
    nxt = first + count
    pend = make_segment(nxt, seg=seg, part=part).parts[:pending] if not ended else ()
    return MediaPlaylist(
        target_duration=target_duration_for(seg),
        segments=segments,
        part_target=part,
        pending_parts=pend,
        next_part=None if ended else (nxt, pending),
        rendition_reports=reports,
        ended=ended,
        discontinuity_sequence=3,
    )


def text(pl: MediaPlaylist, **kw: bool) -> str:
    return render_media_playlist(pl, **kw).decode()


def lines(pl: MediaPlaylist, **kw: bool) -> list[str]:
    return text(pl, **kw).splitlines()


def tag(ls: list[str], name: str) -> list[str]:
    return [ln.partition(":")[2] for ln in ls if ln.partition(":")[0] == name]


REPORTS = (rendition_report("360p", 120, 1), rendition_report("audio", 120, 1))


# --- low-latency media playlist --------------------------------------------------------


def test_ll_playlist_conforms_and_round_trips() -> None:
    pl = ll_state(reports=REPORTS)
    t = text(pl)
    assert check_media_playlist(t, expected_reports=["../360p/index.m3u8", "../audio/index.m3u8"]) == []
    parsed = parse_media_playlist(t)
    assert parsed.media_sequence == 100
    assert [s.msn for s in parsed.segments] == list(range(100, 120))
    assert [s.uri for s in parsed.segments][:2] == ["100.m4s", "101.m4s"]
    assert len(parsed.pending_parts) == 2
    assert parsed.last_msn_part == (120, 1) == pl.last_part


def test_rendering_is_pure_and_deterministic() -> None:
    pl = ll_state()
    assert render_media_playlist(pl) == render_media_playlist(pl)
    assert isinstance(render_media_playlist(pl), bytes)
    with pytest.raises(dataclasses.FrozenInstanceError):
        pl.ended = True  # type: ignore[misc]


def test_first_line_and_version_9_for_ll() -> None:
    ls = lines(ll_state())
    assert ls[0] == "#EXTM3U"
    assert tag(ls, "#EXT-X-VERSION") == ["9"]


def test_target_duration_is_ceiling_and_extinf_rounds_within() -> None:
    assert target_duration_for(2.0) == 2
    assert target_duration_for(6.006) == 7
    assert target_duration_for(0.5) == 1
    pl = ll_state()
    parsed = parse_media_playlist(text(pl))
    assert parsed.target_duration == 2
    assert all(round(s.duration) <= parsed.target_duration for s in parsed.segments)


def test_target_duration_does_not_change_between_publishes() -> None:
    a, b = ll_state(count=3), ll_state(count=20)
    assert tag(lines(a), "#EXT-X-TARGETDURATION") == tag(lines(b), "#EXT-X-TARGETDURATION")


def test_server_control_values() -> None:
    pl = ll_state()
    sc = parse_media_playlist(text(pl)).server_control
    assert sc is not None
    assert sc.can_block_reload
    assert sc.can_skip_until == 6 * pl.target_duration  # Skip Boundary >= 6 x TD
    assert sc.hold_back is not None and sc.hold_back >= 3 * pl.target_duration  # HOLD-BACK >= 3 x TD
    assert sc.part_hold_back == pytest.approx(3 * 0.5)  # >= 3 x PART-TARGET (SHOULD)
    assert sc.part_hold_back >= 2 * 0.5  # MUST
    assert pl.can_skip_until == 12 and pl.hold_back == 6 and pl.part_hold_back == 1.5


def test_part_inf_required_with_parts() -> None:
    ls = lines(ll_state())
    assert any(ln.startswith("#EXT-X-PART:") for ln in ls)
    assert tag(ls, "#EXT-X-PART-INF") == ["PART-TARGET=0.5"]


def test_media_sequence_and_discontinuity_sequence_present() -> None:
    ls = lines(ll_state())
    assert tag(ls, "#EXT-X-MEDIA-SEQUENCE") == ["100"]
    assert tag(ls, "#EXT-X-DISCONTINUITY-SEQUENCE") == ["3"]


def test_map_before_first_segment() -> None:
    ls = lines(ll_state())
    assert tag(ls, "#EXT-X-MAP") == ['URI="init.mp4"']
    first_seg_line = next(i for i, ln in enumerate(ls) if ln.startswith(("#EXT-X-PART:", "#EXTINF")))
    assert ls.index('#EXT-X-MAP:URI="init.mp4"') < first_seg_line


def test_program_date_time_on_every_segment_iso_ms_z() -> None:
    pl = ll_state()
    parsed = parse_media_playlist(text(pl))
    pdts = tag(lines(pl), "#EXT-X-PROGRAM-DATE-TIME")
    assert len(pdts) == len(pl.segments) + 1  # + the segment in production
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", p) for p in pdts)
    for seg, ps in zip(pl.segments, parsed.segments):
        assert ps.program_date_time is not None
        assert ps.program_date_time.timestamp() == pytest.approx(seg.program_date_time, abs=1e-3)
    assert parsed.pending_program_date_time is not None
    assert format_pdt(0.5) == "1970-01-01T00:00:00.500Z"


def test_parts_only_in_last_three_target_durations() -> None:
    pl = ll_state(count=20, pending=2)
    parsed = parse_media_playlist(text(pl))
    end = pl.end_time
    with_parts = [s for s in parsed.segments if s.parts]
    without = [s for s in parsed.segments if not s.parts]
    assert with_parts and without
    for s in with_parts:
        seg_end = (s.msn + 1) * 2.0
        assert end - seg_end < 3 * pl.target_duration
    for s in without:
        assert end - (s.msn + 1) * 2.0 >= 3 * pl.target_duration
    # PART-HOLD-BACK worth of parts is always there
    n_parts = sum(len(s.parts) for s in with_parts) + len(parsed.pending_parts)
    assert n_parts * 0.5 >= 3 * 0.5


def test_part_attributes() -> None:
    parsed = parse_media_playlist(text(ll_state()))
    seg = [s for s in parsed.segments if s.parts][-1]
    assert [p.uri for p in seg.parts] == [f"{seg.msn}.{i}.m4s" for i in range(4)]
    assert [p.independent for p in seg.parts] == [True, False, False, False]
    assert all(p.duration == 0.5 for p in seg.parts)


def test_part_duration_decimals_survive() -> None:
    # 10 frames at 30000/1001 fps: 0.33367 s; DURATION keeps 5 decimals.
    d = 10 * 1001 / 30000
    pl = ll_state(seg=4 * d, part=d, count=12)
    parsed = parse_media_playlist(text(pl))
    part = [s for s in parsed.segments if s.parts][-1].parts[1]
    assert part.duration == pytest.approx(d, abs=1e-5)
    assert check_media_playlist(text(pl)) == []


def test_parts_cover_segment_exactly() -> None:
    parsed = parse_media_playlist(text(ll_state(seg=2.0, part=0.6, count=10)))
    for s in parsed.segments:
        if s.parts:
            assert sum(p.duration for p in s.parts) == pytest.approx(s.duration, abs=1e-4)
    assert check_media_playlist(text(ll_state(seg=2.0, part=0.6, count=10))) == []  # short last part allowed


def test_preload_hint_single_and_points_at_next_part() -> None:
    ls = lines(ll_state(pending=2))
    hints = tag(ls, "#EXT-X-PRELOAD-HINT")
    assert hints == ['TYPE=PART,URI="120.2.m4s"']
    parsed = parse_media_playlist("\n".join(ls))
    assert parsed.preload_hints[0].type == "PART"
    assert ls.index('#EXT-X-PRELOAD-HINT:TYPE=PART,URI="120.2.m4s"') > max(
        i for i, ln in enumerate(ls) if ln.startswith("#EXT-X-PART:")
    )


def test_preload_hint_uri_matches_the_part_later_added() -> None:
    before = text(ll_state(pending=2))
    after = text(ll_state(pending=3))
    assert check_media_playlist_update(before, after) == []
    # across a segment boundary: hint 120.3 -> segment 120 complete, hint 121.0
    before = text(ll_state(pending=3))
    after = text(ll_state(count=21, pending=0))
    assert parse_media_playlist(after).preload_hints[0].uri == "121.0.m4s"
    assert check_media_playlist_update(before, after) == []


def test_hint_at_segment_start_with_no_pending_parts() -> None:
    pl = ll_state(pending=0)
    ls = lines(pl)
    assert tag(ls, "#EXT-X-PRELOAD-HINT") == ['TYPE=PART,URI="120.0.m4s"']
    assert check_media_playlist("\n".join(ls)) == []


def test_ended_playlist_has_endlist_and_no_hint() -> None:
    pl = ll_state(ended=True)
    ls = lines(pl)
    assert ls[-1] == "#EXT-X-ENDLIST"
    assert not tag(ls, "#EXT-X-PRELOAD-HINT")
    assert check_media_playlist("\n".join(ls)) == []
    # _HLS_skip is ignored once ended
    assert render_media_playlist(pl, skip=True) == render_media_playlist(pl)


def test_discontinuity_before_first_part_of_its_segment() -> None:
    pl = ll_state(count=20, discontinuity_at=118)
    ls = lines(pl)
    i = ls.index("#EXT-X-DISCONTINUITY")
    assert ls[i + 2] == '#EXT-X-PART:DURATION=0.5,URI="118.0.m4s",INDEPENDENT=YES'
    assert ls[i + 1].startswith("#EXT-X-PROGRAM-DATE-TIME:")
    parsed = parse_media_playlist("\n".join(ls))
    assert [s.msn for s in parsed.segments if s.discontinuity] == [118]
    assert check_media_playlist("\n".join(ls)) == []


def test_pending_segment_discontinuity_and_pdt() -> None:
    base = ll_state(pending=1)
    pl = dataclasses.replace(base, pending_discontinuity=True, pending_program_date_time=T0 + 5000.0)
    ls = lines(pl)
    i = ls.index("#EXT-X-DISCONTINUITY")
    assert ls[i + 1] == f"#EXT-X-PROGRAM-DATE-TIME:{format_pdt(T0 + 5000.0)}"
    assert ls[i + 2].startswith('#EXT-X-PART:DURATION=0.5,URI="120.0.m4s"')
    parsed = parse_media_playlist("\n".join(ls))
    assert parsed.pending_discontinuity
    assert check_media_playlist("\n".join(ls)) == []


def test_rendition_reports() -> None:
    pl = ll_state(reports=REPORTS)
    ls = lines(pl)
    assert tag(ls, "#EXT-X-RENDITION-REPORT") == [
        'URI="../360p/index.m3u8",LAST-MSN=120,LAST-PART=1',
        'URI="../audio/index.m3u8",LAST-MSN=120,LAST-PART=1',
    ]
    assert pl.report_as("720p") == RenditionReport("../720p/index.m3u8", 120, 1)
    done = ll_state(pending=0)
    assert done.report_as("720p") == RenditionReport("../720p/index.m3u8", 119, 3)


def test_delta_update_skips_older_than_boundary() -> None:
    pl = ll_state(count=20, pending=2, reports=REPORTS)
    full = parse_media_playlist(text(pl))
    ls = lines(pl, skip=True)
    delta = parse_media_playlist("\n".join(ls))
    boundary = 6 * pl.target_duration
    n = delta.skipped_segments
    assert n == pl.skipped_count() > 0
    assert tag(ls, "#EXT-X-SKIP") == [f"SKIPPED-SEGMENTS={n}"]
    assert tag(ls, "#EXT-X-VERSION") == ["9"]
    # the remaining segments are the full playlist's tail, same msns
    assert delta.segments == full.segments[n:]
    kept = sum(s.duration for s in delta.segments) + sum(p.duration for p in delta.pending_parts)
    assert kept >= boundary
    # every skipped segment is older than the boundary, the first kept one is not
    end = pl.end_time
    for s in pl.segments[:n]:
        assert end - (s.start + s.duration) >= boundary
    assert end - (pl.segments[n].start + pl.segments[n].duration) < boundary
    # all other tags remain
    for name in ("#EXT-X-SERVER-CONTROL", "#EXT-X-PART-INF", "#EXT-X-MAP", "#EXT-X-TARGETDURATION",
                 "#EXT-X-MEDIA-SEQUENCE", "#EXT-X-DISCONTINUITY-SEQUENCE", "#EXT-X-PRELOAD-HINT",
                 "#EXT-X-RENDITION-REPORT"):
        assert tag(ls, name) == tag(lines(pl), name), name
    assert delta.pending_parts == full.pending_parts
    assert check_media_playlist("\n".join(ls)) == []


def test_delta_update_of_short_playlist_is_full_playlist() -> None:
    pl = ll_state(count=4)
    assert render_media_playlist(pl, skip=True) == render_media_playlist(pl)


# --- broadcast ----------------------------------------------------------------------


def broadcast_state(count: int = 10, ended: bool = False) -> MediaPlaylist:
    segs = tuple(
        Segment(m, m * 6.0, 6.0, (), False, T0 + m * 6.0, b"") for m in range(50, 50 + count)
    )
    return MediaPlaylist(target_duration=6, segments=segs, ended=ended)


def test_broadcast_playlist_is_plain_v7() -> None:
    pl = broadcast_state()
    ls = lines(pl)
    assert tag(ls, "#EXT-X-VERSION") == ["7"]
    assert tag(ls, "#EXT-X-TARGETDURATION") == ["6"]
    assert not tag(ls, "#EXT-X-PART-INF")
    assert not tag(ls, "#EXT-X-PART")
    assert not tag(ls, "#EXT-X-PRELOAD-HINT")
    assert tag(ls, "#EXT-X-SERVER-CONTROL") == ["HOLD-BACK=18.0"]
    assert render_media_playlist(pl, skip=True) == render_media_playlist(pl)  # no CAN-SKIP-UNTIL
    assert check_media_playlist("\n".join(ls)) == []
    assert check_media_playlist(text(broadcast_state(ended=True))) == []


def test_model_validation() -> None:
    with pytest.raises(ValueError):
        MediaPlaylist(target_duration=0, segments=())
    with pytest.raises(ValueError):
        MediaPlaylist(target_duration=2, segments=(), part_target=3.0)
    with pytest.raises(ValueError):
        MediaPlaylist(target_duration=2, segments=(), next_part=(1, 0))
    with pytest.raises(ValueError):
        MediaPlaylist(target_duration=2, segments=(make_segment(1), make_segment(3)), part_target=0.5)


def test_stream_start_with_only_pending_parts() -> None:
    pl = MediaPlaylist(
        target_duration=2,
        segments=(),
        part_target=0.5,
        pending_parts=make_segment(0).parts[:1],
        next_part=(0, 1),
        pending_program_date_time=T0,
    )
    t = text(pl)
    parsed = parse_media_playlist(t)
    assert parsed.media_sequence == 0
    assert parsed.pending_parts[0].uri == "0.0.m4s"
    assert check_media_playlist(t) == []


# --- multivariant --------------------------------------------------------------------

VIDEO = (
    Variant("720p", TrackInfo(1, "video", 90000, "avc1.64001f", 1280, 720), 3_000_000, 2_500_000, 30.0),
    Variant("360p", TrackInfo(1, "video", 90000, "avc1.42e01e", 640, 360), 900_000, 800_000, 30.0),
)
AUDIO = AudioRendition(TrackInfo(2, "audio", 48000, "mp4a.40.2", sample_rate=48000, channels=2), 128_000, 96_000)


def test_multivariant_attributes() -> None:
    t = render_multivariant(VIDEO, AUDIO).decode()
    ls = t.splitlines()
    assert ls[0] == "#EXTM3U"
    assert "#EXT-X-INDEPENDENT-SEGMENTS" in ls
    mv = parse_multivariant(t)
    assert [v.uri for v in mv.variants] == ["720p/index.m3u8", "360p/index.m3u8"]
    v = mv.variants[0]
    assert v.bandwidth == 3_128_000  # peak video + audio
    assert v.average_bandwidth == 2_596_000
    assert v.codecs == ("avc1.64001f", "mp4a.40.2")
    assert v.resolution == (1280, 720)
    assert v.frame_rate == 30.0
    assert all(x.audio == "aud" for x in mv.variants)
    # No captions in our encodes, said on every variant (4.4.6.2: NONE on one means on all).
    assert all(x.attributes.get("CLOSED-CAPTIONS") == "NONE" for x in mv.variants)
    (m,) = mv.media
    assert (m.type, m.group_id, m.name, m.uri, m.default, m.channels) == (
        "AUDIO", "aud", "audio", "audio/index.m3u8", True, "2"
    )
    assert check_multivariant(t) == []
    assert "#EXT-X-INDEPENDENT-SEGMENTS" not in render_multivariant(VIDEO, AUDIO, independent_segments=False).decode()


def test_multivariant_with_its_media_playlists_conforms() -> None:
    names = ["720p", "360p", "audio"]
    media = {}
    for name in names:
        reports = tuple(rendition_report(o, 120, 1) for o in names if o != name)
        media[f"{name}/index.m3u8"] = text(ll_state(reports=reports))
    assert check_multivariant(render_multivariant(VIDEO, AUDIO), media) == []


# --- parser --------------------------------------------------------------------------


def test_attribute_list_parsing() -> None:
    assert parse_attributes('A=1,B="x,y",C=0x1F,D=1.5') == {"A": "1", "B": "x,y", "C": "0x1F", "D": "1.5"}
    for bad in ('A=1,', 'A="x', "a=1", "A=1,A=2", "A=1 B=2"):
        with pytest.raises(PlaylistError):
            parse_attributes(bad)


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "#EXT-X-VERSION:9\n",
        "#EXTM3U\n#EXTINF:2.0,\n",
        "#EXTM3U\n#EXT-X-TARGETDURATION:2\n0.m4s\n",
        "#EXTM3U\n#EXT-X-TARGETDURATION:x\n",
        "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-PART:URI=\"a\"\n",
        "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-PROGRAM-DATE-TIME:yesterday\n",
        "#EXTM3U\n#EXT-X-VERSION:9\n",
        "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-STREAM-INF:BANDWIDTH=1\nx\n",
    ],
)
def test_media_parser_rejects(bad: str) -> None:
    with pytest.raises(PlaylistError):
        parse_media_playlist(bad)


@pytest.mark.parametrize(
    "bad",
    [
        "#EXTM3U\nfoo.m3u8\n",
        "#EXTM3U\n#EXT-X-STREAM-INF:CODECS=\"a\"\nx.m3u8\n",
        "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\n",
        "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1,RESOLUTION=big\nx\n",
        "#EXTM3U\n#EXT-X-MEDIA:TYPE=AUDIO\n",
    ],
)
def test_multivariant_parser_rejects(bad: str) -> None:
    with pytest.raises(PlaylistError):
        parse_multivariant(bad)


def test_parser_ignores_unknown_tags_and_comments() -> None:
    t = text(ll_state()).replace("#EXT-X-MAP", "# a comment\n#EXT-X-FUTURE:X=1\n#EXT-X-MAP")
    parsed = parse_media_playlist(t)
    assert parsed.unknown_tags == ("#EXT-X-FUTURE:X=1",)


_TAGS = [
    "#EXTM3U", "#EXT-X-VERSION:9", "#EXT-X-TARGETDURATION:2", "#EXTINF:2.0,", "0.m4s",
    '#EXT-X-PART:DURATION=0.5,URI="0.0.m4s"', "#EXT-X-SKIP:SKIPPED-SEGMENTS=2",
    '#EXT-X-PRELOAD-HINT:TYPE=PART,URI="x"', "#EXT-X-PROGRAM-DATE-TIME:2025-01-01T00:00:00.000Z",
    "#EXT-X-MEDIA-SEQUENCE:4", "#EXT-X-SERVER-CONTROL:CAN-SKIP-UNTIL=12", "#EXT-X-ENDLIST",
    '#EXT-X-RENDITION-REPORT:URI="../a/index.m3u8",LAST-MSN=3', "#EXT-X-DISCONTINUITY",
    '#EXT-X-STREAM-INF:BANDWIDTH=1,CODECS="a"', '#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="a",NAME="a"',
]


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.text(), st.binary(), st.lists(st.sampled_from(_TAGS) | st.text(max_size=20)).map("\n".join)))
def test_fuzz_parsers_raise_only_playlist_error(data: str | bytes) -> None:
    for parse in (parse_media_playlist, parse_multivariant):
        try:
            parse(data)
        except PlaylistError:
            pass
    if isinstance(data, str):
        check_media_playlist(data)  # never raises
        check_multivariant(data)


@settings(max_examples=150, deadline=None)
@given(
    st.integers(0, 10**6),
    st.integers(1, 40),
    st.integers(0, 3),
    st.sampled_from([(2.0, 0.5), (1.0, 0.25), (4.0, 1.0), (2.0, 1 / 3), (2.002, 1001 / 3000)]),
    st.booleans(),
    st.booleans(),
)
def test_property_any_live_state_renders_conformant(
    first: int, count: int, pending: int, timing: tuple[float, float], skip: bool, ended: bool
) -> None:
    seg, part = timing
    pl = ll_state(first, count, pending, seg=seg, part=part, ended=ended, reports=REPORTS)
    t = text(pl, skip=skip)
    assert check_media_playlist(t, expected_reports=["../360p/index.m3u8", "../audio/index.m3u8"]) == []
    parsed = parse_media_playlist(t)
    assert parsed.first_msn + len(parsed.segments) == first + count
    assert parsed.target_duration == math.ceil(seg - 1e-9)
