"""Box parser and writer: round trips, size forms, and fuzzing (only BoxError may escape)."""

from __future__ import annotations

import random

import pytest
from _ffmedia import MediaFactory
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from flowcast.media.boxes import (
    BoxError,
    ByteReader,
    box,
    find_path,
    full_box,
    full_box_header,
    iter_boxes,
    read_header,
)
from flowcast.media.fmp4 import FragmentedMP4Reader

fourcc = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=4, max_size=4)


@given(st.lists(st.tuples(fourcc, st.binary(max_size=64)), max_size=8))
def test_write_then_read_round_trip(items: list[tuple[str, bytes]]) -> None:
    assume(not any(t == "uuid" and len(p) < 16 for t, p in items))  # refused: see below
    data = b"".join(box(t, p) for t, p in items)
    parsed = list(iter_boxes(data))
    assert [(b.type, b.payload) for b in parsed if b.type != "uuid"] == [(t, p) for t, p in items if t != "uuid"]


def test_uuid_box_without_extended_type_is_refused() -> None:
    # Written as 8 bytes it would read back as a truncated 24-byte header (14496-12 4.2.2).
    with pytest.raises(BoxError):
        box("uuid", b"")
    assert list(iter_boxes(box("uuid", bytes(16) + b"x")))[0].payload == b"x"


def test_largesize_and_size_zero() -> None:
    payload = b"abc"
    large = (1).to_bytes(4, "big") + b"free" + (16 + len(payload)).to_bytes(8, "big") + payload
    to_end = (0).to_bytes(4, "big") + b"mdat" + b"tail bytes"
    boxes = list(iter_boxes(box("ftyp", b"iso6") + large + to_end))
    assert [(b.type, b.header_size, b.payload) for b in boxes] == [
        ("ftyp", 8, b"iso6"),
        ("free", 16, payload),
        ("mdat", 8, b"tail bytes"),
    ]


def test_uuid_box_header_includes_extended_type() -> None:
    data = box("uuid", bytes(range(16)) + b"body")
    assert read_header(data) == ("uuid", 24, len(data))
    assert next(iter_boxes(data)).payload == b"body"


def test_full_box_helpers() -> None:
    data = full_box("tfdt", 1, 0x020001, b"\x00" * 8)
    (parsed,) = iter_boxes(data)
    assert full_box_header(parsed.payload) == (1, 0x020001)
    with pytest.raises(BoxError):
        full_box("tfdt", 256, 0)
    with pytest.raises(BoxError):
        box("toolong", b"")


@pytest.mark.parametrize(
    "data",
    [b"\x00\x00\x00\x10moov\x00", b"\x00\x00\x00\x04free", b"\x00\x00\x00\x01mdat\x00\x00", b"\x00\x00\x00"],
)
def test_truncated_or_garbage_raises_box_error(data: bytes) -> None:
    with pytest.raises(BoxError):
        list(iter_boxes(data))


def test_byte_reader_raises_box_error() -> None:
    r = ByteReader(b"\x01\x02\x03")
    assert r.u16() == 0x0102
    with pytest.raises(BoxError):
        r.u32()


def test_find_path(media: MediaFactory) -> None:
    moov = next(b for b in iter_boxes(media.data("h264")) if b.type == "moov")
    mdhd = find_path(moov.payload, "trak", "mdia", "mdhd")
    assert mdhd is not None and mdhd.type == "mdhd"
    assert find_path(moov.payload, "trak", "nope") is None


@settings(max_examples=300)
@given(st.binary(max_size=512))
def test_parser_on_random_bytes(data: bytes) -> None:
    try:
        for b in iter_boxes(data):
            for _ in iter_boxes(b.payload):
                pass
    except BoxError:
        pass


@settings(max_examples=300)
@given(st.binary(max_size=512), st.integers(1, 64))
def test_reader_on_random_bytes(data: bytes, step: int) -> None:
    reader = FragmentedMP4Reader()
    try:
        for i in range(0, len(data), step):
            reader.feed(data[i : i + step])
    except BoxError:
        pass


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
@given(st.data())
def test_reader_on_mutated_real_media(media: MediaFactory, data: st.DataObject) -> None:
    """Flip bytes in real FFmpeg output (moov and first fragments) so the structure is nearly right."""
    name = data.draw(st.sampled_from(["h264_bframes", "aac", "hevc", "opus"]))
    original = media.data(name)[:6000]
    rng = random.Random(data.draw(st.integers(0, 2**32 - 1)))
    mutated = bytearray(original)
    for _ in range(data.draw(st.integers(1, 12))):
        mutated[rng.randrange(len(mutated))] = rng.randrange(256)
    reader = FragmentedMP4Reader()
    try:
        for i in range(0, len(mutated), 997):
            reader.feed(bytes(mutated[i : i + 997]))
    except BoxError:
        pass


def test_reader_rejects_oversized_and_runaway_boxes() -> None:
    with pytest.raises(BoxError):
        FragmentedMP4Reader(max_box_size=1000).feed(b"\x00\x00\x10\x00mdat")
    # a trun claiming 2**32-1 default-sized samples must fail fast, not loop
    from flowcast.media.boxes import full_box

    tfhd = full_box("tfhd", 0, 0x020010, (1).to_bytes(4, "big") + (4).to_bytes(4, "big"))
    trun = full_box("trun", 0, 0, (0xFFFFFFFF).to_bytes(4, "big"))
    with pytest.raises(BoxError):
        FragmentedMP4Reader().feed(box("moof", box("traf", tfhd + trun)))
