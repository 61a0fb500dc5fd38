"""cenc / cbcs end to end on FFmpeg-made media: FFmpeg decrypts what we encrypt, bit-exactly.

FFmpeg 5.1's mov demuxer implements cenc and cbcs (pattern, constant IV) with -decryption_key,
so both schemes are checked by a real, independent decryptor; a second, spec-level decryptor
written here (single-block AES only) checks every sample and the senc/saiz/saio plumbing.
"""

from __future__ import annotations

import struct
import subprocess

import pytest
from _protmedia import (
    KEY,
    KID,
    Media,
    boxes_by_type,
    chunks,
    content_key,
    encrypt_file,
    framemd5,
    parse_senc,
    spec_decrypt,
)

from flowcast.media.boxes import find_box, find_path, iter_boxes
from flowcast.media.cmaf import write_chunk
from flowcast.media.fmp4 import FragmentedMP4Reader
from flowcast.media.types import Fragment, InitSegment, TrackInfo
from flowcast.protect.cenc import ContentKey, ProtectError, TrackEncryptor, encrypt_cbcs, encrypt_cenc
from flowcast.protect.pssh import COMMON_SYSTEM_ID, WIDEVINE_SYSTEM_ID, PsshBox, clearkey_pssh, find_pssh

CASES = [
    ("h264", "cenc", 1),
    ("h264", "cbcs", 1),
    ("h264_bframes", "cenc", 7),
    ("h264_bframes", "cbcs", 7),
    ("h264_high", "cenc", 1),
    ("h264_high", "cbcs", 10),
    ("hevc", "cenc", 1),
    ("hevc", "cbcs", 5),
    ("aac", "cenc", 1),
    ("aac", "cbcs", 8),
]

_clear_cache: dict[str, list[str]] = {}


def _clear_frames(media: Media, name: str) -> list[str]:
    if name not in _clear_cache:
        lines, err = framemd5(media.path(name))
        assert lines, err
        _clear_cache[name] = lines
    return _clear_cache[name]


@pytest.mark.parametrize(("name", "scheme", "per_chunk"), CASES)
def test_ffmpeg_decrypts_to_the_clear_frames(media: Media, tmp_path, name: str, scheme: str, per_chunk: int) -> None:
    init, samples = media.read(name)
    _, data = encrypt_file(init, samples, scheme, per_chunk)
    clear = _clear_frames(media, name)
    decrypted, err = framemd5(data, KEY)
    assert decrypted == clear, err[-2000:]
    # the encryption is real: without the key (or with a wrong one) the frames differ
    without, _ = framemd5(data)
    assert without != clear
    wrong, _ = framemd5(data, bytes(16))
    assert wrong != clear
    # ffprobe sees a protected sample entry
    path = tmp_path / "enc.mp4"
    path.write_bytes(data)
    trace = subprocess.run(["ffprobe", "-v", "trace", "-i", str(path)], capture_output=True, timeout=60).stderr.decode()
    fourcc = "encv" if init.tracks[0].kind == "video" else "enca"
    assert f"4CC={fourcc}" in trace
    assert "type:'schm' parent:'sinf'" in trace and "type:'tenc' parent:'schi'" in trace


@pytest.mark.parametrize(("name", "scheme", "per_chunk"), CASES)
def test_structure_and_spec_decryption(media: Media, name: str, scheme: str, per_chunk: int) -> None:
    init, samples = media.read(name)
    track = init.tracks[0]
    _, data = encrypt_file(init, samples, scheme, per_chunk)
    top = boxes_by_type(data)
    moov = top["moov"][0].payload
    stsd = find_path(moov, "trak", "mdia", "minf", "stbl", "stsd")
    (entry,) = list(iter_boxes(stsd.payload, 8))
    video = track.kind == "video"
    assert entry.type == ("encv" if video else "enca")
    sinf = find_box(entry.payload[78 if video else 28 :], "sinf")
    frma = find_box(sinf.payload, "frma").payload
    assert frma == track.codec.split(".")[0].encode()
    schm = find_box(sinf.payload, "schm").payload
    assert schm == b"\0\0\0\0" + scheme.encode() + struct.pack(">I", 0x00010000)
    tenc = find_path(sinf.payload, "schi", "tenc").payload
    if scheme == "cenc":
        assert tenc == b"\0\0\0\0" + b"\0\0\x01\x08" + KID
        iv_size, crypt, skip = 8, 0, 0
    else:
        pattern = 0x19 if video else 0x10
        assert tenc == b"\x01\0\0\0" + bytes([0, pattern, 1, 0]) + KID + b"\x10" + content_key("cbcs").iv
        iv_size, crypt, skip = 0, pattern >> 4, pattern & 0xF
    assert find_pssh(moov) == [PsshBox(COMMON_SYSTEM_ID, (KID,), b"", 1)]
    # our own reader still sees the original codec under encv/enca
    events = FragmentedMP4Reader().feed(data)
    assert isinstance(events[0], InitSegment) and events[0].tracks == init.tracks
    assert sum(len(e.samples) for e in events if isinstance(e, Fragment)) == len(samples)

    index = 0
    ivs = []
    for moof, mdat in chunks(data):
        traf = boxes_by_type(boxes_by_type(moof.payload)["traf"][0].payload)
        trun = traf["trun"][0].payload
        count, data_offset = struct.unpack_from(">Ii", trun, 4)
        assert data_offset == moof.size + 8  # first sample at the start of mdat's payload
        sizes = [struct.unpack_from(">I", trun, 12 + 16 * k + 4)[0] for k in range(count)]
        if "senc" not in traf:  # cbcs audio: constant IV, whole sample, tenc says it all
            assert scheme == "cbcs" and not video and "saiz" not in traf and "saio" not in traf
            infos = [(content_key("cbcs").iv, None)] * count
        else:
            senc = traf["senc"][0]
            infos = parse_senc(senc.payload, iv_size)
            assert len(infos) == count
            assert bool(int.from_bytes(senc.payload[1:4], "big") & 2) == video
            saiz = traf["saiz"][0].payload
            default, n = struct.unpack_from(">BI", saiz, 4)
            info_sizes = [default] * n if default else list(saiz[9:])
            (saio_offset,) = struct.unpack_from(">I", traf["saio"][0].payload, 8)
            assert struct.unpack_from(">I", traf["saio"][0].payload, 4)[0] == 1
            # saio counts from the moof (default-base-is-moof) to the first sample's info in senc
            raw = data[moof.offset + saio_offset : moof.offset + saio_offset + sum(info_sizes)]
            senc_body_start = senc.offset + 16 + moof.offset + 8 + 8 + boxes_by_type(moof.payload)["traf"][0].offset
            assert moof.offset + saio_offset == senc_body_start
            assert raw == senc.payload[8:]
            if scheme == "cbcs":
                infos = [(content_key("cbcs").iv, subs) for _, subs in infos]
        pos = 0
        for (iv, subs), size in zip(infos, sizes):
            enc = mdat.payload[pos : pos + size]
            pos += size
            clear = samples[index].data
            assert len(enc) == len(clear)
            if subs is not None:
                assert sum(c + p for c, p in subs) == size
                if scheme == "cenc":
                    assert all(p % 16 == 0 for _, p in subs)
            assert spec_decrypt(scheme, KEY, iv, enc, subs, crypt, skip) == clear
            if size >= 16 + (subs[0][0] if subs else 0):
                assert enc != clear
            ivs.append(iv)
            index += 1
    assert index == len(samples)
    if scheme == "cenc":
        start = int.from_bytes(content_key("cenc").iv, "big")
        assert [int.from_bytes(iv, "big") for iv in ivs] == list(range(start, start + len(ivs)))


def test_cbcs_pattern_details() -> None:
    """1:9 with IV reset per subsample and a clear trailing partial block (23001-7 9.6)."""
    data = bytes(range(256)) * 2  # 512 bytes
    subs = [_S(10, 200), _S(2, 300)]
    out = encrypt_cbcs(KEY, content_key("cbcs").iv, data, subs)
    # subsample 1: protected 10..210: blocks at 10 (enc), 26..170 skipped, 170 (enc), 186..210 skipped/partial
    changed = [i for i in range(len(data)) if out[i] != data[i]]
    assert all(10 <= i < 26 or 170 <= i < 186 or 212 <= i < 228 or 372 <= i < 388 for i in changed)
    assert len(changed) > 48
    # each subsample starts again from the constant IV: identical plaintext -> identical ciphertext
    same = bytes(32) + bytes(32)
    out2 = encrypt_cbcs(KEY, content_key("cbcs").iv, same, [_S(0, 32), _S(0, 32)], (1, 0))
    assert out2[:32] == out2[32:]
    # 1:0 full sample leaves the partial tail clear
    tail = encrypt_cbcs(KEY, content_key("cbcs").iv, bytes(40), None, (1, 0))
    assert tail[32:] == bytes(8) and tail[:32] != bytes(32)


def test_cenc_full_sample_encrypts_partial_block() -> None:
    out = encrypt_cenc(KEY, content_key("cenc").iv, bytes(40))
    assert out[32:] != bytes(8)
    assert encrypt_cenc(KEY, content_key("cenc").iv, out) == bytes(40)


def test_pssh_in_moof_and_custom_systems(media: Media) -> None:
    init, samples = media.read("aac")
    widevine = PsshBox(WIDEVINE_SYSTEM_ID, (), b"\x12\x10" + KID, 0)
    enc = TrackEncryptor("cenc", init.tracks[0], content_key("cenc"), systems=[widevine, clearkey_pssh([KID])], pssh_in_moof=True)
    head = enc.encrypt_init(init.data)
    moov = boxes_by_type(head)["moov"][0].payload
    assert [p.system_id for p in find_pssh(moov)] == [WIDEVINE_SYSTEM_ID, COMMON_SYSTEM_ID]
    chunk = enc.encrypt_chunk(1, 1, samples[:3])
    moof = next(iter_boxes(chunk)).payload
    assert len(find_pssh(moof)) == 2
    decrypted, err = framemd5(head + chunk + enc.encrypt_chunk(2, 1, samples[3:]), KEY)
    assert decrypted == _clear_frames(media, "aac"), err


def test_write_chunk_hook_defaults_to_todays_bytes(media: Media) -> None:
    _, samples = media.read("h264")
    assert write_chunk(3, 1, samples[:4]) == write_chunk(3, 1, samples[:4], traf_boxes=b"", moof_boxes=b"")


def test_errors() -> None:
    with pytest.raises(ProtectError):
        ContentKey(KID[:8], KEY, bytes(16))
    video = TrackInfo(1, "video", 90000, "avc1.64001f")
    with pytest.raises(ProtectError):
        TrackEncryptor("cbcs", video, ContentKey(KID, KEY, bytes(8)))
    with pytest.raises(ProtectError):
        TrackEncryptor("cenc", video, ContentKey(KID, KEY, bytes(16)))
    with pytest.raises(ProtectError):
        TrackEncryptor("cens", video, content_key("cbcs"))  # type: ignore[arg-type]
    with pytest.raises(ProtectError):
        TrackEncryptor("cbcs", TrackInfo(1, "video", 90000, "vp09.00.10.08"), content_key("cbcs"))


class _S:
    def __init__(self, clear: int, protected: int) -> None:
        self.clear, self.protected = clear, protected
