"""`protection.cpix`: `flowcast up` encrypts with a DRM service's CPIX keys and KIDs and
carries its Widevine and PlayReady PSSH in the init segments, the MPD and the HLS playlists,
beside ClearKey, which Shaka uses to play it here."""

from __future__ import annotations

import base64
import json
import secrets
import struct
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from uuid import UUID

import httpx
import pytest

from flowcast.media.boxes import find_box
from flowcast.package.m3u8 import parse_media_playlist
from flowcast.protect.clearkey import b64url_decode, b64url_encode
from flowcast.protect.cpix import CpixDocument, CpixKey, DrmSystemData, parse_cpix, render_cpix
from flowcast.protect.pssh import COMMON_SYSTEM_ID, PLAYREADY_SYSTEM_ID, WIDEVINE_SYSTEM_ID, find_pssh, pssh_box
from tests.browser import chromium_available, launch_chromium, open_player, read_stats, wait_playing

from .livestack import LiveProcess

pytestmark = pytest.mark.slow

DATA = Path(__file__).parents[1] / "protect" / "data" / "cpix"
MPD = "{urn:mpeg:dash:schema:mpd:2011}"
CENC = "{urn:mpeg:cenc:2013}"
MSPR = "{urn:microsoft:playready}"


def _playready_object(kid: bytes) -> bytes:
    """A PlayReady Object holding a v4.0 WRMHEADER (PlayReady Header Object spec): record
    type 1, UTF-16LE XML; the KID in PlayReady's GUID byte order, base64."""
    guid = UUID(bytes=kid).bytes_le
    xml = (
        '<WRMHEADER xmlns="http://schemas.microsoft.com/DRM/2007/03/PlayReadyHeader" version="4.0.0.0">'
        f"<DATA><PROTECTINFO><KEYLEN>16</KEYLEN><ALGID>AESCTR</ALGID></PROTECTINFO>"
        f"<KID>{base64.b64encode(guid).decode()}</KID></DATA></WRMHEADER>"
    ).encode("utf-16-le")
    record = struct.pack("<HH", 1, len(xml)) + xml
    return struct.pack("<IH", 6 + len(record), 1) + record


def _cpix(tmp_path: Path, keys: int = 1) -> tuple[Path, list[tuple[bytes, bytes]], dict[bytes, bytes], dict[bytes, bytes]]:
    """A CPIX response as a DRM service sends it: clear keys, Widevine and PlayReady PSSH."""
    pairs = [(secrets.token_bytes(16), secrets.token_bytes(16)) for _ in range(keys)]
    widevine = {kid: pssh_box(WIDEVINE_SYSTEM_ID, (), b"\x12\x10" + kid + b"H\xe3\xdc\x95\x9b\x06") for kid, _ in pairs}
    playready = {kid: pssh_box(PLAYREADY_SYSTEM_ID, (), _playready_object(kid)) for kid, _ in pairs}
    doc = CpixDocument(
        keys=tuple(CpixKey(kid, value, "cenc") for kid, value in pairs),
        drm_systems=tuple(
            d
            for kid, _ in pairs
            for d in (DrmSystemData(WIDEVINE_SYSTEM_ID, kid, pssh=widevine[kid]), DrmSystemData(PLAYREADY_SYSTEM_ID, kid, pssh=playready[kid]))
        ),
        content_id="live",
    )
    path = tmp_path / "vendor-cpix.xml"
    path.write_bytes(render_cpix(doc))
    assert parse_cpix(path.read_bytes()).keys == doc.keys
    return path, pairs, widevine, playready


def _config(tmp_path: Path, cpix: Path | str, rotation: int = 0) -> Path:
    cfg = tmp_path / "flowcast.yml"
    cfg.write_text(
        "ladder:\n  rungs:\n"
        '    - {name: 240p, width: 426, height: 240, video_bitrate_kbps: 400, profile: baseline, level: "3.0"}\n'
        f"protection:\n  scheme: cenc\n  cpix: {cpix}\n  key_rotation_interval: {rotation}\n"
        "telemetry:\n  enabled: false\n"
    )
    return cfg


@pytest.mark.browser
@pytest.mark.skipif(not chromium_available(), reason="Debian chromium is installed by `make test`")
def test_cpix_keys_and_pssh_in_init_mpd_hls_and_shaka_plays(tmp_path: Path) -> None:
    cpix, [(kid, key)], widevine, playready = _cpix(tmp_path)
    live = LiveProcess(tmp_path, "--config", str(_config(tmp_path, cpix)))
    try:
        live.wait_ready(timeout=40)
        # MPD: default_KID is the vendor's KID; Widevine and PlayReady descriptors carry the
        # vendor's pssh bytes (and mspr:pro); ClearKey stays for our own license endpoint.
        root = ET.fromstring(httpx.get(live.url("/live/live/manifest.mpd"), timeout=10).content)
        for aset in root.iter(f"{MPD}AdaptationSet"):
            cps = {c.get("schemeIdUri"): c for c in aset.findall(f"{MPD}ContentProtection")}
            assert cps["urn:mpeg:dash:mp4protection:2011"].get(f"{CENC}default_KID") == str(UUID(bytes=kid))
            wv = cps[f"urn:uuid:{WIDEVINE_SYSTEM_ID}"]
            assert base64.b64decode(wv.findtext(f"{CENC}pssh") or "") == widevine[kid]
            pr = cps[f"urn:uuid:{PLAYREADY_SYSTEM_ID}"]
            assert base64.b64decode(pr.findtext(f"{CENC}pssh") or "") == playready[kid]
            assert base64.b64decode(pr.findtext(f"{MSPR}pro") or "") == _playready_object(kid)
            assert "urn:uuid:e2719d58-a985-b3c9-781a-b030af78d30e" in cps
        # Init segments: the vendor's pssh boxes byte for byte, plus the Common one.
        for rendition in ("240p", "audio"):
            init = httpx.get(live.url(f"/live/live/{rendition}/init.mp4"), timeout=10).content
            moov = find_box(init, "moov")
            assert moov is not None
            boxes = {p.system_id: p for p in find_pssh(moov.payload)}
            assert boxes[WIDEVINE_SYSTEM_ID].to_bytes() == widevine[kid]
            assert boxes[PLAYREADY_SYSTEM_ID].to_bytes() == playready[kid]
            assert boxes[COMMON_SYSTEM_ID].kids == (kid,)
            assert kid in init  # tenc default_KID
        # HLS: one EXT-X-KEY per KEYFORMAT, all naming the vendor's KID.
        pl = parse_media_playlist(httpx.get(live.url("/live/live/240p/index.m3u8"), timeout=10).text)
        formats = {k.keyformat: k for k in pl.segments[-1].keys}
        assert set(formats) >= {"org.w3.clearkey", f"urn:uuid:{WIDEVINE_SYSTEM_ID}", "com.microsoft.playready"}
        assert all(k.method == "SAMPLE-AES-CTR" for k in formats.values())
        assert formats["org.w3.clearkey"].keyid == "0x" + kid.hex().upper()
        wv_uri = formats[f"urn:uuid:{WIDEVINE_SYSTEM_ID}"].uri or ""
        assert base64.b64decode(wv_uri.split(",", 1)[1]) == widevine[kid]
        # Our ClearKey endpoint licenses the vendor's key.
        r = httpx.post(live.url("/license/clearkey"), json={"kids": [b64url_encode(kid)]}, timeout=10)
        assert r.status_code == 200 and b64url_decode(r.json()["keys"][0]["k"]) == key
        with launch_chromium() as browser:
            page = open_player(browser, live.url("/?player=shaka&drm=clearkey&src=/live/live/manifest.mpd"))
            try:
                wait_playing(page, timeout=30)
                page.wait_for_timeout(6000)
                stats = read_stats(page)
                assert stats["playing"] and not stats["errors"], json.dumps(stats)
                assert stats["framesDecoded"] > 100, json.dumps(stats)
            finally:
                page.close()
        log = live.log()
        assert key.hex() not in log and b64url_encode(key) not in log and base64.b64encode(key).decode() not in log
        # Stored wrapped in the key store, like generated keys.
        store = (tmp_path / "data" / "keys.json").read_text()
        assert kid.hex() in store and key.hex() not in store and base64.b64encode(key).decode() not in store
    finally:
        live.stop()


def _up_error(tmp_path: Path, cfg: Path) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "flowcast.cli", "up", "--config", str(cfg), "--port", "1", "--data-dir", str(tmp_path / "data")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2, out.stdout + out.stderr
    return out.stderr


def test_bad_cpix_is_a_config_error_naming_the_field(tmp_path: Path) -> None:
    assert "protection.cpix: cannot read" in _up_error(tmp_path, _config(tmp_path, tmp_path / "missing.xml"))
    junk = tmp_path / "junk.xml"
    junk.write_text("<not-cpix/>")
    assert "protection.cpix" in _up_error(tmp_path, _config(tmp_path, junk))
    err = _up_error(tmp_path, _config(tmp_path, DATA / "EncryptedContentKeys.xml"))
    assert "protection.cpix" in err and "encrypted" in err
    one_key, *_ = _cpix(tmp_path)
    err = _up_error(tmp_path, _config(tmp_path, one_key, rotation=2))
    assert "protection.key_rotation_interval" in err
    # protection.cpix without encryption
    cfg = tmp_path / "none.yml"
    cfg.write_text(f"protection:\n  cpix: {one_key}\n")
    assert "protection.cpix" in _up_error(tmp_path, cfg)


def test_keys_export_cpix_round_trips_into_protection_cpix(tmp_path: Path) -> None:
    cpix, pairs, _, _ = _cpix(tmp_path, keys=2)
    live = LiveProcess(tmp_path, "--config", str(_config(tmp_path, cpix, rotation=2)))
    try:
        live.wait_ready(timeout=40)
    finally:
        live.stop()
    out = tmp_path / "export.xml"
    run = subprocess.run(
        [sys.executable, "-m", "flowcast.cli", "keys", "export-cpix", "--stream", "live", "--out", str(out), "--data-dir", str(tmp_path / "data")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    assert out.stat().st_mode & 0o077 == 0
    exported = {k.kid: k.value for k in parse_cpix(out.read_bytes()).keys}
    assert all(exported.get(kid) == value for kid, value in pairs)
    assert all(value.hex() not in run.stdout for _, value in pairs)
