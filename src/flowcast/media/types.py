"""Value types shared by the fMP4 reader, the CMAF writer and the packager."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

TrackKind = Literal["video", "audio"]


@dataclass(frozen=True, slots=True)
class TrackInfo:
    """What a playlist or manifest needs to describe one track."""

    track_id: int
    kind: TrackKind
    timescale: int
    codec: str  # RFC 6381 string, e.g. "avc1.64001f", "mp4a.40.2"
    width: int = 0
    height: int = 0
    sample_rate: int = 0
    channels: int = 0


@dataclass(frozen=True, slots=True)
class InitSegment:
    """A CMAF header (ftyp + moov) and the tracks it declares."""

    data: bytes
    tracks: tuple[TrackInfo, ...]


@dataclass(frozen=True, slots=True)
class Sample:
    """One access unit with its timing, in the track's timescale."""

    decode_time: int
    duration: int
    composition_offset: int
    is_sync: bool
    flags: int  # ISO/IEC 14496-12 sample_flags as they will be written
    data: bytes


@dataclass(frozen=True, slots=True)
class Fragment:
    """The samples of one moof+mdat for one track."""

    track_id: int
    samples: tuple[Sample, ...]
