"""LivePipeline fed fMP4 bytes directly (no FFmpeg process, no HTTP): timeline anchoring,
late renditions, restarts and what the store keeps over a long run."""

from __future__ import annotations

import asyncio
import functools
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from flowcast.package import conformance

sys.path.insert(0, str(Path(__file__).parents[1] / "media"))

from _ffmedia import HAVE_FFMPEG, MediaFactory  # noqa: E402

from flowcast.config import FlowcastConfig, OriginConfig, PackagingConfig  # noqa: E402
from flowcast.media.cmaf import write_chunk  # noqa: E402
from flowcast.media.fmp4 import FragmentedMP4Reader  # noqa: E402
from flowcast.media.types import Fragment, InitSegment, Sample  # noqa: E402
from flowcast.origin.pipeline import AUDIO, LivePipeline  # noqa: E402
from flowcast.origin.store import MediaStore  # noqa: E402
from flowcast.package.m3u8 import parse_media_playlist  # noqa: E402
from flowcast.transcode.ladder import Ladder, Rung  # noqa: E402

VIDEO = "240p"


def on_loop(test):
    """Run a synchronous test body on an event loop, as the pipeline runs in production."""

    @functools.wraps(test)
    def wrapper(*args, **kwargs):
        async def main():
            return test(*args, **kwargs)

        return asyncio.run(main())

    return wrapper


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> MediaFactory:
    if not HAVE_FFMPEG:
        pytest.skip("ffmpeg/ffprobe not installed")
    return MediaFactory(tmp_path_factory.mktemp("pipe"))


def _load(media: MediaFactory, name: str) -> tuple[bytes, list[Sample]]:
    events = FragmentedMP4Reader().feed(media.data(name))
    init = events[0]
    assert isinstance(init, InitSegment)
    return init.data, [s for e in events if isinstance(e, Fragment) for s in e.samples]


class Source:
    """One rendition's fMP4 output: the FFmpeg init, then its samples looped on and on."""

    def __init__(self, init: bytes, samples: list[Sample], start: int = 0) -> None:
        self.init = init
        self.samples = samples
        self.span = samples[-1].decode_time + samples[-1].duration - samples[0].decode_time
        self.next_dt = start
        self.i = 0
        self.seq = 1

    def chunk(self, n: int) -> bytes:
        """The next `n` samples as fMP4 fragments (one sample per moof, like frag_every_frame)."""
        out = []
        for _ in range(n):
            s = self.samples[self.i % len(self.samples)]
            self.i += 1
            out.append(write_chunk(self.seq, 1, [replace(s, decode_time=self.next_dt)]))
            self.seq += 1
            self.next_dt += s.duration
        return b"".join(out)


def _pipeline(dvr_window: float = 60.0, redundant: tuple[str, ...] = ()) -> tuple[LivePipeline, MediaStore]:
    config = FlowcastConfig(
        ladder=Ladder(rungs=(Rung(name=VIDEO, width=320, height=240, video_bitrate_kbps=400),)),
        packaging=PackagingConfig(segment_duration=1.0, part_target=0.5, dvr_window=dvr_window),
        origin=OriginConfig(redundant=redundant),
    )
    store = MediaStore()
    return LivePipeline(config, store), store


@pytest.fixture(scope="module")
def sources(media: MediaFactory) -> dict[str, tuple[bytes, list[Sample]]]:
    # h264: 30 fps, GOP 30 (1 s) so segments of 1 s; aac: 48 kHz.
    return {VIDEO: _load(media, "h264"), AUDIO: _load(media, "aac")}


def _feed(p: LivePipeline, srcs: dict[str, Source], seconds: float) -> None:
    """Interleave the renditions ~1/30 s at a time, the way the pipes deliver them."""
    steps = round(seconds * 30)
    for _ in range(steps):
        p.on_output(VIDEO, srcs[VIDEO].chunk(1))
        # AAC frames are 1024/48000 s: about 1.4 per video frame
        a = srcs[AUDIO]
        while a.next_dt / 48000 < srcs[VIDEO].next_dt / srcs[VIDEO].samples[0].duration / 30:
            p.on_output(AUDIO, a.chunk(1))


def _pdts(store: MediaStore, name: str) -> list[float]:
    pl = store.playlist(f"live/{name}/index.m3u8")
    assert pl is not None
    parsed = parse_media_playlist(pl.full.decode())
    return [s.program_date_time.timestamp() for s in parsed.segments if s.program_date_time is not None]


@on_loop
def test_late_rendition_gets_the_run_wall_clock(sources) -> None:
    """A rendition whose init arrives after another rendition's first fragment is placed on
    the same run: its EXT-X-PROGRAM-DATE-TIME is today's, not 1970's."""
    p, store = _pipeline()
    p.on_run_start(1, time.time())
    v, a = Source(*sources[VIDEO]), Source(*sources[AUDIO])
    p.on_output(VIDEO, v.init)
    p.on_output(VIDEO, v.chunk(15))  # the video run is anchored before audio says anything
    p.on_output(AUDIO, a.init)
    _feed(p, {VIDEO: v, AUDIO: a}, 3.0)
    now = time.time()
    for name in (VIDEO, AUDIO):
        pdts = _pdts(store, name)
        assert pdts, name
        assert all(abs(t - now) < 30 for t in pdts), (name, pdts[:3])


@on_loop
def test_run_anchor_uses_the_timescale_of_the_fragment_track(sources) -> None:
    """All renditions carry track_id 1; the run is anchored with the timescale of the
    rendition whose fragment came first, not of the first rendition with that track id."""
    p, store = _pipeline()
    p.on_run_start(1, time.time())
    v = Source(*sources[VIDEO], start=0)
    a = Source(*sources[AUDIO], start=48000 * 100)  # audio decode times start at 100 s
    v.next_dt = round(100 * 30 * v.samples[0].duration)  # so does video
    p.on_output(VIDEO, v.init)
    p.on_output(AUDIO, a.init)
    p.on_output(AUDIO, a.chunk(3))  # audio's fragment anchors the run
    _feed(p, {VIDEO: v, AUDIO: a}, 3.0)
    now = time.time()
    for name in (VIDEO, AUDIO):
        pdts = _pdts(store, name)
        assert pdts and all(abs(t - now) < 30 for t in pdts), (name, pdts[:3])


@on_loop
def test_parts_and_segments_leave_the_store_with_a_short_dvr_window(sources) -> None:
    """dvr_window shorter than the part horizon: parts of segments that slid out of the
    window are removed too, so the store does not grow over a long run."""
    p, store = _pipeline(dvr_window=6.0)
    p.on_run_start(1, time.time())
    v, a = Source(*sources[VIDEO]), Source(*sources[AUDIO])
    p.on_output(VIDEO, v.init)
    p.on_output(AUDIO, a.init)
    _feed(p, {VIDEO: v, AUDIO: a}, 40.0)
    for name in (VIDEO, AUDIO):
        r = p.renditions[name]
        newest = r.segments[-1].msn
        stored = [k.rsplit("/", 1)[1] for k in store._objects if k.startswith(f"live/{name}/") and k.endswith(".m4s")]
        # Parts stay 3 target durations after leaving the playlist (rfc8216bis 6.2.2), here
        # 1 s segments: nothing older than ~7 segments back, and each segment at most once.
        msns = {int(n.split(".")[0]) for n in stored}
        assert min(msns) >= newest - 8, (name, sorted(msns)[:5], newest)
        assert len(r.segments) <= 8 and len(r.parts_stored) <= 8


@on_loop
def test_window_keeps_no_second_copy_of_the_media(sources) -> None:
    """The playlist model needs timing, not bytes: the store holds the media once."""
    p, store = _pipeline()
    p.on_run_start(1, time.time())
    v, a = Source(*sources[VIDEO]), Source(*sources[AUDIO])
    p.on_output(VIDEO, v.init)
    p.on_output(AUDIO, a.init)
    _feed(p, {VIDEO: v, AUDIO: a}, 5.0)
    for r in p.renditions.values():
        assert r.segments
        assert all(not s.data and all(not part.data for part in s.parts) for s in r.segments)


@on_loop
def test_restart_with_segment_count_drift_keeps_publishing(sources) -> None:
    """Encoder killed when audio has opened a segment that video has not: after the
    restart both renditions' playlists keep advancing (no MSN gap, no frozen playlist)."""
    p, store = _pipeline()
    p.on_run_start(1, time.time())
    v, a = Source(*sources[VIDEO]), Source(*sources[AUDIO])
    p.on_output(VIDEO, v.init)
    p.on_output(AUDIO, a.init)
    _feed(p, {VIDEO: v, AUDIO: a}, 2.9)
    p.on_output(AUDIO, a.chunk(10))  # audio crossed 3 s, video did not
    p.on_run_start(2, time.time())
    v, a = Source(*sources[VIDEO]), Source(*sources[AUDIO])
    p.on_output(VIDEO, v.init)
    p.on_output(AUDIO, a.init)
    _feed(p, {VIDEO: v, AUDIO: a}, 3.0)
    for name in (VIDEO, AUDIO):
        r = p.renditions[name]
        msns = [s.msn for s in r.segments]
        assert msns == list(range(msns[0], msns[0] + len(msns))), (name, msns)
        pl = store.playlist(f"live/{name}/index.m3u8")
        assert pl is not None and pl.complete_msn == r.segments[-1].msn
        assert conformance.errors(conformance.check_media_playlist(pl.full.decode())) == []
    # The rendition that was one segment short lists the missing number as a gap.
    gaps = [s.msn for s in p.renditions[VIDEO].segments if s.gap]
    assert len(gaps) == 1 and "#EXT-X-GAP" in store.playlist(f"live/{VIDEO}/index.m3u8").full.decode()
    assert not any(s.gap for s in p.renditions[AUDIO].segments)


def test_preload_hint_is_announced_to_the_store(sources) -> None:
    """Requests for the EXT-X-PRELOAD-HINT part are held under the hint's own rule, not the
    capped speculative one (rfc8216bis 6.2.6: the hinted resource MUST be requestable)."""

    async def main() -> None:
        p, store = _pipeline()
        store.max_speculative_holds = 0  # no speculative holds at all: only announced paths wait
        p.on_run_start(1, time.time())
        v, a = Source(*sources[VIDEO]), Source(*sources[AUDIO])
        p.on_output(VIDEO, v.init)
        p.on_output(AUDIO, a.init)
        _feed(p, {VIDEO: v, AUDIO: a}, 2.2)
        for name in (VIDEO, AUDIO):
            text = store.playlist(f"live/{name}/index.m3u8").full.decode()
            uri = text.split('#EXT-X-PRELOAD-HINT:TYPE=PART,URI="')[1].split('"')[0]
            bound = store.hold_bound(f"live/{name}/{uri}")
            assert bound is not None and bound[2] is False, (name, uri)
        assert len(store._expected) == 2  # one live hint per rendition, the rest consumed

    asyncio.run(main())


def _epoch_sources(sources, video_at: float, audio_at: float) -> tuple[Source, Source]:
    """Sources whose decode times are epoch seconds, as an epoch-locked encoder writes them:
    video from `video_at` (a segment boundary: the encoder drops the frames before it),
    audio from `audio_at` (it is not trimmed in FFmpeg)."""
    v, a = Source(*sources[VIDEO]), Source(*sources[AUDIO])
    v.next_dt = round(video_at * 30 * v.samples[0].duration)
    a.next_dt = round(audio_at * 48000)
    return v, a


@on_loop
def test_epoch_locked_numbers_and_edges_follow_the_epoch_across_a_restart(sources) -> None:
    """Redundant origins (epoch-locked encoders, transcode/epoch.py): MSN = the slot of the
    segment on the epoch's segment grid, PDT and tfdt = that slot's start, audio cut at the
    video's first boundary even though it came first; after an encoder downtime the numbers
    jump by the downtime, HLS lists exactly the skipped slots as gaps with no
    EXT-X-DISCONTINUITY (the other origins have none there: RFC 8216 6.2.4), and the MPD ends
    the old run's Period at its last segment (endNumber)."""
    from flowcast.package.mpd import parse_mpd

    p, store = _pipeline(redundant=("http://127.0.0.1:8081", "http://127.0.0.1:8082"))
    boundary = float(int(time.time()) - 20)  # 1 s segments: every whole second is a boundary
    p.on_run_start(1, time.time())
    v, a = _epoch_sources(sources, boundary, boundary - 0.37)
    p.on_output(VIDEO, v.init)
    p.on_output(AUDIO, a.init)
    p.on_output(AUDIO, a.chunk(20))  # audio before the video's first frame: held, then cut at the boundary
    _feed(p, {VIDEO: v, AUDIO: a}, 3.0)
    first = p.periods[0]
    assert (first.start, first.start_number, first.wall_clock) == (boundary, int(boundary), boundary)
    for name in (VIDEO, AUDIO):
        segs = p.renditions[name].segments
        assert segs[0].msn == int(boundary), (name, [s.msn for s in segs])
        for seg in segs:
            assert abs(seg.start - seg.msn) < 0.011 and abs(seg.program_date_time - seg.msn) < 0.011, (name, seg)
    p.on_run_start(2, time.time())  # closes what run 1 left open
    last_run1 = min(r.segments[-1].msn for r in p.renditions.values())
    again = boundary + 15.0
    v, a = _epoch_sources(sources, again, again - 0.6)
    p.on_output(VIDEO, v.init)
    p.on_output(AUDIO, a.init)
    p.on_output(AUDIO, a.chunk(30))
    _feed(p, {VIDEO: v, AUDIO: a}, 3.0)
    second = p.periods[1]
    assert second.start_number == int(again) and second.start == again
    assert first.last_msn == last_run1
    for name in (VIDEO, AUDIO):
        segs = p.renditions[name].segments
        msns = [s.msn for s in segs]
        assert msns == list(range(msns[0], msns[0] + len(msns))), (name, msns)
        gaps = [s for s in segs if s.gap]
        assert [s.msn for s in gaps] == list(range(last_run1 + 1, int(again))), (name, [s.msn for s in gaps])
        assert all(s.start == s.msn and s.duration == 1.0 and s.program_date_time == s.msn for s in gaps)
        real = [s for s in segs if not s.gap and s.msn >= int(again)]
        assert real and all(abs(s.start - s.msn) < 0.011 for s in real), (name, real[:2])
        text = store.playlist(f"live/{name}/index.m3u8").full.decode()
        assert "#EXT-X-DISCONTINUITY" not in text.replace("#EXT-X-DISCONTINUITY-SEQUENCE", "")
        assert conformance.errors(conformance.check_media_playlist(text)) == []
    # the stored segments carry the epoch on their tfdt
    init = store.get(f"live/{AUDIO}/init.mp4").data
    seg = store.get(f"live/{AUDIO}/{int(again) + 1}.m4s").data
    frags = [e for e in FragmentedMP4Reader().feed(init + seg) if isinstance(e, Fragment)]
    assert abs(frags[0].samples[0].decode_time / 48000 - (int(again) + 1)) <= 512 / 48000
    text = store.get("live/manifest.mpd").data.decode()
    assert f'endNumber="{first.last_msn}"' in text
    periods = parse_mpd(text).periods
    templates = [per.adaptation_sets[0].segment_template for per in periods]
    assert [t.start_number for t in templates] == [first.start_number, second.start_number]
    # $Number$ N sits at media time N x 1 s: presentationTimeOffset = startNumber x duration
    assert all(t.presentation_time_offset == t.start_number * t.timescale for t in templates)


@on_loop
def test_epoch_locked_rendition_that_misses_the_first_boundary_starts_at_the_next(sources) -> None:
    """A rendition whose first sample comes after the run's first boundary starts at the next
    slot (its playlist starts one number later), still numbered by the slot it starts in."""
    p, store = _pipeline(redundant=("http://127.0.0.1:8081", "http://127.0.0.1:8082"))
    boundary = float(int(time.time()) - 20)
    p.on_run_start(1, time.time())
    v, a = _epoch_sources(sources, boundary, boundary + 0.05)  # audio 50 ms late: misses the boundary
    p.on_output(VIDEO, v.init)
    p.on_output(AUDIO, a.init)
    _feed(p, {VIDEO: v, AUDIO: a}, 3.0)
    assert p.renditions[VIDEO].segments[0].msn == int(boundary)
    audio = p.renditions[AUDIO].segments
    assert audio[0].msn == int(boundary) + 1 and not audio[0].gap, [s.msn for s in audio]
