"""Subsample maps for H.264/HEVC, checked against FFmpeg's own slice header parser (trace_headers)."""

from __future__ import annotations

import pytest
from _protmedia import Media, ffmpeg_slice_header_bits
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowcast.protect.init import protect_init, tenc_box
from flowcast.protect.subsamples import (
    MAX_CLEAR,
    AvcSliceParser,
    HevcSliceParser,
    SubsampleError,
    iter_nals,
    subsample_map,
)

VIDEO = ["h264", "h264_bframes", "h264_high", "hevc"]


def _parser(media: Media, name: str):
    init, samples = media.read(name)
    config = protect_init(init.data, init.tracks[0].track_id, "cbcs", tenc_box(b"k" * 16, per_sample_iv_size=8)).codec_config
    assert config is not None
    parser = AvcSliceParser.from_avcc(config.payload) if config.type == "avcC" else HevcSliceParser.from_hvcc(config.payload)
    return parser, samples


def _nal_kind(parser, nal: bytes) -> int:
    return nal[0] & 0x1F if isinstance(parser, AvcSliceParser) else (nal[0] >> 1) & 0x3F


@pytest.mark.parametrize("name", VIDEO)
def test_slice_headers_match_ffmpeg(media: Media, name: str) -> None:
    """clear == length prefix + NAL header + slice header (to the first byte after it, 23001-7
    10.4.2 for cbcs), non-VCL NALs wholly clear; slice header lengths as FFmpeg's cbs parses them."""
    parser, samples = _parser(media, name)
    expected_bits = ffmpeg_slice_header_bits(media.path(name))
    slice_index = 0
    non_vcl_kinds = set()
    for sample in samples:
        expected, clear = [], 0
        for offset, size in iter_nals(sample.data, parser.length_size):
            nal = sample.data[offset : offset + size]
            if not parser.is_vcl(nal):
                non_vcl_kinds.add(_nal_kind(parser, nal))
                clear += parser.length_size + size
                continue
            header = (expected_bits[slice_index] + 7) // 8
            slice_index += 1
            assert b"\x00\x00\x03" not in nal[: header + 2], "fixture header holds an emulation prevention byte"
            expected.append((clear + parser.length_size + header, size - header))
            clear = 0
        if clear:
            expected.append((clear, 0))
        got = subsample_map(sample.data, parser, "cbcs")
        assert [(e.clear, e.protected) for e in got] == expected
        for (want_clear, _), entry in zip(expected, subsample_map(sample.data, parser, "cenc")):
            assert entry.protected % 16 == 0
            assert want_clear <= entry.clear < want_clear + 16
    assert slice_index == len(expected_bits)
    if name.startswith("h264"):
        assert 6 in non_vcl_kinds  # x264's SEI in the first sample, kept clear


@pytest.mark.parametrize("name", VIDEO)
def test_inband_parameter_sets_and_aud_stay_clear(media: Media, name: str) -> None:
    """avc3/hev1 style: AUD + SPS + PPS ahead of the slices are clear and update the parser."""
    init, samples = media.read(name)
    config = protect_init(init.data, 1, "cbcs", tenc_box(b"k" * 16, per_sample_iv_size=8)).codec_config
    assert config is not None
    if config.type == "avcC":
        empty = AvcSliceParser(4)
        sets = [AvcSliceParser.from_avcc(config.payload)]  # only to check they parse
        p = config.payload
        sps_len = int.from_bytes(p[6:8], "big")
        sps = p[8 : 8 + sps_len]
        pps_len = int.from_bytes(p[9 + sps_len : 11 + sps_len], "big")
        nals = [b"\x09\xf0", sps, p[11 + sps_len : 11 + sps_len + pps_len]]
    else:
        empty = HevcSliceParser(4)
        sets = [HevcSliceParser.from_hvcc(config.payload)]
        p, pos, nals = config.payload, 23, [bytes([35 << 1, 1, 0x50])]
        for _ in range(p[22]):
            count = int.from_bytes(p[pos + 1 : pos + 3], "big")
            pos += 3
            for _ in range(count):
                size = int.from_bytes(p[pos : pos + 2], "big")
                nals.append(p[pos + 2 : pos + 2 + size])
                pos += 2 + size
    assert sets[0].sps and sets[0].pps
    prefix = b"".join(len(n).to_bytes(4, "big") + n for n in nals)
    with pytest.raises(SubsampleError):  # no parameter sets known yet
        subsample_map(samples[0].data, type(empty)(4), "cbcs")
    first = subsample_map(prefix + samples[0].data, empty, "cbcs")
    reference = subsample_map(samples[0].data, sets[0], "cbcs")
    assert first[0].clear == len(prefix) + reference[0].clear
    assert [(e.clear, e.protected) for e in first[1:]] == [(e.clear, e.protected) for e in reference[1:]]


@pytest.mark.parametrize("name", VIDEO)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_map_invariants(media: Media, name: str, data: st.DataObject) -> None:
    """Maps cover the sample exactly, clear runs fit 16 bits, cenc protected runs are 16n —
    also with large non-VCL NALs (filler/SEI) around the slices."""
    parser, samples = _parser(media, name)
    sample = data.draw(st.sampled_from(samples)).data
    avc = isinstance(parser, AvcSliceParser)
    filler = (lambda n: bytes([12]) + b"\xff" * n) if avc else (lambda n: bytes([38 << 1, 1]) + b"\xff" * n)
    sizes = data.draw(st.lists(st.integers(0, 150_000), max_size=3))
    pre = b"".join(len(f).to_bytes(4, "big") + f for f in map(filler, sizes))
    post = data.draw(st.sampled_from([b"", (lambda f: len(f).to_bytes(4, "big") + f)(filler(70_000))]))
    sample = pre + sample + post
    for scheme in ("cenc", "cbcs"):
        entries = subsample_map(sample, parser, scheme)
        assert sum(e.clear + e.protected for e in entries) == len(sample)
        assert all(0 <= e.clear <= MAX_CLEAR for e in entries)
        if scheme == "cenc":
            assert all(e.protected % 16 == 0 for e in entries)
        # every protected byte lies inside a VCL NAL past its slice header
        vcl_ranges = []
        for offset, size in iter_nals(sample, parser.length_size):
            nal = sample[offset : offset + size]
            if parser.is_vcl(nal):
                vcl_ranges.append((offset + parser.slice_header_size(nal), offset + size))
        pos = 0
        for e in entries:
            pos += e.clear
            if e.protected:
                assert any(lo <= pos and pos + e.protected <= hi for lo, hi in vcl_ranges)
            pos += e.protected


def test_truncated_sample_raises(media: Media) -> None:
    parser, samples = _parser(media, "h264")
    with pytest.raises(SubsampleError):
        subsample_map(samples[0].data[:-1], parser, "cbcs")


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_garbage_raises_only_subsample_error(blob: bytes) -> None:
    for parser in (AvcSliceParser(4), HevcSliceParser(4)):
        try:
            subsample_map(blob, parser, "cenc")
        except SubsampleError:
            pass
