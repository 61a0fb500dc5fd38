"""FragmentedMP4Reader against FFmpeg output, fed in random-sized chunks like a pipe delivers it."""

from __future__ import annotations

import random

import pytest
from _ffmedia import MediaFactory, md5, packet_md5s, probe_packets, probe_stream

from flowcast.media.boxes import iter_boxes
from flowcast.media.fmp4 import FragmentedMP4Reader
from flowcast.media.types import Fragment, InitSegment

ALL = ["h264", "h264_keyframe", "h264_bframes", "h264_bframes_every", "aac", "aac_keyframe", "hevc", "opus"]


def read_chunked(data: bytes, seed: int) -> tuple[InitSegment, list[Fragment]]:
    rng = random.Random(seed)
    reader = FragmentedMP4Reader()
    events = []
    pos = 0
    while pos < len(data):
        n = rng.choice((1, 7, rng.randint(1, 64), rng.randint(1, 5000)))
        events.extend(reader.feed(data[pos : pos + n]))
        pos += n
    inits = [e for e in events if isinstance(e, InitSegment)]
    frags = [e for e in events if isinstance(e, Fragment)]
    assert len(inits) == 1 and isinstance(events[0], InitSegment)
    return inits[0], frags


@pytest.mark.parametrize("name", ALL)
def test_samples_match_ffprobe(media: MediaFactory, name: str) -> None:
    path = media.path(name)
    init, frags = read_chunked(path.read_bytes(), seed=len(name))
    samples = [s for f in frags for s in f.samples]
    packets = probe_packets(path)
    assert len(samples) == len(packets)
    assert [len(s.data) for s in samples] == [int(p["size"]) for p in packets]
    assert [s.is_sync for s in samples] == ["K" in p["flags"] for p in packets]
    # The demuxer drops the duration of edit-list-trimmed packets and guesses the last one, so
    # check every duration but the last against the dts steps, and the sum against the dts span.
    dts = [int(p["dts"]) for p in packets]
    assert [s.duration for s in samples[:-1]] == [b - a for a, b in zip(dts, dts[1:])]
    assert sum(s.duration for s in samples[:-1]) == dts[-1] - dts[0]
    # decode times are contiguous and match the demuxer's dts (mp4 time base = mdhd timescale)
    assert [s.decode_time for s in samples] == [int(p["dts"]) - int(packets[0]["dts"]) for p in packets]
    assert [md5(s.data) for s in samples] == packet_md5s(path)
    assert all(f.track_id == init.tracks[0].track_id for f in frags)


def test_composition_offsets_with_bframes(media: MediaFactory) -> None:
    path = media.path("h264_bframes")
    _, frags = read_chunked(path.read_bytes(), seed=3)
    samples = [s for f in frags for s in f.samples]
    packets = probe_packets(path)
    ctos = [s.composition_offset for s in samples]
    assert len(set(ctos)) > 1  # reordering is really there
    # pts - dts from the demuxer is the CTO shifted by the edit list, the same for every frame
    shifts = {int(p["pts"]) - int(p["dts"]) - c for p, c in zip(packets, ctos, strict=True)}
    assert len(shifts) == 1


@pytest.mark.parametrize("name", ALL)
def test_track_info_matches_ffprobe(media: MediaFactory, name: str) -> None:
    path = media.path(name)
    init, _ = read_chunked(path.read_bytes(), seed=1)
    (track,) = init.tracks
    stream = probe_stream(path)
    assert track.timescale == int(stream["time_base"].split("/")[1])
    if stream["codec_type"] == "video":
        assert track.kind == "video"
        assert (track.width, track.height) == (stream["width"], stream["height"])
    else:
        assert track.kind == "audio"
        assert track.sample_rate == int(stream["sample_rate"])
        assert track.channels == stream["channels"]
    codec = stream["codec_name"]
    if codec == "h264":
        profile_idc = {"Constrained Baseline": 66, "Baseline": 66, "Main": 77, "High": 100}[stream["profile"]]
        assert track.codec.startswith(f"avc1.{profile_idc:02x}")
        assert track.codec.endswith(f"{stream['level']:02x}")
        assert len(track.codec) == len("avc1.64001f")
    elif codec == "hevc":
        profile_idc = {"Main": 1, "Main 10": 2}[stream["profile"]]
        fields = track.codec.split(".")
        assert fields[0] == "hvc1" and fields[1] == str(profile_idc)
        assert fields[3] == f"L{stream['level']}"
    elif codec == "aac":
        assert track.codec == {"LC": "mp4a.40.2", "HE-AAC": "mp4a.40.5"}[stream["profile"]]
    else:
        assert codec == "opus" and track.codec == "opus"


def test_init_segment_is_cmaf_header(media: MediaFactory) -> None:
    data = media.data("h264")
    init, _ = read_chunked(data, seed=5)
    boxes = list(iter_boxes(init.data))
    assert [b.type for b in boxes] == ["ftyp", "moov"]
    ftyp = boxes[0].payload
    assert ftyp[:4] == b"iso6"
    brands = {ftyp[i : i + 4] for i in range(8, len(ftyp), 4)}
    assert {b"iso6", b"cmfc"} <= brands
    original_moov = next(b for b in iter_boxes(data) if b.type == "moov")
    assert boxes[1].payload == original_moov.payload


def test_whole_file_and_byte_by_byte_agree(media: MediaFactory) -> None:
    data = media.data("aac_keyframe")
    whole = FragmentedMP4Reader().feed(data)
    reader = FragmentedMP4Reader()
    trickle = [e for i in range(len(data)) for e in reader.feed(data[i : i + 1])]
    assert whole == trickle


def test_unknown_top_level_boxes_are_ignored(media: MediaFactory) -> None:
    from flowcast.media.boxes import box
    from flowcast.media.cmaf import write_prft, write_styp

    data = media.data("h264_keyframe")
    boxes = list(iter_boxes(data))
    noisy = b""
    for b in boxes:
        if b.type == "moof":
            noisy += write_styp() + box("sidx", bytes(24)) + write_prft(1, 1.7e9, 0) + box("free", b"x" * 9)
        noisy += data[b.offset : b.offset + b.size]
    assert FragmentedMP4Reader().feed(noisy) == FragmentedMP4Reader().feed(data)


@pytest.mark.parametrize("name", ["h264", "h264_bframes", "aac", "hevc"])
def test_chunk_timing_matches_the_reader(media: MediaFactory, name: str) -> None:
    """chunk_timing (moof boxes only) gives the reader's first decode time and durations, for
    FFmpeg's fragments one by one and for a run of them, and for our own CMAF chunks."""
    from flowcast.media.boxes import read_header
    from flowcast.media.cmaf import write_chunk
    from flowcast.media.fmp4 import chunk_timing

    data = media.data(name)
    _, frags = read_chunked(data, seed=1)
    pos, boxes = 0, []
    while pos < len(data):
        box_type, _, size = read_header(data, pos)
        boxes.append((box_type, pos, size))
        pos += size
    pairs = [(b[1], b[1] + b[2] + n[2]) for b, n in zip(boxes, boxes[1:]) if b[0] == "moof" and n[0] == "mdat"]
    assert len(pairs) == len(frags)
    for (start, end), frag in zip(pairs[:20], frags):
        t = chunk_timing(data[start:end])
        assert t is not None and t.decode_time == frag.samples[0].decode_time
        assert t.duration == sum(s.duration for s in frag.samples)
    whole = chunk_timing(data[pairs[0][0] : pairs[-1][1]])
    assert whole is not None and whole.decode_time == frags[0].samples[0].decode_time
    assert whole.duration == sum(s.duration for f in frags for s in f.samples)
    assert whole.max_sample_duration == max(s.duration for f in frags for s in f.samples)
    ours = write_chunk(7, 1, [s for f in frags[:5] for s in f.samples], 10**14)
    mine = chunk_timing(ours)
    assert mine is not None and mine.decode_time == 10**14
    assert mine.duration == sum(s.duration for f in frags[:5] for s in f.samples)
    assert chunk_timing(b"") is None and chunk_timing(data[: pairs[0][0]]) is None  # init only
