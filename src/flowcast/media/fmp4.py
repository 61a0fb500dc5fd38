"""Incremental, sans-I/O reader for fragmented MP4 as FFmpeg writes it to a pipe.

Bytes arrive in arbitrary chunks; the reader buffers until a whole top-level box is there and
turns ftyp+moov into an InitSegment and each moof+mdat into one Fragment per traf.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from .boxes import Box, BoxError, ByteReader, box, find_box, find_path, full_box_header, iter_boxes, read_header
from .codecs import CodecError, aac_config, avc_codec, hevc_codec, opus_config
from .types import Fragment, InitSegment, Sample, TrackInfo

__all__ = ["ChunkTiming", "FragmentedMP4Reader", "chunk_timing", "cmaf_ftyp", "is_sync_sample", "parse_moov"]

_BOX = struct.Struct(">I4s")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
# sample_flags bits (14496-12 8.8.3.1)
_NON_SYNC = 0x00010000
# Sanity caps so garbage input fails fast instead of buffering or looping without end.
DEFAULT_MAX_BOX_SIZE = 256 << 20
_MAX_SAMPLES_PER_TRUN = 1 << 20


def is_sync_sample(flags: int) -> bool:
    """sample_is_non_sync_sample clear and sample_depends_on != 1 (8.8.3.1): a random access point."""
    return not flags & _NON_SYNC and (flags >> 24) & 0x3 != 1


def cmaf_ftyp() -> bytes:
    """The ftyp we serve: iso6 (tfdt v1, negative CTO), cmfc (CMAF track file, 23000-19 7.2), mp41, dash."""
    brands = (b"iso6", b"cmfc", b"mp41", b"dash")
    return box("ftyp", b"iso6" + (0).to_bytes(4, "big") + b"".join(brands))


@dataclass(slots=True)
class _Trex:
    description_index: int = 1
    duration: int = 0
    size: int = 0
    flags: int = 0


@dataclass(slots=True)
class _Movie:
    tracks: tuple[TrackInfo, ...]
    trex: dict[int, _Trex] = field(default_factory=dict)


def _track(trak: Box) -> TrackInfo | None:
    tkhd = find_box(trak.payload, "tkhd")
    mdhd = find_path(trak.payload, "mdia", "mdhd")
    hdlr = find_path(trak.payload, "mdia", "hdlr")
    stsd = find_path(trak.payload, "mdia", "minf", "stbl", "stsd")
    if tkhd is None or mdhd is None or hdlr is None or stsd is None:
        raise BoxError("trak lacks tkhd/mdhd/hdlr/stsd")
    version, _ = full_box_header(tkhd.payload)
    r = ByteReader(tkhd.payload, 4)
    r.skip(16 if version == 1 else 8)  # creation_time, modification_time (8.3.2)
    track_id = r.u32()
    version, _ = full_box_header(mdhd.payload)
    r = ByteReader(mdhd.payload, 4)
    r.skip(16 if version == 1 else 8)  # 8.4.2
    timescale = r.u32()
    if timescale == 0:
        raise BoxError(f"track {track_id}: mdhd timescale 0")
    r = ByteReader(hdlr.payload, 8)  # version/flags, pre_defined (8.4.3)
    handler = r.bytes(4)
    if handler not in (b"vide", b"soun"):
        return None
    entries = list(iter_boxes(stsd.payload, 8))  # after version/flags, entry_count (8.5.2)
    if not entries:
        raise BoxError(f"track {track_id}: empty stsd")
    entry = entries[0]
    fourcc = entry.type
    try:
        if handler == b"vide":
            # VisualSampleEntry (8.5.2.2): 8 bytes SampleEntry, 16 pre-defined/reserved, width, height, ...
            r = ByteReader(entry.payload, 24)
            width, height = r.u16(), r.u16()
            children = entry.payload[78:]
            if fourcc == "encv":
                fourcc = _original_format(children, fourcc)
            codec = fourcc
            if fourcc in ("avc1", "avc3"):
                cfg = find_box(children, "avcC")
                if cfg is None:
                    raise BoxError("avc sample entry without avcC")
                codec = avc_codec(fourcc, cfg.payload)
            elif fourcc in ("hvc1", "hev1"):
                cfg = find_box(children, "hvcC")
                if cfg is None:
                    raise BoxError("hevc sample entry without hvcC")
                codec = hevc_codec(fourcc, cfg.payload)
            return TrackInfo(track_id, "video", timescale, codec, width=width, height=height)
        # AudioSampleEntry (8.5.2.2); QuickTime sound v1/v2 entries carry 16/36 more bytes.
        r = ByteReader(entry.payload, 8)
        qt_version = r.u16()
        r.skip(6)
        channels = r.u16()
        r.skip(6)
        rate = r.u32() >> 16
        extra = {1: 16, 2: 36}.get(qt_version, 0)
        children = entry.payload[28 + extra :]
        if fourcc == "enca":
            fourcc = _original_format(children, fourcc)
        codec = fourcc
        if fourcc == "mp4a":
            esds = find_box(children, "esds")
            if esds is None:
                raise BoxError("mp4a sample entry without esds")
            cfg = aac_config(esds.payload, rate, channels)
            codec, rate, channels = cfg.codec, cfg.sample_rate, cfg.channels
        elif fourcc == "Opus":
            dops = find_box(children, "dOps")
            if dops is None:
                raise BoxError("Opus sample entry without dOps")
            cfg = opus_config(dops.payload)
            codec, rate, channels = cfg.codec, cfg.sample_rate, cfg.channels
        return TrackInfo(track_id, "audio", timescale, codec, sample_rate=rate, channels=channels)
    except CodecError as exc:
        raise BoxError(f"track {track_id}: {exc}") from exc


def _original_format(children: bytes, fallback: str) -> str:
    """The codec under encv/enca: sinf/frma data_format (ISO/IEC 23001-7 clause 4)."""
    frma = find_path(children, "sinf", "frma")
    return frma.payload[:4].decode("latin-1") if frma is not None and len(frma.payload) >= 4 else fallback


def parse_moov(moov: bytes) -> _Movie:
    """Tracks (video/audio only) and trex defaults from a moov payload."""
    tracks = []
    trex: dict[int, _Trex] = {}
    for child in iter_boxes(moov):
        if child.type == "trak":
            info = _track(child)
            if info is not None:
                tracks.append(info)
        elif child.type == "mvex":
            for ext in iter_boxes(child.payload):
                if ext.type == "trex":  # 8.8.3
                    r = ByteReader(ext.payload, 4)
                    track_id = r.u32()
                    trex[track_id] = _Trex(r.u32(), r.u32(), r.u32(), r.u32())
    return _Movie(tuple(tracks), trex)


@dataclass(slots=True)
class _Run:
    """Samples of one traf whose data positions are absolute stream offsets."""

    track_id: int
    decode_time: int
    entries: list[tuple[int, int, int, int, int]]  # (offset, size, duration, flags, cto)


class FragmentedMP4Reader:
    """Feed bytes, get InitSegment and Fragment events. After a BoxError the reader is unusable.

    A top-level box with size 0 ("to end of file", 14496-12 4.2.2) is never complete on a live
    pipe, so the reader keeps waiting; FFmpeg's fragmented output never writes one.
    """

    def __init__(self, *, max_box_size: int = DEFAULT_MAX_BOX_SIZE) -> None:
        self._max_box_size = max_box_size
        self._buf = bytearray()
        self._pos = 0  # stream offset of self._buf[0]
        self._movie: _Movie | None = None
        self._pending: tuple[int, list[_Run]] | None = None  # moof waiting for its mdat
        self._next_decode: dict[int, int] = {}  # for trafs without tfdt

    @property
    def tracks(self) -> tuple[TrackInfo, ...]:
        return self._movie.tracks if self._movie else ()

    def feed(self, data: bytes) -> list[InitSegment | Fragment]:
        """Buffer `data`; return the events for every top-level box it completes."""
        self._buf += data
        events: list[InitSegment | Fragment] = []
        start = 0
        while True:
            head = read_header(self._buf, start)
            if head is None:
                break
            box_type, header, size = head
            if size > self._max_box_size:
                raise BoxError(f"top-level {box_type!r} box of {size} bytes exceeds {self._max_box_size}")
            if size == 0 or start + size > len(self._buf):
                break  # size 0 means "to end of file": a live pipe never ends, so wait
            payload = bytes(self._buf[start + header : start + size])
            events.extend(self._on_box(box_type, self._pos + start, header, payload))
            start += size
        if start:
            del self._buf[:start]
            self._pos += start
        return events

    def _on_box(self, box_type: str, offset: int, header: int, payload: bytes) -> list[InitSegment | Fragment]:
        if box_type == "moov":
            self._movie = parse_moov(payload)
            init = cmaf_ftyp() + box("moov", payload)
            return [InitSegment(init, self._movie.tracks)]
        if box_type == "moof":
            self._pending = (offset, self._parse_moof(offset, payload))
            return []
        if box_type == "mdat" and self._pending is not None:
            _, runs = self._pending
            self._pending = None
            return self._resolve(runs, offset + header, payload)
        return []  # ftyp, styp, sidx, prft, free, emsg...: nothing the packager needs

    def _parse_moof(self, moof_offset: int, moof: bytes) -> list[_Run]:
        runs: list[_Run] = []
        data_end = moof_offset  # 8.8.7.1: without base offset, traf n>1 follows traf n-1's data
        for traf in iter_boxes(moof):
            if traf.type != "traf":
                continue
            tfhd = find_box(traf.payload, "tfhd")
            if tfhd is None:
                raise BoxError("traf without tfhd")
            _, flags = full_box_header(tfhd.payload)
            r = ByteReader(tfhd.payload, 4)
            track_id = r.u32()
            trex = self._movie.trex.get(track_id, _Trex()) if self._movie else _Trex()
            if flags & 0x000001:
                base = r.u64()  # base-data-offset: absolute stream offset
            elif flags & 0x020000:
                base = moof_offset  # default-base-is-moof
            else:
                base = moof_offset if not runs else data_end
            if flags & 0x000002:
                r.skip(4)  # sample-description-index
            default_duration = r.u32() if flags & 0x000008 else trex.duration
            default_size = r.u32() if flags & 0x000010 else trex.size
            default_flags = r.u32() if flags & 0x000020 else trex.flags
            decode_time = self._next_decode.get(track_id, 0)
            entries: list[tuple[int, int, int, int, int]] = []
            position = base
            for child in iter_boxes(traf.payload):
                if child.type == "tfdt":  # 8.8.12
                    version, _ = full_box_header(child.payload)
                    r = ByteReader(child.payload, 4)
                    decode_time = r.u64() if version == 1 else r.u32()
                elif child.type == "trun":  # 8.8.8
                    version, tr_flags = full_box_header(child.payload)
                    r = ByteReader(child.payload, 4)
                    count = r.u32()
                    if tr_flags & 0x000001:
                        position = base + r.i32()
                    first_flags = r.u32() if tr_flags & 0x000004 else None
                    per_sample = 4 * bin(tr_flags & 0xF00).count("1")
                    if count > _MAX_SAMPLES_PER_TRUN or count * per_sample > r.remaining:
                        raise BoxError(f"trun claims {count} samples, payload too short")
                    if count and not per_sample and not default_size:
                        raise BoxError("trun without sizes and no default sample size")
                    for i in range(count):
                        duration = r.u32() if tr_flags & 0x100 else default_duration
                        size = r.u32() if tr_flags & 0x200 else default_size
                        if tr_flags & 0x400:
                            sample_flags = r.u32()
                        elif i == 0 and first_flags is not None:
                            sample_flags = first_flags
                        else:
                            sample_flags = default_flags
                        cto = 0
                        if tr_flags & 0x800:
                            cto = r.i32() if version == 1 else r.u32()  # v0 unsigned, v1 signed
                        entries.append((position, size, duration, sample_flags, cto))
                        position += size
            data_end = position
            self._next_decode[track_id] = decode_time + sum(e[2] for e in entries)
            runs.append(_Run(track_id, decode_time, entries))
        return runs

    def _resolve(self, runs: list[_Run], mdat_start: int, mdat: bytes) -> list[InitSegment | Fragment]:
        events: list[InitSegment | Fragment] = []
        mdat_end = mdat_start + len(mdat)
        for run in runs:
            samples = []
            decode_time = run.decode_time
            for offset, size, duration, flags, cto in run.entries:
                if offset < mdat_start or offset + size > mdat_end:
                    raise BoxError(f"track {run.track_id}: sample data outside the following mdat")
                lo = offset - mdat_start
                samples.append(Sample(decode_time, duration, cto, is_sync_sample(flags), flags, mdat[lo : lo + size]))
                decode_time += duration
            events.append(Fragment(run.track_id, tuple(samples)))
        return events


@dataclass(frozen=True, slots=True)
class ChunkTiming:
    """Where CMAF chunks sit on their track's media timeline, in its timescale."""

    decode_time: int  # tfdt of the first chunk
    duration: int  # summed sample durations of all chunks
    max_sample_duration: int


def chunk_timing(data: bytes, default_duration: int = 0) -> ChunkTiming | None:
    """Timing of the chunks (moof+mdat, one track) laid end to end in `data`, read from the
    moof boxes alone: a client following the media timeline (the load tester's continuity
    check, on every part it fetches) needs neither the samples nor a copy of the mdat, so
    this walks offsets in place. `default_duration`: the trex default, for truns and tfhds
    that carry none. None when no moof with a tfdt is there."""
    first: int | None = None
    total = longest = 0
    for moof, moof_end in _children_at(data, 0, len(data), "moof"):
        for traf, traf_end in _children_at(data, moof, moof_end, "traf"):
            duration = default_duration
            pos = traf
            while pos + 8 <= traf_end:
                size, kind = _BOX.unpack_from(data, pos)
                if size < 12 or pos + size > traf_end:
                    raise BoxError(f"bad box in traf at {pos}")
                flags = _U32.unpack_from(data, pos + 8)[0]
                version, flags = flags >> 24, flags & 0xFFFFFF
                body = pos + 12
                if kind == b"tfhd":
                    at = body + 4 + (8 if flags & 0x1 else 0) + (4 if flags & 0x2 else 0)
                    if flags & 0x8:
                        duration = _U32.unpack_from(data, at)[0]
                elif kind == b"tfdt" and first is None:
                    first = (_U64 if version == 1 else _U32).unpack_from(data, body)[0]
                elif kind == b"trun":
                    count = _U32.unpack_from(data, body)[0]
                    at = body + 4 + (4 if flags & 0x1 else 0) + (4 if flags & 0x4 else 0)
                    stride = 4 * bin(flags & 0xF00).count("1")
                    if at + count * stride > pos + size:
                        raise BoxError(f"trun claims {count} samples, payload too short")
                    if flags & 0x100:
                        durations = [_U32.unpack_from(data, at + i * stride)[0] for i in range(count)]
                        total += sum(durations)
                        longest = max(longest, max(durations, default=0))
                    else:
                        total += count * duration
                        longest = max(longest, duration if count else 0)
                pos += size
    return None if first is None else ChunkTiming(first, total, longest)


def _children_at(data: bytes, pos: int, end: int, kind: str) -> list[tuple[int, int]]:
    """(payload start, end) of the boxes of type `kind` among those laid in data[pos:end]
    (incomplete trailing boxes ignored: a body still arriving)."""
    out = []
    while pos < end:
        head = read_header(data, pos)
        if head is None:
            break
        box_type, header, size = head
        if size == 0 or pos + size > end:
            break
        if box_type == kind:
            out.append((pos + header, pos + size))
        pos += size
    return out
