"""Segmenter on samples FFmpeg produced: cutting rules, timeline and a decode round trip."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "media"))

from _ffmedia import HAVE_FFMPEG, MediaFactory, decoded_md5s, ffprobe_errors  # noqa: E402

from flowcast.media.fmp4 import FragmentedMP4Reader  # noqa: E402
from flowcast.media.types import Fragment, InitSegment, Sample, TrackInfo  # noqa: E402
from flowcast.package.model import Part, Segment  # noqa: E402
from flowcast.package.segmenter import PartReady, Segmenter, SegmentReady  # noqa: E402


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> MediaFactory:
    if not HAVE_FFMPEG:
        pytest.skip("ffmpeg/ffprobe not installed")
    return MediaFactory(tmp_path_factory.mktemp("seg"))


def load(media: MediaFactory, name: str) -> tuple[InitSegment, list[Sample]]:
    events = FragmentedMP4Reader().feed(media.data(name))
    init = events[0]
    assert isinstance(init, InitSegment)
    return init, [s for e in events if isinstance(e, Fragment) for s in e.samples]


def run(seg: Segmenter, samples: list[Sample], batch: int = 5) -> list[PartReady | SegmentReady]:
    events: list[PartReady | SegmentReady] = []
    for i in range(0, len(samples), batch):
        events.extend(seg.push(samples[i : i + batch]))
    return events + seg.flush()


def segments_of(events: list[PartReady | SegmentReady]) -> list[Segment]:
    return [e.segment for e in events if isinstance(e, SegmentReady)]


def reread(init: InitSegment, data: bytes) -> list[Sample]:
    events = FragmentedMP4Reader().feed(init.data + data)
    return [s for e in events if isinstance(e, Fragment) for s in e.samples]


VIDEO = ["h264", "h264_bframes"]
AUDIO = ["aac", "aac_keyframe"]


@pytest.mark.parametrize("name", VIDEO + AUDIO)
@pytest.mark.parametrize("part_target", [0.5, 0.333])
def test_parts_and_segments(media: MediaFactory, name: str, part_target: float) -> None:
    init, samples = load(media, name)
    track = init.tracks[0]
    events = run(Segmenter(track, segment_duration=2.0, part_target=part_target, first_msn=7), samples)
    segments = segments_of(events)
    assert [s.msn for s in segments] == list(range(7, 7 + len(segments)))
    # every part is announced before its segment, in order
    announced: list[Part] = []
    for event in events:
        if isinstance(event, PartReady):
            announced.append(event.part)
        else:
            assert tuple(announced) == event.segment.parts
            announced = []
    frame = samples[0].duration / track.timescale
    for seg in segments:
        assert seg.data == b"".join(p.data for p in seg.parts)
        assert [p.index for p in seg.parts] == list(range(len(seg.parts)))
        assert all(p.msn == seg.msn for p in seg.parts)
        assert sum(p.duration for p in seg.parts) == pytest.approx(seg.duration)
        assert seg.parts[0].start == seg.start
        for i, part in enumerate(seg.parts):
            assert part.duration <= part_target + 1e-9  # rfc8216bis 4.4.4.9
            if not part.independent and i != len(seg.parts) - 1:
                assert part.duration >= 0.85 * part_target
        re = reread(init, seg.data)
        if track.kind == "video":
            assert re[0].is_sync
            assert [p.independent for p in seg.parts] == [
                reread(init, p.data)[0].is_sync for p in seg.parts
            ]
    for seg in segments[:-1]:  # the last one is whatever the input had left
        assert abs(seg.duration - 2.0) <= frame
    # on the continuous timeline, back to back
    for a, b in zip(segments, segments[1:]):
        assert b.start == pytest.approx(a.start + a.duration)
    assert sum(len(reread(init, s.data)) for s in segments) == len(samples)


def test_audio_and_video_boundaries_align(media: MediaFactory) -> None:
    cuts = {}
    for name in ("h264", "aac"):
        init, samples = load(media, name)
        segs = segments_of(run(Segmenter(init.tracks[0], segment_duration=2.0, part_target=0.5), samples))
        cuts[name] = [s.start for s in segs[1:]]
    audio_frame = 1024 / 48000
    assert len(cuts["aac"]) >= len(cuts["h264"]) >= 1
    for v, a in zip(cuts["h264"], cuts["aac"]):
        assert abs(v - a) <= audio_frame


def test_parts_are_published_without_waiting_for_next_sample(media: MediaFactory) -> None:
    init, samples = load(media, "h264")
    seg = Segmenter(init.tracks[0], segment_duration=2.0, part_target=0.5)
    events = seg.push(samples[:15])  # exactly 0.5 s of 30 fps video
    assert [type(e) for e in events] == [PartReady]
    assert events[0].part.duration == pytest.approx(0.5)


@pytest.mark.parametrize("name", ["h264", "h264_bframes", "aac"])
def test_broadcast_mode_one_chunk_per_segment(media: MediaFactory, name: str) -> None:
    init, samples = load(media, name)
    events = run(Segmenter(init.tracks[0], segment_duration=2.0, part_target=None), samples)
    assert all(isinstance(e, SegmentReady) for e in events)
    for seg in segments_of(events):
        (part,) = seg.parts
        assert part.index == 0 and part.data == seg.data and part.duration == seg.duration


@pytest.mark.parametrize("name,part_target", [("h264_bframes", 0.5), ("h264", 0.333), ("aac", 0.5)])
def test_round_trip_decodes_identically(media: MediaFactory, tmp_path: Path, name: str, part_target: float) -> None:
    init, samples = load(media, name)
    segments = segments_of(run(Segmenter(init.tracks[0], segment_duration=2.0, part_target=part_target), samples))
    out = tmp_path / "packaged.mp4"
    out.write_bytes(init.data + b"".join(p.data for s in segments for p in s.parts))
    assert ffprobe_errors(out) == ""
    original = decoded_md5s(media.path(name))
    assert decoded_md5s(out) == original
    if init.tracks[0].kind == "video":
        # a single segment decodes on its own (init + segment), to the same frames
        one = tmp_path / "segment1.mp4"
        one.write_bytes(init.data + segments[1].data)
        assert ffprobe_errors(one) == ""
        frames = [line.rsplit(",", 1)[1] for line in decoded_md5s(one)]
        first = sum(len(reread(init, s.data)) for s in segments[:1])
        assert frames == [line.rsplit(",", 1)[1] for line in original[first : first + len(frames)]]
        assert len(frames) == len(reread(init, segments[1].data))


def test_start_run_offsets_discontinuity_and_msn(media: MediaFactory) -> None:
    init, samples = load(media, "h264")
    track = init.tracks[0]
    seg = Segmenter(track, segment_duration=2.0, part_target=0.5)
    seg.start_run(timeline_offset=10.0, wallclock_at_zero=1_700_000_000.0, discontinuity=False)
    first = run(seg, samples)
    assert seg.next_msn == 2
    seg.start_run(timeline_offset=123.456, wallclock_at_zero=1_700_000_500.0, discontinuity=True, first_msn=1)
    second = run(seg, samples)
    seg.start_run(timeline_offset=200.0, wallclock_at_zero=1_700_001_000.0, discontinuity=False, first_msn=50)
    third = run(seg, samples[:30])
    a, b, c = segments_of(first), segments_of(second), segments_of(third)
    assert [s.msn for s in a + b + c] == [0, 1, 2, 3, 50]  # first_msn=1 must not go backwards
    assert [s.discontinuity for s in a + b + c] == [False, False, True, False, False]
    assert b[0].start == pytest.approx(round(123.456 * track.timescale) / track.timescale)
    assert b[1].program_date_time == pytest.approx(1_700_000_502.0)
    assert a[0].program_date_time == 1_700_000_000.0 and a[0].start == 10.0
    re = reread(init, b"".join(s.data for s in b))
    offset = round(123.456 * track.timescale)
    assert [s.decode_time for s in re] == [s.decode_time + offset for s in samples]
    assert [s.data for s in re] == [s.data for s in samples]
    # mfhd sequence numbers keep increasing across runs (one counter per track)
    assert len({p.data[20:24] for s in a + b + c for p in s.parts}) == sum(len(s.parts) for s in a + b + c)


def test_start_run_closes_open_segment(media: MediaFactory) -> None:
    init, samples = load(media, "h264")
    seg = Segmenter(init.tracks[0], segment_duration=2.0, part_target=0.5)
    assert len(segments_of(seg.push(samples[:70]))) == 1
    seg.start_run(timeline_offset=50.0, wallclock_at_zero=0.0, discontinuity=True)
    events = seg.push(samples[:1])
    closed = segments_of(events)
    assert len(closed) == 1 and closed[0].duration == pytest.approx(10 / 30)
    assert segments_of(seg.flush())[0].discontinuity


def test_video_waits_for_a_sync_sample() -> None:
    track = TrackInfo(1, "video", 90000, "avc1.64001f")
    frames = [Sample(i * 3000, 3000, 0, i % 30 == 10, 0 if i % 30 == 10 else 0x01010000, b"f") for i in range(100)]
    segs = segments_of(run(Segmenter(track, segment_duration=1.0, part_target=None), frames))
    assert segs[0].start == pytest.approx(10 * 3000 / 90000)
    assert all(s.duration == pytest.approx(1.0) for s in segs[:-1])


def test_video_at_29_97_fps_keeps_segments_on_the_audio_grid() -> None:
    """Keyframes as the encoder forces them (first frame with t >= 2n, encoders.py) at 30000/1001
    fps: GOPs of 60 frames and, every ~16 segments, one of 59. Each still opens a segment, so no
    segment reaches twice the target (EXTINF <= TARGETDURATION, rfc8216bis 4.4.3.1) and video
    keeps the audio's segment count (the same MSN means the same time in every rendition)."""
    track = TrackInfo(1, "video", 90000, "avc1.64001f")
    frame, seconds = 3003, 60
    frames, forced = [], 0
    for i in range(round(seconds * 30000 / 1001)):
        key = i * frame >= forced * 2 * 90000
        forced += key
        frames.append(Sample(i * frame, frame, 0, key, 0 if key else 0x01010000, b"f"))
    segs = segments_of(run(Segmenter(track, segment_duration=2.0, part_target=0.5), frames))
    assert max(s.duration for s in segs) < 2.5
    assert len(segs) == seconds // 2
    assert all(abs(s.start - 2 * k) < 2 * frame / 90000 for k, s in enumerate(segs))


@pytest.mark.parametrize("fps", [(30, 1), (30000, 1001), (24000, 1001)])
def test_next_part_is_the_part_published_next(fps: tuple[int, int]) -> None:
    """The preload hint names the part that comes next, also across segment cuts on
    one-frame-short GOPs (rfc8216bis 6.2.6: the hinted URI MUST be the one later added)."""
    track = TrackInfo(1, "video", 90000, "avc1.64001f")
    frame = 90000 * fps[1] // fps[0]
    seg = Segmenter(track, segment_duration=2.0, part_target=0.5)
    forced, hint, checked = 0, None, 0
    for i in range(round(40 * fps[0] / fps[1])):
        key = i * frame >= forced * 2 * 90000
        forced += key
        events = seg.push([Sample(i * frame, frame, 0, key, 0 if key else 0x01010000, b"f")])
        parts = [e.part for e in events if isinstance(e, PartReady)]
        if parts:
            if hint is not None:
                assert (parts[0].msn, parts[0].index) == hint, i
                checked += 1
            hint = seg.next_part()
    assert checked > 50
