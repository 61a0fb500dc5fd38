"""FFmpeg-made 2 s fMP4 fixtures for the protect tests, plus a spec-level reader for what we write."""

from __future__ import annotations

import re
import struct
import subprocess
from pathlib import Path

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from flowcast.media.boxes import iter_boxes
from flowcast.media.fmp4 import FragmentedMP4Reader
from flowcast.media.types import Fragment, InitSegment, Sample
from flowcast.protect.cenc import ContentKey, TrackEncryptor

KID = bytes.fromhex("31323334353637383930313233343536")
KEY = bytes.fromhex("32333435363738393021323334353637")
CBCS_IV = bytes.fromhex("000102030405060708090a0b0c0d0e0f")
CENC_IV = bytes.fromhex("0102030405060708")

_VIDEO_IN = ["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30", "-t", "2"]
_AUDIO_IN = ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", "2"]
_EVERY = ["-movflags", "empty_moov+default_base_moof+frag_every_frame"]
_X264 = ["-c:v", "libx264", "-g", "30", "-sc_threshold", "0"]

VARIANTS: dict[str, list[str]] = {
    # ultrafast: CAVLC, no weighted prediction
    "h264": _VIDEO_IN + _X264 + ["-preset", "ultrafast", "-bf", "0"] + _EVERY,
    "h264_bframes": _VIDEO_IN + _X264 + ["-preset", "ultrafast", "-bf", "2"] + _EVERY,
    # high profile: CABAC, 8x8 transform, weighted P prediction, B-pyramid
    "h264_high": _VIDEO_IN + _X264 + ["-preset", "veryfast", "-profile:v", "high", "-bf", "3"] + _EVERY,
    "hevc": _VIDEO_IN
    + ["-c:v", "libx265", "-preset", "ultrafast", "-x265-params", "log-level=error", "-g", "30", "-tag:v", "hvc1"]
    + _EVERY,
    "aac": _AUDIO_IN + ["-c:a", "aac", "-ac", "2"] + _EVERY,
}


class Media:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._made: dict[str, Path] = {}

    def path(self, name: str) -> Path:
        if name not in self._made:
            out = self.root / f"{name}.mp4"
            cmd = ["ffmpeg", "-nostdin", "-v", "error", "-y", *VARIANTS[name], "-threads", "1", "-f", "mp4", str(out)]
            subprocess.run(cmd, check=True, capture_output=True, timeout=120)
            self._made[name] = out
        return self._made[name]

    def read(self, name: str) -> tuple[InitSegment, list[Sample]]:
        init, samples = None, []
        for ev in FragmentedMP4Reader().feed(self.path(name).read_bytes()):
            if isinstance(ev, InitSegment):
                init = ev
            elif isinstance(ev, Fragment):
                samples.extend(ev.samples)
        assert init is not None and samples
        return init, samples


def content_key(scheme: str) -> ContentKey:
    return ContentKey(KID, KEY, CBCS_IV if scheme == "cbcs" else CENC_IV)


def encrypt_file(init: InitSegment, samples: list[Sample], scheme: str, per_chunk: int) -> tuple[TrackEncryptor, bytes]:
    enc = TrackEncryptor(scheme, init.tracks[0], content_key(scheme))  # type: ignore[arg-type]
    parts = [enc.encrypt_init(init.data)]
    for seq, i in enumerate(range(0, len(samples), per_chunk), start=1):
        parts.append(enc.encrypt_chunk(seq, init.tracks[0].track_id, samples[i : i + per_chunk]))
    return enc, b"".join(parts)


def framemd5(data_or_path: bytes | Path, key: bytes | None = None) -> tuple[list[str], str]:
    """Decoded framemd5 lines, reading from a pipe: FFmpeg 5.1's mov demuxer looks up sample
    encryption info in the last-parsed fragment, and on a seekable file it parses every moof
    while reading the header, so multi-fragment files only decrypt when read as a stream."""
    data = data_or_path.read_bytes() if isinstance(data_or_path, Path) else data_or_path
    cmd = ["ffmpeg", "-nostdin", "-v", "error", "-threads", "1"]
    if key is not None:
        cmd += ["-decryption_key", key.hex()]
    cmd += ["-i", "pipe:0", "-f", "framemd5", "-"]
    out = subprocess.run(cmd, input=data, capture_output=True, timeout=120)
    lines = [ln for ln in out.stdout.decode().splitlines() if ln and not ln.startswith("#")]
    return lines, out.stderr.decode()


# --- an independent reader of what the spec says we wrote (23001-7 7.2, 8.2) -----------------


def boxes_by_type(payload: bytes) -> dict[str, list]:
    out: dict[str, list] = {}
    for b in iter_boxes(payload):
        out.setdefault(b.type, []).append(b)
    return out


def parse_senc(payload: bytes, iv_size: int) -> list[tuple[bytes, list[tuple[int, int]] | None]]:
    flags = int.from_bytes(payload[1:4], "big")
    count = struct.unpack_from(">I", payload, 4)[0]
    pos, out = 8, []
    for _ in range(count):
        iv = payload[pos : pos + iv_size]
        pos += iv_size
        subs = None
        if flags & 2:
            n = struct.unpack_from(">H", payload, pos)[0]
            pos += 2
            subs = [struct.unpack_from(">HI", payload, pos + 6 * k) for k in range(n)]
            pos += 6 * n
        out.append((iv, subs))
    assert pos == len(payload)
    return out


def chunks(data: bytes) -> list[tuple[bytes, bytes, int]]:
    """(moof payload, mdat payload, moof offset) pairs of a file we wrote."""
    top = list(iter_boxes(data))
    out = []
    for i, b in enumerate(top):
        if b.type == "moof":
            assert top[i + 1].type == "mdat"
            out.append((b, top[i + 1]))
    return out


def spec_decrypt(scheme: str, key: bytes, iv: bytes, data: bytes, subs, crypt: int, skip: int) -> bytes:
    """Decrypt one sample with single-block AES only, following 23001-7 9.5 (cenc) and 9.6 (cbcs)."""
    ecb = Cipher(algorithms.AES(key), modes.ECB())
    ranges = []
    pos = 0
    for clear, protected in subs if subs is not None else [(0, len(data))]:
        pos += clear
        ranges.append((pos, protected))
        pos += protected
    out = bytearray(data)
    if scheme == "cenc":
        counter = int.from_bytes(iv.ljust(16, b"\0"), "big")
        stream = b""
        total = sum(n for _, n in ranges)
        enc = ecb.encryptor()
        while len(stream) < total:
            stream += enc.update(counter.to_bytes(16, "big"))
            counter += 1
        k = 0
        for start, n in ranges:
            for j in range(n):
                out[start + j] ^= stream[k]
                k += 1
        return bytes(out)
    dec = ecb.decryptor()
    for start, n in ranges:
        chain = iv
        pos, end = start, start + n
        while end - pos >= 16:
            for _ in range(crypt):
                if end - pos < 16:
                    break
                block = data[pos : pos + 16]
                plain = bytes(a ^ b for a, b in zip(dec.update(block), chain))
                out[pos : pos + 16] = plain
                chain = block
                pos += 16
            pos += 16 * skip
    return bytes(out)


_TRACE = re.compile(r"\] (\d+)\s+(\S+)\s+([01]+) = ")
_SECTION = re.compile(r"\] ([A-Z][A-Za-z ]+[a-z])\s*$")


def ffmpeg_slice_header_bits(path: Path) -> list[int]:
    """Per slice in stream order: bits of NAL header + slice header, as FFmpeg's cbs trace_headers
    bitstream filter parses them (H.264 cabac_alignment_one_bit belongs to slice data)."""
    out = subprocess.run(
        ["ffmpeg", "-nostdin", "-i", str(path), "-c", "copy", "-bsf:v", "trace_headers", "-f", "null", "-"],
        capture_output=True, timeout=120,
    )
    ends: list[int] = []
    in_slice = False
    for line in out.stderr.decode(errors="replace").splitlines():
        sec = _SECTION.search(line)
        if sec and not _TRACE.search(line):
            in_slice = "Slice" in sec.group(1)
            if in_slice:
                ends.append(0)
            continue
        if "Packet:" in line:
            in_slice = False
            continue
        m = _TRACE.search(line)
        if m and in_slice and m.group(2) != "cabac_alignment_one_bit":
            ends[-1] = int(m.group(1)) + len(m.group(3))
    return ends
