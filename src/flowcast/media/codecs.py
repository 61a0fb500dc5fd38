"""RFC 6381 codec strings from ISO-BMFF decoder configuration records.

Players pick a rendition by the CODECS attribute before downloading anything, so the string
must describe the real profile/level. Each function takes the payload of the configuration
box (avcC, hvcC, esds, dOps) and raises CodecError on malformed data.
"""

from __future__ import annotations

from dataclasses import dataclass

from .boxes import BoxError, ByteReader, full_box_header

__all__ = ["AudioConfig", "CodecError", "aac_config", "avc_codec", "hevc_codec", "opus_config"]


class CodecError(ValueError):
    """A decoder configuration record that cannot be turned into a codec string."""


@dataclass(frozen=True, slots=True)
class AudioConfig:
    """Codec string plus what the AudioSpecificConfig / dOps says about the signal."""

    codec: str
    sample_rate: int
    channels: int


def avc_codec(sample_entry: str, avcc: bytes) -> str:
    """`avc1.PPCCLL` from an AVCDecoderConfigurationRecord (ISO/IEC 14496-15 5.3.3.1, RFC 6381 3.3)."""
    if len(avcc) < 4 or avcc[0] != 1:
        raise CodecError("avcC too short or configurationVersion != 1")
    return f"{sample_entry}.{avcc[1]:02x}{avcc[2]:02x}{avcc[3]:02x}"


def hevc_codec(sample_entry: str, hvcc: bytes) -> str:
    """`hvc1.1.6.L93.B0` style string from an HEVCDecoderConfigurationRecord (14496-15 E.3)."""
    if len(hvcc) < 13 or hvcc[0] != 1:
        raise CodecError("hvcC too short or configurationVersion != 1")
    profile_space = hvcc[1] >> 6
    tier = (hvcc[1] >> 5) & 1
    profile_idc = hvcc[1] & 0x1F
    compat = int.from_bytes(hvcc[2:6], "big")
    constraints = hvcc[6:12]
    level = hvcc[12]
    # E.3: the 32 compatibility flags in reverse bit order, hex without leading zeros.
    reversed_compat = int(f"{compat:032b}"[::-1], 2)
    space = ("", "A", "B", "C")[profile_space]
    parts = [sample_entry, f"{space}{profile_idc}", f"{reversed_compat:X}", f"{'HL'[tier == 0]}{level}"]
    # E.3: constraint bytes as hex, trailing zero bytes omitted.
    trimmed = constraints.rstrip(b"\x00")
    parts.extend(f"{b:X}" for b in trimmed)
    return ".".join(parts)


_AAC_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350)


class _Bits:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def read(self, n: int) -> int:
        if self.pos + n > len(self.data) * 8:
            raise CodecError("AudioSpecificConfig truncated")
        value = 0
        for _ in range(n):
            byte = self.data[self.pos >> 3]
            value = (value << 1) | ((byte >> (7 - (self.pos & 7))) & 1)
            self.pos += 1
        return value


def _descriptor(reader: ByteReader) -> tuple[int, int]:
    """(tag, size) of an MPEG-4 descriptor; size uses 7-bit groups (ISO/IEC 14496-1 8.3.3)."""
    tag = reader.u8()
    size = 0
    for _ in range(4):
        byte = reader.u8()
        size = (size << 7) | (byte & 0x7F)
        if not byte & 0x80:
            break
    return tag, size


def aac_config(esds: bytes, entry_rate: int = 0, entry_channels: int = 0) -> AudioConfig:
    """`mp4a.<OTI>.<AOT>` plus rate/channels from an esds box payload (14496-14 3.1.2, 14496-3 1.6.2.1)."""
    try:
        full_box_header(esds)
        reader = ByteReader(esds, 4)
        tag, _ = _descriptor(reader)
        if tag != 0x03:  # ES_DescrTag
            raise CodecError(f"esds starts with tag {tag:#x}, expected ES_Descriptor")
        reader.skip(2)  # ES_ID
        flags = reader.u8()
        if flags & 0x80:  # streamDependenceFlag
            reader.skip(2)
        if flags & 0x40:  # URL_Flag
            reader.skip(reader.u8())
        if flags & 0x20:  # OCRstreamFlag
            reader.skip(2)
        tag, _ = _descriptor(reader)
        if tag != 0x04:  # DecoderConfigDescrTag
            raise CodecError("esds has no DecoderConfigDescriptor")
        oti = reader.u8()
        reader.skip(12)  # streamType/upStream/reserved, bufferSizeDB, maxBitrate, avgBitrate
        if oti != 0x40:  # not MPEG-4 Audio: RFC 6381 3.3 stops at the OTI
            return AudioConfig(f"mp4a.{oti:02x}", entry_rate, entry_channels)
        tag, size = _descriptor(reader)
        if tag != 0x05:  # DecSpecificInfoTag
            raise CodecError("esds has no DecoderSpecificInfo")
        asc = reader.bytes(min(size, reader.remaining))
    except BoxError as exc:
        raise CodecError(str(exc)) from exc
    bits = _Bits(asc)
    aot = bits.read(5)
    if aot == 31:  # escape (14496-3 1.6.2.1 GetAudioObjectType)
        aot = 32 + bits.read(6)
    index = bits.read(4)
    rate = bits.read(24) if index == 0xF else (_AAC_RATES[index] if index < len(_AAC_RATES) else 0)
    channel_config = bits.read(4)
    channels = {7: 8}.get(channel_config, channel_config) if 0 < channel_config < 8 else entry_channels
    return AudioConfig(f"mp4a.40.{aot}", rate or entry_rate, channels)


def opus_config(dops: bytes) -> AudioConfig:
    """Opus in ISO-BMFF (Opus-in-ISOBMFF 4.3.2): codec `opus`; Opus always decodes at 48 kHz."""
    if len(dops) < 11 or dops[0] != 0:
        raise CodecError("dOps too short or Version != 0")
    return AudioConfig("opus", 48000, dops[1])
