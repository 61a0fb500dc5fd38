"""Protect a CMAF header (ftyp + moov): sample entry -> encv/enca with sinf, pssh in moov.

ISO/IEC 23001-7 clause 4 and 8.2: the sample entry's four-character code becomes encv (video)
or enca (audio); a ProtectionSchemeInfoBox (sinf) appended to it names the original format
(frma), the scheme (schm) and the track defaults (schi/tenc). Every enclosing box is rewritten,
so all parent sizes follow. Sans-I/O: bytes in, bytes out.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from flowcast.media.boxes import Box, BoxError, ByteReader, box, find_box, find_path, full_box, full_box_header, iter_boxes

__all__ = ["ProtectedInit", "protect_init", "tenc_box"]

_SCHEME_VERSION = 0x00010000  # schm scheme_version for cenc and cbcs (23001-7 4.2)
_VISUAL_FIXED = 78  # SampleEntry (8) + VisualSampleEntry fields (70), 14496-12 12.1.3
_AUDIO_FIXED = 28  # SampleEntry (8) + AudioSampleEntry fields (20), 14496-12 12.2.3


@dataclass(frozen=True, slots=True)
class ProtectedInit:
    data: bytes
    original_format: str  # e.g. "avc1"
    codec_config: Box | None  # avcC / hvcC of the track, for the subsample parser


def tenc_box(
    kid: bytes,
    *,
    per_sample_iv_size: int,
    constant_iv: bytes = b"",
    crypt_byte_block: int = 0,
    skip_byte_block: int = 0,
    version: int | None = None,
) -> bytes:
    """TrackEncryptionBox (23001-7 8.2). Version 1 carries the pattern byte (cens/cbcs)."""
    if len(kid) != 16:
        raise BoxError("default_KID must be 16 bytes")
    if per_sample_iv_size not in (0, 8, 16):
        raise BoxError(f"Per_Sample_IV_Size {per_sample_iv_size} not 0, 8 or 16")
    if per_sample_iv_size == 0 and len(constant_iv) not in (8, 16):
        raise BoxError("a constant IV of 8 or 16 bytes is needed when Per_Sample_IV_Size is 0")
    if version is None:
        version = 1 if crypt_byte_block or skip_byte_block else 0
    pattern = (crypt_byte_block & 0xF) << 4 | (skip_byte_block & 0xF) if version else 0
    body = struct.pack(">BBBB", 0, pattern, 1, per_sample_iv_size) + kid
    if per_sample_iv_size == 0:
        body += bytes([len(constant_iv)]) + constant_iv
    return full_box("tenc", version, 0, body)


def _sinf(original_format: str, scheme: str, tenc: bytes) -> bytes:
    frma = box("frma", original_format.encode("latin-1"))
    schm = full_box("schm", 0, 0, scheme.encode("latin-1") + struct.pack(">I", _SCHEME_VERSION))
    return box("sinf", frma + schm + box("schi", tenc))


def _rewrite_children(payload: bytes, start: int, fn: Callable[[Box], bytes | None]) -> bytes:
    """payload[:start] followed by each child box, replaced by fn(child) when that returns bytes."""
    out = [payload[:start]]
    for child in iter_boxes(payload, start):
        new = fn(child)
        out.append(new if new is not None else payload[child.offset : child.offset + child.size])
    return b"".join(out)


def _track_id(trak: Box) -> int:
    tkhd = find_box(trak.payload, "tkhd")
    if tkhd is None:
        raise BoxError("trak without tkhd")
    version, _ = full_box_header(tkhd.payload)
    r = ByteReader(tkhd.payload, 4 + (16 if version == 1 else 8))
    return r.u32()


def protect_init(
    init: bytes,
    track_id: int,
    scheme: str,
    tenc: bytes,
    pssh_boxes: Sequence[bytes] = (),
) -> ProtectedInit:
    """Rewrite `init` so track `track_id` is protected with `scheme` and `tenc`; pssh boxes are
    appended to the moov. Other top-level boxes and other tracks pass through unchanged."""
    found: dict[str, object] = {}

    def on_entry(entry: Box) -> bytes:
        if entry.type in ("encv", "enca"):
            raise BoxError(f"track {track_id} is already protected")
        video = "video" == found["kind"]
        fixed = _VISUAL_FIXED
        if not video:
            qt_version = ByteReader(entry.payload, 8).u16()
            fixed = _AUDIO_FIXED + {1: 16, 2: 36}.get(qt_version, 0)
        if len(entry.payload) < fixed:
            raise BoxError(f"sample entry {entry.type!r} shorter than its fixed fields")
        children = entry.payload[fixed:]
        found["format"] = entry.type
        if video:
            found["config"] = find_box(children, "avcC") or find_box(children, "hvcC")
        new_type = "encv" if video else "enca"
        return box(new_type, entry.payload + _sinf(entry.type, scheme, tenc))

    def on_stsd(stsd: Box) -> bytes | None:
        done = False

        def first_only(entry: Box) -> bytes | None:
            nonlocal done
            if done:
                raise BoxError("stsd with several sample entries is not supported")
            done = True
            return on_entry(entry)

        return box("stsd", _rewrite_children(stsd.payload, 8, first_only))

    def descend(path: tuple[str, ...], leaf: Callable[[Box], bytes | None]) -> Callable[[Box], bytes | None]:
        def fn(child: Box) -> bytes | None:
            if child.type != path[0]:
                return None
            if len(path) == 1:
                return leaf(child)
            return box(child.type, _rewrite_children(child.payload, 0, descend(path[1:], leaf)))

        return fn

    def on_trak(trak: Box) -> bytes | None:
        if trak.type != "trak" or _track_id(trak) != track_id:
            return None
        hdlr = find_path(trak.payload, "mdia", "hdlr")
        handler = hdlr.payload[8:12] if hdlr is not None else b""
        if handler not in (b"vide", b"soun"):
            raise BoxError(f"track {track_id}: cannot protect handler {handler!r}")
        found["kind"] = "video" if handler == b"vide" else "audio"
        return box("trak", _rewrite_children(trak.payload, 0, descend(("mdia", "minf", "stbl", "stsd"), on_stsd)))

    def on_top(top: Box) -> bytes | None:
        if top.type != "moov":
            return None
        payload = _rewrite_children(top.payload, 0, on_trak)
        return box("moov", payload + b"".join(pssh_boxes))

    data = _rewrite_children(init, 0, on_top)
    if "format" not in found:
        raise BoxError(f"no sample entry for track {track_id} in the init segment")
    config = found.get("config")
    return ProtectedInit(data, str(found["format"]), config if isinstance(config, Box) else None)

