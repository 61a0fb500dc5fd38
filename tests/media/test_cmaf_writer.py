"""CMAF chunk, styp and prft writers, checked by reading back with our reader and with FFmpeg."""

from __future__ import annotations

import struct

import pytest
from _ffmedia import MediaFactory, decoded_md5s, ffprobe_errors

from flowcast.media.boxes import BoxError, find_path, full_box_header, iter_boxes
from flowcast.media.cmaf import PRFT_CAPTURED, write_chunk, write_prft, write_styp
from flowcast.media.fmp4 import FragmentedMP4Reader
from flowcast.media.types import Fragment, InitSegment, Sample


def _read(data: bytes) -> tuple[InitSegment, list[Sample]]:
    events = FragmentedMP4Reader().feed(data)
    assert isinstance(events[0], InitSegment)
    return events[0], [s for e in events[1:] if isinstance(e, Fragment) for s in e.samples]


@pytest.mark.parametrize("name", ["h264_bframes", "aac"])
def test_rewritten_chunks_read_back_identical(media: MediaFactory, name: str) -> None:
    init, samples = _read(media.data(name))
    track_id = init.tracks[0].track_id
    chunks = [write_chunk(i + 1, track_id, samples[i : i + 7]) for i in range(0, len(samples), 7)]
    _, again = _read(init.data + b"".join(chunks))
    assert again == samples


def test_chunk_layout_follows_cmaf(media: MediaFactory) -> None:
    _, samples = _read(media.data("h264_bframes"))
    chunk = write_chunk(42, 1, samples[:3], base_decode_time=123_456_789_012)
    moof, mdat = iter_boxes(chunk)
    assert (moof.type, mdat.type) == ("moof", "mdat")
    mfhd = find_path(moof.payload, "mfhd")
    assert mfhd is not None and struct.unpack(">I", mfhd.payload[4:8])[0] == 42
    tfhd = find_path(moof.payload, "traf", "tfhd")
    assert tfhd is not None and full_box_header(tfhd.payload)[1] & 0x020000  # default-base-is-moof
    tfdt = find_path(moof.payload, "traf", "tfdt")
    assert tfdt is not None and full_box_header(tfdt.payload)[0] == 1
    assert struct.unpack(">Q", tfdt.payload[4:12])[0] == 123_456_789_012
    trun = find_path(moof.payload, "traf", "trun")
    assert trun is not None and full_box_header(trun.payload) == (1, 0xF01)
    data_offset = struct.unpack(">i", trun.payload[8:12])[0]
    assert chunk[data_offset : data_offset + len(samples[0].data)] == samples[0].data


def test_negative_composition_offsets_survive() -> None:
    samples = [
        Sample(i * 10, 10, -5 if i % 2 else 20, i == 0, 0x02000000 if i == 0 else 0x01010000, b"x" * i)
        for i in range(4)
    ]
    moov_less = write_chunk(1, 1, samples)
    events = FragmentedMP4Reader().feed(moov_less)
    assert events == [Fragment(1, tuple(samples))]


def test_empty_chunk_rejected() -> None:
    with pytest.raises(BoxError):
        write_chunk(1, 1, [])


def test_ffmpeg_decodes_rewritten_file(media: MediaFactory, tmp_path) -> None:
    original = media.path("h264_bframes")
    init, samples = _read(original.read_bytes())
    out = tmp_path / "rewritten.mp4"
    out.write_bytes(init.data + b"".join(write_chunk(i + 1, 1, [s]) for i, s in enumerate(samples)))
    assert ffprobe_errors(out) == ""
    assert decoded_md5s(out) == decoded_md5s(original)


def test_styp_brands() -> None:
    (styp,) = iter_boxes(write_styp())
    assert styp.type == "styp"
    brands = {styp.payload[i : i + 4] for i in range(8, len(styp.payload), 4)}
    assert styp.payload[:4] == b"msdh" and {b"msdh", b"cmfs"} <= brands and b"msix" not in brands


def test_prft_fields() -> None:
    (prft,) = iter_boxes(write_prft(2, 1_700_000_000.25, 90_000_000_000, PRFT_CAPTURED))
    assert prft.type == "prft"
    assert full_box_header(prft.payload) == (1, 24)
    track, ntp, media_time = struct.unpack(">IQQ", prft.payload[4:])
    assert track == 2 and media_time == 90_000_000_000
    assert ntp >> 32 == 1_700_000_000 + 2_208_988_800
    assert ntp & 0xFFFFFFFF == 1 << 30  # .25 s
