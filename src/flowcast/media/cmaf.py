"""CMAF chunk writer (ISO/IEC 23000-19): moof+mdat per chunk, styp per segment, prft for LL-DASH."""

from __future__ import annotations

import struct
from collections.abc import Sequence

from .boxes import BoxError, box, full_box
from .types import Sample

__all__ = [
    "PRFT_ARBITRARY_CONSISTENT",
    "PRFT_CAPTURED",
    "PRFT_ENCODER_INPUT",
    "PRFT_ENCODER_OUTPUT",
    "PRFT_MOOF_FINALIZED",
    "PRFT_MOOF_WRITTEN",
    "write_chunk",
    "write_prft",
    "write_styp",
]

# prft flags (14496-12:2022 8.16.5.2): which instant the NTP timestamp describes.
PRFT_ENCODER_INPUT = 0
PRFT_ENCODER_OUTPUT = 1
PRFT_MOOF_FINALIZED = 2
PRFT_MOOF_WRITTEN = 4
PRFT_ARBITRARY_CONSISTENT = 8
PRFT_CAPTURED = 24

_NTP_UNIX_OFFSET = 2_208_988_800  # seconds from 1900-01-01 (NTP era 0) to 1970-01-01

_TFHD_DEFAULT_BASE_IS_MOOF = 0x020000  # 8.8.7.1; required by CMAF (23000-19 7.5.16)
# trun flags (8.8.8.1): data-offset, sample-duration, sample-size, sample-flags, sample-composition-time-offset
_TRUN_FLAGS = 0x000001 | 0x000100 | 0x000200 | 0x000400 | 0x000800
_SAMPLE = struct.Struct(">IIIi")


def write_chunk(
    sequence_number: int,
    track_id: int,
    samples: Sequence[Sample],
    base_decode_time: int | None = None,
    *,
    traf_boxes: bytes = b"",
    moof_boxes: bytes = b"",
) -> bytes:
    """One CMAF chunk: moof (mfhd, traf(tfhd, tfdt v1, trun v1)) + mdat.

    `traf_boxes` are appended inside the traf after the trun (e.g. senc/saiz/saio, ISO/IEC
    23001-7 7.2) and `moof_boxes` inside the moof after the traf (e.g. pssh); both default to
    nothing, which leaves the output unchanged. The trun data_offset accounts for them.

    tfdt v1 so 64-bit decode times survive long runs; trun v1 so composition offsets may be
    negative (14496-12 8.8.8.2), which the iso6 brand in our ftyp allows.
    """
    if not samples:
        raise BoxError("a CMAF chunk needs at least one sample (23000-19 7.3.2.3)")
    decode_time = samples[0].decode_time if base_decode_time is None else base_decode_time
    if decode_time < 0:
        raise BoxError(f"negative base decode time {decode_time}")
    mfhd = full_box("mfhd", 0, 0, struct.pack(">I", sequence_number))
    tfhd = full_box("tfhd", 0, _TFHD_DEFAULT_BASE_IS_MOOF, struct.pack(">I", track_id))
    tfdt = full_box("tfdt", 1, 0, struct.pack(">Q", decode_time))
    try:
        entries = b"".join(
            _SAMPLE.pack(s.duration, len(s.data), s.flags, s.composition_offset) for s in samples
        )
    except struct.error as exc:
        raise BoxError(f"sample field out of range: {exc}") from exc
    trun_len = 8 + 4 + 4 + 4 + len(entries)  # header, version/flags, sample_count, data_offset
    traf_len = 8 + len(tfhd) + len(tfdt) + trun_len + len(traf_boxes)
    moof_len = 8 + len(mfhd) + traf_len + len(moof_boxes)
    payload_len = sum(len(s.data) for s in samples)
    mdat_header = 8 if payload_len + 8 <= 0xFFFFFFFF else 16
    # data_offset counts from the first byte of the moof (default-base-is-moof) to the first sample.
    trun = full_box("trun", 1, _TRUN_FLAGS, struct.pack(">Ii", len(samples), moof_len + mdat_header) + entries)
    moof = box("moof", mfhd + box("traf", tfhd + tfdt + trun + traf_boxes) + moof_boxes)
    return moof + box("mdat", b"".join(s.data for s in samples))


def write_styp() -> bytes:
    """styp opening a CMAF segment: msdh (DASH media segment, 23009-1 6.3.4.2) and cmfs (CMAF segment,
    23000-19 7.2). Not msix: that brand promises a sidx we do not write."""
    brands = (b"msdh", b"cmfs", b"cmff", b"cmfl")
    return box("styp", b"msdh" + (0).to_bytes(4, "big") + b"".join(brands))


def write_prft(
    reference_track_id: int,
    wallclock: float,
    media_time: int,
    flags: int = PRFT_ENCODER_INPUT,
) -> bytes:
    """ProducerReferenceTimeBox (14496-12 8.16.5): ties `wallclock` (Unix seconds) to a media time.

    LL-DASH players use it to measure latency (DASH-IF LL r8, ProducerReferenceTime); version 1
    carries a 64-bit media_time. Place it before the moof it describes.
    """
    seconds = int(wallclock // 1)
    fraction = int(round((wallclock - seconds) * (1 << 32)))
    if fraction >= 1 << 32:
        seconds, fraction = seconds + 1, 0
    ntp = ((seconds + _NTP_UNIX_OFFSET) << 32) | fraction
    if not 0 <= ntp < 1 << 64 or not 0 <= media_time < 1 << 64:
        raise BoxError("prft timestamp out of range")
    return full_box("prft", 1, flags, struct.pack(">IQQ", reference_track_id, ntp, media_time))
