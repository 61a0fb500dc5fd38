"""Common Encryption of samples and CMAF chunks (ISO/IEC 23001-7, CMAF 23000-19 clause 8).

Two schemes:
- ``cenc``: AES-128 CTR. 8-byte per-sample IVs (the counter block is IV || 64-bit block count);
  the counter runs on across the protected ranges of one sample (23001-7 9.5.2). Audio is
  full-sample (the trailing partial block is encrypted too); video uses subsamples whose
  protected runs are multiples of 16 bytes (CMAF 8.2.2.2).
- ``cbcs``: AES-128 CBC with a constant IV and a crypt:skip pattern (23001-7 9.6, 10.4): video
  1:9 over each subsample's protected range, with the IV reset to the constant IV at each
  subsample; audio whole-block full-sample (1:0). Trailing partial blocks stay clear.

Sans-I/O: TrackEncryptor takes init/samples as bytes and returns bytes.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from flowcast.media.boxes import BoxError, full_box, iter_boxes
from flowcast.media.cmaf import write_chunk
from flowcast.media.types import Sample, TrackInfo

from .init import protect_init, tenc_box
from .pssh import PsshBox, clearkey_pssh
from .subsamples import AvcSliceParser, HevcSliceParser, NalParser, SubsampleEntry, SubsampleError, subsample_map

__all__ = [
    "CBCS_VIDEO_PATTERN",
    "ContentKey",
    "ProtectError",
    "SampleEncryption",
    "Scheme",
    "TrackEncryptor",
    "encrypt_cbcs",
    "encrypt_cenc",
]

Scheme = Literal["cenc", "cbcs"]
CBCS_VIDEO_PATTERN = (1, 9)  # crypt:skip blocks, 23001-7 10.4.1
_CBCS_AUDIO_PATTERN = (1, 0)  # whole-block full-sample
_BLOCK = 16
_SENC_USE_SUBSAMPLES = 0x000002  # senc flags, 23001-7 7.2.2


class ProtectError(ValueError):
    """Bad key material, an unsupported codec, or a sample we cannot map."""


@dataclass(frozen=True, slots=True)
class ContentKey:
    """kid and key: 16 bytes. iv: the 16-byte constant IV (cbcs) or the 8-byte first IV (cenc)."""

    kid: bytes
    key: bytes = field(repr=False)  # never in logs or tracebacks
    iv: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.kid) != 16 or len(self.key) != 16:
            raise ProtectError("KID and key must be 16 bytes each")
        if len(self.iv) not in (8, 16):
            raise ProtectError("IV must be 8 or 16 bytes")


@dataclass(frozen=True, slots=True)
class SampleEncryption:
    """One sample's auxiliary information: its IV (empty for a constant IV) and subsample map."""

    iv: bytes
    subsamples: tuple[SubsampleEntry, ...] | None  # None: full-sample encryption

    def to_bytes(self) -> bytes:
        if self.subsamples is None:
            return self.iv
        return (
            self.iv
            + struct.pack(">H", len(self.subsamples))
            + b"".join(struct.pack(">HI", e.clear, e.protected) for e in self.subsamples)
        )


def _ranges(size: int, subsamples: Sequence[SubsampleEntry] | None) -> list[tuple[int, int]]:
    """(start, length) of each protected range."""
    if subsamples is None:
        return [(0, size)]
    out, pos = [], 0
    for entry in subsamples:
        pos += entry.clear
        out.append((pos, entry.protected))
        pos += entry.protected
    if pos != size:
        raise ProtectError(f"subsample map covers {pos} bytes of a {size}-byte sample")
    return out


def encrypt_cenc(key: bytes, iv: bytes, data: bytes, subsamples: Sequence[SubsampleEntry] | None = None) -> bytes:
    """AES-CTR over the protected ranges as one keystream (23001-7 9.5.2). Its own inverse."""
    counter = iv.ljust(16, b"\x00")
    ranges = [(s, n) for s, n in _ranges(len(data), subsamples) if n]
    stream = Cipher(algorithms.AES(key), modes.CTR(counter)).encryptor()
    joined = stream.update(b"".join(data[s : s + n] for s, n in ranges)) + stream.finalize()
    out = bytearray(data)
    pos = 0
    for start, length in ranges:
        out[start : start + length] = joined[pos : pos + length]
        pos += length
    return bytes(out)


def _pattern_blocks(start: int, length: int, crypt: int, skip: int) -> list[int]:
    """Offsets of the 16-byte blocks a crypt:skip pattern encrypts in [start, start+length)."""
    blocks, pos, end = [], start, start + length
    while end - pos >= _BLOCK:
        for _ in range(crypt):
            if end - pos < _BLOCK:
                break
            blocks.append(pos)
            pos += _BLOCK
        pos += _BLOCK * skip
    return blocks


def encrypt_cbcs(
    key: bytes,
    iv: bytes,
    data: bytes,
    subsamples: Sequence[SubsampleEntry] | None = None,
    pattern: tuple[int, int] = CBCS_VIDEO_PATTERN,
    *,
    decrypt: bool = False,
) -> bytes:
    """AES-CBC with a pattern, the chain restarting from `iv` at each subsample (23001-7 9.6).

    Only whole 16-byte blocks are encrypted; a trailing partial block stays clear.
    """
    crypt, skip = pattern
    if crypt <= 0:
        raise ProtectError("cbcs needs at least one crypt block in its pattern")
    out = bytearray(data)
    for start, length in _ranges(len(data), subsamples):
        blocks = _pattern_blocks(start, length, crypt, skip)
        if not blocks:
            continue
        cipher = Cipher(algorithms.AES(key), modes.CBC(iv))
        ctx = cipher.decryptor() if decrypt else cipher.encryptor()
        joined = ctx.update(b"".join(data[b : b + _BLOCK] for b in blocks)) + ctx.finalize()
        for i, b in enumerate(blocks):
            out[b : b + _BLOCK] = joined[i * _BLOCK : (i + 1) * _BLOCK]
    return bytes(out)


class TrackEncryptor:
    """Encrypts one track. Call encrypt_init first (it learns the SPS/PPS and NAL length size
    from avcC/hvcC), then encrypt_chunk for each chunk, in order (cenc IVs count up).

    `systems`: pssh boxes for the moov; None means one Common-system (ClearKey) pssh for the KID.
    """

    def __init__(
        self,
        scheme: Scheme,
        track: TrackInfo,
        key: ContentKey,
        *,
        nal_length_size: int = 4,
        systems: Sequence[PsshBox | bytes] | None = None,
        pssh_in_moof: bool = False,
        sample_groups: bool = False,
    ) -> None:
        if scheme not in ("cenc", "cbcs"):
            raise ProtectError(f"unsupported protection scheme {scheme!r}")
        if scheme == "cbcs" and len(key.iv) != 16:
            raise ProtectError("cbcs needs a 16-byte constant IV")
        if scheme == "cenc" and len(key.iv) != 8:
            raise ProtectError("cenc needs an 8-byte initial IV")
        self.scheme: Scheme = scheme
        self.track = track
        self.key = key
        self._video = track.kind == "video"
        codec = track.codec.split(".")[0]
        self._parser: NalParser | None = None
        if self._video:
            if codec in ("avc1", "avc3"):
                self._parser = AvcSliceParser(nal_length_size)
            elif codec in ("hvc1", "hev1"):
                self._parser = HevcSliceParser(nal_length_size)
            else:
                raise ProtectError(f"no subsample rules for video codec {track.codec!r}")
        if systems is None:
            systems = (clearkey_pssh([key.kid]),)
        self._pssh = tuple(s.to_bytes() if isinstance(s, PsshBox) else bytes(s) for s in systems)
        self._pssh_in_moof = pssh_in_moof
        # Key rotation: name the KID (and cbcs constant IV) in every fragment too, through a
        # `seig` sample group (23001-7 6, 10.2), so a fragment read under another period's init
        # segment (a DASH player fetching one segment past a Period's end) still decrypts.
        self._pattern = (CBCS_VIDEO_PATTERN if self._video else _CBCS_AUDIO_PATTERN) if scheme == "cbcs" else (0, 0)
        self._next_iv = int.from_bytes(key.iv, "big")
        self._seig = _seig_boxes(self) if sample_groups else b""

    @property
    def pssh_boxes(self) -> tuple[bytes, ...]:
        return self._pssh

    def tenc(self) -> bytes:
        if self.scheme == "cenc":
            return tenc_box(self.key.kid, per_sample_iv_size=8, version=0)
        crypt, skip = self._pattern
        return tenc_box(
            self.key.kid, per_sample_iv_size=0, constant_iv=self.key.iv,
            crypt_byte_block=crypt, skip_byte_block=skip, version=1,
        )

    def encrypt_init(self, init: bytes) -> bytes:
        result = protect_init(init, self.track.track_id, self.scheme, self.tenc(), self._pssh)
        if self._video and result.codec_config is not None:
            cfg = result.codec_config
            try:
                if cfg.type == "avcC":
                    self._parser = AvcSliceParser.from_avcc(cfg.payload)
                else:
                    self._parser = HevcSliceParser.from_hvcc(cfg.payload)
            except SubsampleError as exc:
                raise ProtectError(f"track {self.track.track_id}: {exc}") from exc
        return result.data

    def encrypt_sample(self, data: bytes) -> tuple[bytes, SampleEncryption]:
        subsamples: tuple[SubsampleEntry, ...] | None = None
        if self._parser is not None:
            try:
                subsamples = tuple(subsample_map(data, self._parser, self.scheme))
            except SubsampleError as exc:
                raise ProtectError(f"track {self.track.track_id}: {exc}") from exc
        if self.scheme == "cenc":
            iv = (self._next_iv & 0xFFFFFFFFFFFFFFFF).to_bytes(8, "big")
            self._next_iv += 1
            return encrypt_cenc(self.key.key, iv, data, subsamples), SampleEncryption(iv, subsamples)
        return (
            encrypt_cbcs(self.key.key, self.key.iv, data, subsamples, self._pattern),
            SampleEncryption(b"", subsamples),
        )

    def encrypt_chunk(
        self,
        sequence_number: int,
        track_id: int,
        samples: Sequence[Sample],
        base_decode_time: int | None = None,
    ) -> bytes:
        """Same contract as cmaf.write_chunk, with encrypted sample data and senc/saiz/saio."""
        encrypted: list[Sample] = []
        infos: list[SampleEncryption] = []
        for s in samples:
            data, info = self.encrypt_sample(s.data)
            encrypted.append(Sample(s.decode_time, s.duration, s.composition_offset, s.is_sync, s.flags, data))
            infos.append(info)
        aux = _aux_boxes(infos)
        traf_boxes = _sbgp(len(samples)) + self._seig + aux if self._seig else aux
        moof_boxes = b"".join(self._pssh) if self._pssh_in_moof else b""
        chunk = write_chunk(sequence_number, track_id, encrypted, base_decode_time,
                            traf_boxes=traf_boxes, moof_boxes=moof_boxes)
        return _patch_saio(chunk) if aux else chunk


def _seig_boxes(enc: "TrackEncryptor") -> bytes:
    """sgpd (version 1) with one CencSampleEncryptionInfoEntry for the encryptor's key."""
    crypt, skip = enc._pattern
    if enc.scheme == "cenc":
        entry = struct.pack(">BBBB", 0, 0, 1, 8) + enc.key.kid
    else:
        entry = struct.pack(">BBBB", 0, (crypt << 4) | skip, 1, 0) + enc.key.kid
        entry += struct.pack(">B", len(enc.key.iv)) + enc.key.iv
    return full_box("sgpd", 1, 0, b"seig" + struct.pack(">II", len(entry), 1) + entry)


def _sbgp(sample_count: int) -> bytes:
    """Every sample of the fragment in the fragment-local seig group 1 (index 0x10001)."""
    return full_box("sbgp", 0, 0, b"seig" + struct.pack(">III", 1, sample_count, 0x10001))


def _aux_boxes(infos: Sequence[SampleEncryption]) -> bytes:
    """saiz + saio + senc for the traf (23001-7 7.2; 14496-12 8.7.8, 8.7.9).

    Nothing at all when every sample's auxiliary information is empty (cbcs full-sample audio:
    constant IV, no subsamples), as the tenc defaults then say everything.
    """
    raw = [info.to_bytes() for info in infos]
    if not any(raw):
        return b""
    sizes = [len(r) for r in raw]
    if max(sizes) > 0xFF:
        raise ProtectError("sample auxiliary information over 255 bytes (too many subsamples)")
    flags = _SENC_USE_SUBSAMPLES if infos[0].subsamples is not None else 0
    senc = full_box("senc", 0, flags, struct.pack(">I", len(raw)) + b"".join(raw))
    if len(set(sizes)) == 1:
        saiz = full_box("saiz", 0, 0, struct.pack(">BI", sizes[0], len(sizes)))
    else:
        saiz = full_box("saiz", 0, 0, struct.pack(">BI", 0, len(sizes)) + bytes(sizes))
    saio = full_box("saio", 0, 0, struct.pack(">II", 1, 0))  # offset patched once the moof is laid out
    # saiz/saio ahead of senc: readers that follow saio (FFmpeg does) then check our offset.
    return saiz + saio + senc


def _patch_saio(chunk: bytes) -> bytes:
    """Point saio at senc's first sample's info, counted from the moof (default-base-is-moof)."""
    moof = next(iter_boxes(chunk))
    if moof.type != "moof":
        raise BoxError("chunk does not start with moof")
    traf = next(b for b in iter_boxes(moof.payload) if b.type == "traf")
    traf_start = moof.header_size + traf.offset
    saio_pos = senc_pos = None
    for child in iter_boxes(traf.payload):
        at = traf_start + traf.header_size + child.offset
        if child.type == "saio":
            saio_pos = at
        elif child.type == "senc":
            senc_pos = at
    if saio_pos is None or senc_pos is None:
        raise BoxError("chunk lacks saio or senc")
    offset = senc_pos + 8 + 4 + 4  # box header, version/flags, sample_count
    patched = bytearray(chunk)
    struct.pack_into(">I", patched, saio_pos + 8 + 4 + 4, offset)  # after header, v/f, entry_count
    return bytes(patched)
