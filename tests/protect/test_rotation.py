"""Key rotation as the packager renders it: playlists and MPDs around a key-period boundary,
per-period init segments, seig sample groups, and keys imported from CPIX."""

from __future__ import annotations

import base64
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from flowcast.media.boxes import find_box, iter_boxes
from flowcast.media.cmaf import write_chunk
from flowcast.package import dash, hls
from flowcast.package.m3u8 import parse_media_playlist
from flowcast.package.model import Part, Segment
from flowcast.protect.cpix import CpixDocument, CpixError, CpixKey, DrmSystemData, key_periods, parse_cpix
from flowcast.protect.keystore import KeyStore, KeyStoreError, LocalMasterKey
from flowcast.protect.pssh import COMMON_SYSTEM_ID, PLAYREADY_SYSTEM_ID, WIDEVINE_SYSTEM_ID, find_pssh, parse_pssh, pssh_box
from flowcast.protect.rotation import CpixKeys, KeyRotation, KeySchedule, StoreKeys
from flowcast.protect.signalling import dash_content_protection, hls_key_tags, kid_uuid

from _protmedia import framemd5

DATA = Path(__file__).parent / "data" / "cpix"
MPD = "{urn:mpeg:dash:schema:mpd:2011}"
CENC = "{urn:mpeg:cenc:2013}"
N = 2  # key_rotation_interval: segments per key
BASE = 1000  # first msn: key period 500 starts here


def _schedule(tmp_path: Path, scheme: str = "cbcs") -> tuple[KeySchedule, KeyStore]:
    store = KeyStore(tmp_path / "keys.json", LocalMasterKey.generate(), iv_size=16 if scheme == "cbcs" else 8)
    return KeySchedule(scheme, StoreKeys(store, "live"), KeyRotation(N, lead=0), license_url="/lic"), store  # type: ignore[arg-type]


def _segment(msn: int, parts: int = 4) -> Segment:
    start = (msn - BASE) * 2.0
    ps = tuple(Part(msn, i, start + i * 0.5, 0.5, i == 0, b"") for i in range(parts))
    return Segment(msn, start, 2.0, ps, False, 1.7e9 + start, b"")


def _playlist(ks: KeySchedule, msns: list[int], pending: int = 0, hint: tuple[int, int] | None = None) -> hls.MediaPlaylist:
    segments = tuple(_segment(m) for m in msns)
    nxt = msns[-1] + 1
    pending_parts = tuple(_segment(nxt).parts[:pending])
    listed = msns + ([nxt] if pending else [])
    if hint is not None and hint[0] not in listed:
        listed.append(hint[0])
    keys, maps = ks.hls_changes(listed, "video")
    return hls.MediaPlaylist(
        target_duration=2,
        part_target=0.5,
        segments=segments,
        pending_parts=pending_parts,
        next_part=hint,
        keys=keys,
        maps=maps,
    )


def test_schedule_periods_and_names(tmp_path: Path) -> None:
    ks, store = _schedule(tmp_path)
    assert [ks.period(m) for m in (1000, 1001, 1002, 1003, 1004)] == [500, 500, 501, 501, 502]
    assert ks.init_name(501) == "init-501.mp4"
    assert ks.last_msn(500) == 1001 and ks.last_msn(500, next_start=1001) == 1000
    # One key per period, from the key store; the Common pssh names this and the next KID.
    s500, s501 = ks.signal(500, "video"), ks.signal(501, "video")
    assert s500.kid == store.key_for("live", 500).kid and s501.kid == store.key_for("live", 501).kid
    assert s500.kid != s501.kid
    assert s500.kids == (s500.kid, s501.kid)
    no_rotation = KeySchedule("cbcs", StoreKeys(store, "live"))
    assert no_rotation.init_name(0) == "init.mp4" and no_rotation.last_msn(0) is None


def test_hls_key_and_map_change_before_first_segment_of_period(tmp_path: Path) -> None:
    ks, _ = _schedule(tmp_path)
    pl = _playlist(ks, [1001, 1002, 1003, 1004])
    text = hls.render_media_playlist(pl).decode()
    parsed = parse_media_playlist(text)
    for seg in parsed.segments:
        p = ks.period(seg.msn)
        assert seg.map_uri == f"init-{p}.mp4"
        (key,) = seg.keys
        assert key.keyid == "0x" + ks.signal(p, "video").kid.hex().upper()
        assert key.method == "SAMPLE-AES" and key.keyformat == "org.w3.clearkey"
    lines = text.splitlines()
    # 4.4.4.4/4.4.4.5 and 4.4.4.9: KEY, then MAP, then PDT, then the segment's first part.
    i = lines.index('#EXT-X-MAP:URI="init-501.mp4"')
    assert lines[i - 1].startswith("#EXT-X-KEY:") and ks.signal(501, "video").kid.hex().upper() in lines[i - 1]
    assert lines[i + 1].startswith("#EXT-X-PROGRAM-DATE-TIME:")
    # One change per period: exactly three maps and three keys (periods 500, 501, 502).
    assert sum(ln.startswith("#EXT-X-MAP:") for ln in lines) == 3
    assert sum(ln.startswith("#EXT-X-KEY:") for ln in lines) == 3


def test_hls_delta_update_restates_key_and_map_in_force(tmp_path: Path) -> None:
    ks, _ = _schedule(tmp_path)
    msns = list(range(1000, 1013))  # 26 s: the Skip Boundary (12 s) skips the 7 oldest
    pl = _playlist(ks, msns)
    full = parse_media_playlist(hls.render_media_playlist(pl))
    delta_text = hls.render_media_playlist(pl, skip=True).decode()
    delta = parse_media_playlist(delta_text)
    assert delta.skipped_segments > 0
    first = delta.segments[0]
    # The first listed segment starts in the middle of a period: its tags are restated.
    assert first.msn % N == 1
    assert first.map_uri == f"init-{ks.period(first.msn)}.mp4"
    assert first.keys and first.keys[0].keyid == "0x" + ks.signal(ks.period(first.msn), "video").kid.hex().upper()
    by_msn = {s.msn: s for s in full.segments}
    for seg in delta.segments:
        assert seg.map_uri == by_msn[seg.msn].map_uri and seg.keys == by_msn[seg.msn].keys
    assert delta_text.index("#EXT-X-SKIP") < delta_text.index("#EXT-X-KEY") < delta_text.index("#EXT-X-MAP")


def test_ll_hls_parts_and_preload_hint_of_a_new_period(tmp_path: Path) -> None:
    ks, _ = _schedule(tmp_path)
    # Parts of the period's first segment in production: its KEY/MAP precede them.
    text = hls.render_media_playlist(_playlist(ks, [1000, 1001], pending=2, hint=(1002, 2))).decode()
    lines = text.splitlines()
    first_part = next(i for i, ln in enumerate(lines) if ln.startswith('#EXT-X-PART:') and '"1002.0.m4s"' in ln)
    before = lines[:first_part]
    assert before[-1].startswith("#EXT-X-PROGRAM-DATE-TIME")
    assert before[-2] == '#EXT-X-MAP:URI="init-501.mp4"' and before[-3].startswith("#EXT-X-KEY:")
    assert parse_media_playlist(text).pending_keys[0].keyid == "0x" + ks.signal(501, "video").kid.hex().upper()
    # Nothing pending, the hint is part 0 of the period's first segment: KEY and MAP go
    # before the hint, so the preloaded part is read with the new init segment.
    text = hls.render_media_playlist(_playlist(ks, [1000, 1001], hint=(1002, 0))).decode()
    tail = text.splitlines()
    h = next(i for i, ln in enumerate(tail) if ln.startswith("#EXT-X-PRELOAD-HINT"))
    assert tail[h - 1] == '#EXT-X-MAP:URI="init-501.mp4"' and tail[h - 2].startswith("#EXT-X-KEY:")
    # ... and not when the hinted segment stays in the same period.
    text = hls.render_media_playlist(_playlist(ks, [1001, 1002], hint=(1003, 0))).decode()
    tail = text.splitlines()
    h = next(i for i, ln in enumerate(tail) if ln.startswith("#EXT-X-PRELOAD-HINT"))
    assert tail[h - 1].startswith("#EXTINF") or tail[h - 1].endswith(".m4s")


def test_no_rotation_keeps_one_map_at_the_top(tmp_path: Path) -> None:
    _, store = _schedule(tmp_path)
    ks = KeySchedule("cbcs", StoreKeys(store, "live"), license_url="/lic")
    keys, maps = ks.hls_changes([1000, 1001, 1002], "video")
    assert maps == () and len(keys) == 1
    pl = hls.MediaPlaylist(target_duration=2, segments=tuple(_segment(m, 0) for m in (1000, 1001, 1002)), keys=keys)
    text = hls.render_media_playlist(pl).decode()
    assert text.count("#EXT-X-MAP:") == 1 and text.count("#EXT-X-KEY:") == 1
    assert text.index("#EXT-X-MAP") < text.index("#EXT-X-KEY")


def _mpd(ks: KeySchedule, track_v, track_a, last_period: int) -> ET.Element:  # type: ignore[no-untyped-def]
    runs = [("p1", 2000.0, BASE + 1, 1.7e9)]  # a run starting mid-period (msn 1001)
    cut = ks.dash_periods(runs, last_period, 2.0)
    periods = tuple(
        dash.MpdPeriod(
            id=p.id,
            start=p.start,
            start_number=p.start_number,
            presentation_time=p.start,
            wall_clock=p.wall_clock,
            initialization=f"$RepresentationID$/{ks.init_name(p.key_period)}",
            end_number=ks.last_msn(p.key_period, nxt.start_number if nxt else None),
            content_protection=dash_content_protection(ks.signal(p.key_period, "video")),
        )
        for p, nxt in zip(cut, [*cut[1:], None])
    )
    mpd = dash.LiveMpd(
        availability_start_time=0.0,
        publish_time=1.7e9,
        periods=periods,
        video=(dash.DashRepresentation("240p", track_v, 400_000, "30"),),
        audio=dash.DashRepresentation("audio", track_a, 96_000),
        segment_duration=2.0,
        utc_timing_url="/time",
        time_shift_buffer_depth=60.0,
        part_duration=0.5,
        latency=dash.LatencyTarget(1500, 1000, 3000),
    )
    return ET.fromstring(dash.render_mpd(mpd))


def test_mpd_one_period_per_key_period_with_its_init_kid_and_last_number(tmp_path: Path, media) -> None:  # type: ignore[no-untyped-def]
    ks, _ = _schedule(tmp_path)
    v, _ = media.read("h264")
    a, _ = media.read("aac")
    root = _mpd(ks, v.tracks[0], a.tracks[0], last_period=502)
    periods = root.findall(f"{MPD}Period")
    # Run starts at 1001 (period 500), then 501 and the announced 502.
    assert [p.get("id") for p in periods] == ["p1k500", "p1k501", "p1k502"]
    assert [p.get("start") for p in periods] == ["PT2000S", "PT2002S", "PT2006S"]
    for period, (first, last, kp) in zip(periods, [(1001, 1001, 500), (1002, 1003, 501), (1004, 1005, 502)]):
        for aset in period.findall(f"{MPD}AdaptationSet"):
            st = aset.find(f"{MPD}SegmentTemplate")
            assert st is not None
            assert st.get("startNumber") == str(first) and st.get("endNumber") == str(last)
            assert st.get("initialization") == f"$RepresentationID$/init-{kp}.mp4"
            cps = aset.findall(f"{MPD}ContentProtection")
            assert cps[0].get(f"{CENC}default_KID") == kid_uuid(ks.signal(kp, "video").kid)
            common = next(c for c in cps if c.get("schemeIdUri") == f"urn:uuid:{COMMON_SYSTEM_ID}")
            pssh = base64.b64decode(common.findtext(f"{CENC}pssh") or "")
            assert parse_pssh(pssh[8:]).kids == (ks.signal(kp, "video").kid, ks.signal(kp + 1, "video").kid)


def test_period_init_segments_and_seig_fragments(tmp_path: Path, media) -> None:  # type: ignore[no-untyped-def]
    ks, store = _schedule(tmp_path)
    init, samples = media.read("h264")
    track = init.tracks[0]
    for p in (500, 501):
        enc = ks.encryptor(p, "video", track)
        data = enc.encrypt_init(init.data)
        moov = find_box(data, "moov")
        assert moov is not None
        (common,) = [x for x in find_pssh(moov.payload) if x.system_id == COMMON_SYSTEM_ID]
        assert common.kids[0] == store.key_for("live", p).kid
        assert store.key_for("live", p).kid in data  # tenc default_KID
        chunk = enc.encrypt_chunk(1, track.track_id, samples[:3], 0)
        moof = next(iter_boxes(chunk))
        traf = find_box(moof.payload, "traf")
        assert traf is not None
        types = [b.type for b in iter_boxes(traf.payload)]
        assert "sbgp" in types and "sgpd" in types and "senc" in types
        sgpd = find_box(traf.payload, "sgpd")
        assert sgpd is not None and sgpd.payload[4:8] == b"seig"
        entry = sgpd.payload[16:]
        assert entry[2] == 1 and entry[3] == 0 and entry[4:20] == store.key_for("live", p).kid
        assert entry[21:37] == store.key_for("live", p).iv  # cbcs constant IV
    # Without rotation fragments stay as before (no sample groups).
    plain = KeySchedule("cbcs", StoreKeys(store, "live")).encryptor(0, "video", track)
    plain.encrypt_init(init.data)
    chunk = plain.encrypt_chunk(1, track.track_id, samples[:3], 0)
    assert b"sbgp" not in chunk and b"seig" not in chunk


@pytest.mark.parametrize("scheme", ["cbcs", "cenc"])
@pytest.mark.parametrize("name", ["h264", "aac"])
def test_each_key_period_decrypts_to_the_clear_frames(tmp_path: Path, media, name: str, scheme: str) -> None:  # type: ignore[no-untyped-def]
    """Issue 3's acceptance with rotation on: FFmpeg decrypts each period (its own init
    segment and key) to frames identical (framemd5) to the clear encode's; the other
    period's key does not."""
    ks, store = _schedule(tmp_path, scheme)
    init, samples = media.read(name)
    track = init.tracks[0]
    clear, err = framemd5(media.path(name))
    assert not err and len(clear) == len(samples)
    half = len(samples) // 2
    if name == "h264":
        assert samples[half].is_sync  # -g 30: the second period starts on an IDR
    periods = {500: samples[:half], 501: samples[half:]}
    data = {}
    for p, own in periods.items():
        enc = ks.encryptor(p, kind="video" if name == "h264" else "audio", track=track)
        chunks = [enc.encrypt_init(init.data)]
        for seq, i in enumerate(range(0, len(own), 5), start=1):
            chunks.append(enc.encrypt_chunk(seq, track.track_id, own[i : i + 5], own[i].decode_time))
        data[p] = b"".join(chunks)
    key = {p: store.key_for("live", p).key for p in periods}
    assert key[500] != key[501]
    md5 = [line.rsplit(",", 1)[1].strip() for line in clear]
    got = {}
    for p in periods:
        lines, err = framemd5(data[p], key[p])
        assert err == "", err[-400:]
        got[p] = [line.rsplit(",", 1)[1].strip() for line in lines]
    if name == "aac":
        # AAC decoding carries state across frames (priming, MDCT overlap): a period decoded
        # on its own matches the same samples packaged in the clear, period by period.
        for p, own in periods.items():
            plain = init.data + b"".join(
                write_chunk(seq, track.track_id, own[i : i + 5], own[i].decode_time)
                for seq, i in enumerate(range(0, len(own), 5), start=1)
            )
            ref, err = framemd5(plain)
            assert not err and got[p] == [line.rsplit(",", 1)[1].strip() for line in ref]
    else:
        assert got[500] == md5[:half] and got[501] == md5[half:]
    wrong, _ = framemd5(data[501], key[500])
    assert [line.rsplit(",", 1)[1].strip() for line in wrong] != got[501]


# -- CPIX keys ---------------------------------------------------------------------------


def test_cpix_key_periods_from_the_dash_if_vectors() -> None:
    doc = parse_cpix((DATA / "KeyRotationMultiKeyMulitPeriod.xml").read_bytes())
    periods = key_periods(doc)
    assert len(periods) == 2
    assert str(periods[0]["video"].kid_uuid) == "7ce7f10d-a91b-41b9-b331-7999fd1abf4c"
    assert str(periods[0]["audio"].kid_uuid) == "988395ce-667a-443a-b9cc-58ad7875a687"
    assert str(periods[1]["video"].kid_uuid) == "6bf7f10d-a91b-41b9-b331-7999fd1abe3b"
    clear = key_periods(parse_cpix((DATA / "ClearContentKeysOnly.xml").read_bytes()))
    assert len(clear) == 4 and all(p["video"] is p["audio"] for p in clear)
    with pytest.raises(CpixError, match="encrypted for a recipient"):
        key_periods(parse_cpix((DATA / "EncryptedContentKeys.xml").read_bytes()))
    with pytest.raises(CpixError, match="no ContentKey"):
        key_periods(parse_cpix((DATA / "EmptyDocument.xml").read_bytes()))


def test_cpix_keys_are_imported_wrapped_and_rotate(tmp_path: Path) -> None:
    doc = parse_cpix((DATA / "KeyRotationMultiKeyMulitPeriod.xml").read_bytes())
    store = KeyStore(tmp_path / "keys.json", LocalMasterKey.generate(), iv_size=16)
    source = CpixKeys(doc, store, "live", "cbcs")
    assert source.periods == 2
    video0 = doc.key(periods_kid := key_periods(doc)[0]["video"].kid)
    got = source.key(0, "video").key
    assert got.kid == periods_kid and got.key == video0.value and got.iv == video0.explicit_iv
    assert source.key(1, "audio").key.kid == key_periods(doc)[1]["audio"].kid
    assert source.key(2, "video").key.kid == periods_kid  # a live stream outlasts the document
    # Stored wrapped, never in the clear; the license server finds them by KID.
    raw = (tmp_path / "keys.json").read_text()
    assert base64.b64encode(video0.value or b"").decode() not in raw and (video0.value or b"").hex() not in raw
    reopened_store = KeyStore(tmp_path / "keys.json", store._master, iv_size=16)  # noqa: SLF001
    assert reopened_store.get(periods_kid).key == video0.value
    # One KID, one key: the same KID with other bytes is refused.
    with pytest.raises(KeyStoreError, match="another key"):
        store.import_key("live", 0, periods_kid, bytes(16))


def test_cpix_drm_systems_reach_init_mpd_and_hls(tmp_path: Path, media) -> None:  # type: ignore[no-untyped-def]
    kid, value = bytes(range(16)), bytes(range(16, 32))
    widevine = pssh_box(WIDEVINE_SYSTEM_ID, (), b"\x12\x10" + kid)  # WidevinePsshData.key_ids
    pro = "<WRMHEADER/>".encode("utf-16-le")
    playready = pssh_box(PLAYREADY_SYSTEM_ID, (), pro)
    doc = CpixDocument(
        keys=(CpixKey(kid, value, "cenc"),),
        drm_systems=(DrmSystemData(WIDEVINE_SYSTEM_ID, kid, pssh=widevine), DrmSystemData(PLAYREADY_SYSTEM_ID, kid, pssh=playready)),
    )
    store = KeyStore(tmp_path / "keys.json", LocalMasterKey.generate(), iv_size=8)
    ks = KeySchedule("cenc", CpixKeys(doc, store, "live", "cenc"), license_url="/lic")
    signal = ks.signal(0, "video")
    init, _ = media.read("h264")
    data = ks.encryptor(0, "video", init.tracks[0]).encrypt_init(init.data)
    moov = find_box(data, "moov")
    assert moov is not None
    systems = {p.system_id: p for p in find_pssh(moov.payload)}
    assert systems[WIDEVINE_SYSTEM_ID].to_bytes() == widevine and systems[PLAYREADY_SYSTEM_ID].to_bytes() == playready
    assert systems[COMMON_SYSTEM_ID].kids == (kid,)
    cps = {c.scheme_id_uri: c for c in dash_content_protection(signal)}
    assert cps[f"urn:uuid:{WIDEVINE_SYSTEM_ID}"].pssh == base64.b64encode(widevine).decode()
    assert cps[f"urn:uuid:{PLAYREADY_SYSTEM_ID}"].pro == base64.b64encode(pro).decode()
    tags = hls_key_tags(signal)
    assert any('KEYFORMAT="urn:uuid:edef8ba9-79d6-4ace-a3c8-27dcd51d21ed"' in t for t in tags)
    assert any('KEYFORMAT="com.microsoft.playready"' in t for t in tags)
    assert any('KEYFORMAT="org.w3.clearkey"' in t for t in tags)
    # A key for another scheme than the stream's is refused.
    with pytest.raises(CpixError, match="commonEncryptionScheme"):
        CpixKeys(doc, KeyStore(tmp_path / "k2.json", LocalMasterKey.generate(), iv_size=16), "live", "cbcs")
