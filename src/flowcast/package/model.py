"""The packaged timeline: parts and segments as the segmenter publishes them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Part:
    """An LL-HLS part / CMAF chunk: one moof+mdat, published once."""

    msn: int  # media sequence number of the parent segment
    index: int  # part index within the segment, from 0
    start: float  # seconds on the rendition's continuous timeline
    duration: float  # seconds
    independent: bool  # starts with an IDR (EXT-X-PART INDEPENDENT=YES)
    data: bytes


@dataclass(frozen=True, slots=True)
class Segment:
    """A complete CMAF segment: the concatenation of its parts."""

    msn: int
    start: float  # seconds on the continuous timeline
    duration: float  # seconds
    parts: tuple[Part, ...]
    discontinuity: bool  # first segment after an encoder restart or input change
    program_date_time: float  # wall clock (epoch seconds) of the first sample
    data: bytes
    # EXT-X-GAP (rfc8216bis 4.4.4.7): a number this rendition never produced (its encoder
    # run ended before it, while other renditions had started it); no media behind the URI.
    gap: bool = False
