"""Codec-string edge cases that FFmpeg's default encodes do not reach."""

from __future__ import annotations

import pytest

from flowcast.media.codecs import CodecError, aac_config, avc_codec, hevc_codec, opus_config


def _esds(asc: bytes, oti: int = 0x40) -> bytes:
    dsi = bytes([0x05, len(asc)]) + asc
    dcd = bytes([0x04, 13 + len(dsi), oti, 0x15]) + bytes(11) + dsi
    es = bytes([0x03, 3 + len(dcd), 0, 1, 0]) + dcd
    return bytes(4) + es


def test_hevc_main10_high_tier() -> None:
    # profile_space 0, tier 1, profile_idc 2, compat flag 2 set (bit 29 from the top), level 120
    hvcc = bytes([1, 0x22]) + (0x20000000).to_bytes(4, "big") + bytes([0xB0, 0, 0, 0, 0, 0]) + bytes([120]) + bytes(10)
    assert hevc_codec("hev1", hvcc) == "hev1.2.4.H120.B0"


def test_aac_escape_and_explicit_rate() -> None:
    # AOT 5 (SBR), explicit 24-bit rate 44100, channel config 2
    bits = f"{5:05b}{15:04b}{44100:024b}{2:04b}"
    bits += "0" * (-len(bits) % 8)
    asc = int(bits, 2).to_bytes(len(bits) // 8, "big")
    cfg = aac_config(_esds(asc))
    assert (cfg.codec, cfg.sample_rate, cfg.channels) == ("mp4a.40.5", 44100, 2)


def test_mp3_in_mp4() -> None:
    assert aac_config(_esds(b"", oti=0x6B), 44100, 2).codec == "mp4a.6b"


@pytest.mark.parametrize(
    "call",
    [lambda: avc_codec("avc1", b"\x01\x64"), lambda: hevc_codec("hvc1", b"\x01"), lambda: aac_config(b"\x00" * 5),
     lambda: opus_config(b"\x00")],
)
def test_bad_records_raise_codec_error(call) -> None:
    with pytest.raises(CodecError):
        call()
