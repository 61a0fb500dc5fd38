"""HLS/DASH encryption signalling and key rotation: render -> our parsers -> attributes."""

from __future__ import annotations

import base64
import dataclasses
from pathlib import Path
from uuid import UUID

import pytest

from flowcast.media.types import TrackInfo
from flowcast.package.conformance import check_media_playlist, check_mpd
from flowcast.package.dash import (
    CENC_NS,
    CLEARKEY_NS,
    DASHIF_CPS_NS,
    MP4PROTECTION_SCHEME,
    DashRepresentation,
    LatencyTarget,
    LiveMpd,
    MpdPeriod,
    render_mpd,
)
from flowcast.package.hls import (
    AudioRendition,
    HlsKey,
    MediaPlaylist,
    Variant,
    render_media_playlist,
    render_multivariant,
)
from flowcast.package.m3u8 import PlaylistError, parse_media_playlist, parse_multivariant
from flowcast.package.model import Part, Segment
from flowcast.package.mpd import MpdError, parse_mpd
from flowcast.protect.cenc import ProtectError
from flowcast.protect.pssh import (
    COMMON_SYSTEM_ID,
    FAIRPLAY_SYSTEM_ID,
    PLAYREADY_SYSTEM_ID,
    WIDEVINE_SYSTEM_ID,
    parse_pssh,
    pssh_box,
)
from flowcast.protect.rotation import KeyRotation, key_period, period_bounds
from flowcast.protect.signalling import (
    CLEARKEY_DASH_SYSTEM_ID,
    KeySignal,
    SystemSignal,
    clearkey_signal,
    dash_content_protection,
    hls_key,
    hls_key_attributes,
    hls_key_lines,
    hls_key_tags,
    kid_uuid,
)

# Golden vector, standards.md section 3
GOLDEN_KID = bytes.fromhex("31323334353637383930313233343536")
GOLDEN_PSSH_B64 = "AAAANHBzc2gBAAAAEHfv7MCyTQKs4zweUuL7SwAAAAExMjM0NTY3ODkwMTIzNDU2AAAAAA=="
LICENSE = "https://origin.example/license/clearkey"
KID2 = bytes(range(16))
T0 = 1_764_000_000.0

V720 = DashRepresentation("720p", TrackInfo(1, "video", 90000, "avc1.64001f", 1280, 720), 3_000_000, "30")
AUD = DashRepresentation("audio", TrackInfo(2, "audio", 48000, "mp4a.40.2", sample_rate=48000, channels=2), 128_000)


def mpd(**kw: object) -> LiveMpd:
    base: dict[str, object] = dict(
        availability_start_time=T0,
        publish_time=T0 + 600,
        periods=(MpdPeriod("p0", 0.0, 0),),
        video=(V720,),
        audio=AUD,
        segment_duration=2.0,
        part_duration=0.5,
        latency=LatencyTarget(3000, 1500, 6000),
        utc_timing_url="https://origin.example/time",
        time_shift_buffer_depth=60.0,
    )
    base.update(kw)
    return LiveMpd(**base)  # type: ignore[arg-type]


def segment(msn: int, seg: float = 2.0, part: float = 0.5) -> Segment:
    n = int(seg / part)
    parts = tuple(Part(msn, i, msn * seg + i * part, part, i == 0, b"") for i in range(n))
    return Segment(msn, msn * seg, seg, parts, False, T0 + msn * seg, b"")


# --- the golden vector ---------------------------------------------------------------


def test_golden_clearkey_pssh_appears_verbatim_in_the_mpd() -> None:
    sig = clearkey_signal(GOLDEN_KID, "cenc", LICENSE)
    body = render_mpd(mpd(content_protection=dash_content_protection(sig)))
    assert GOLDEN_PSSH_B64.encode() in body
    assert b'cenc:default_KID="31323334-3536-3738-3930-313233343536"' in body
    assert check_mpd(body) == []


def test_golden_kid_in_hls_clearkey_tag() -> None:
    (line,) = hls_key_lines(clearkey_signal(GOLDEN_KID, "cbcs", LICENSE))
    kid_b64 = base64.b64encode(GOLDEN_KID).decode()
    assert line == (
        f'#EXT-X-KEY:METHOD=SAMPLE-AES,URI="data:text/plain;base64,{kid_b64}",'
        'KEYID=0x31323334353637383930313233343536,KEYFORMAT="org.w3.clearkey",KEYFORMATVERSIONS="1"'
    )


# --- HLS -----------------------------------------------------------------------------


def test_hls_tags_per_system() -> None:
    wv = pssh_box(WIDEVINE_SYSTEM_ID, (), b"\x12\x10" + KID2)
    pro = "<WRMHEADER/>".encode("utf-16-le")
    sig = KeySignal(
        "cbcs",
        KID2,
        (
            SystemSignal(COMMON_SYSTEM_ID, license_url=LICENSE),
            SystemSignal(WIDEVINE_SYSTEM_ID, wv),
            SystemSignal(PLAYREADY_SYSTEM_ID, pssh_box(PLAYREADY_SYSTEM_ID, (), pro)),
            SystemSignal(FAIRPLAY_SYSTEM_ID),
        ),
    )
    ck, w, pr, fp = hls_key_tags(sig)
    assert 'KEYFORMAT="org.w3.clearkey"' in ck
    assert f'URI="data:text/plain;base64,{base64.b64encode(wv).decode()}"' in w
    assert 'KEYFORMAT="urn:uuid:edef8ba9-79d6-4ace-a3c8-27dcd51d21ed"' in w
    assert f'URI="data:text/plain;charset=UTF-16;base64,{base64.b64encode(pro).decode()}"' in pr
    assert 'KEYFORMAT="com.microsoft.playready"' in pr
    assert fp == (f'METHOD=SAMPLE-AES,URI="skd://{KID2.hex()}",'
                  'KEYFORMAT="com.apple.streamingkeydelivery",KEYFORMATVERSIONS="1"')
    assert all(t.startswith("METHOD=SAMPLE-AES,") for t in (ck, w, pr, fp))


def test_cenc_uses_sample_aes_ctr_and_fairplay_refuses_it() -> None:
    sig = clearkey_signal(KID2, "cenc")
    assert hls_key_tags(sig)[0].startswith("METHOD=SAMPLE-AES-CTR,")
    with pytest.raises(ProtectError):
        hls_key_attributes(sig, SystemSignal(FAIRPLAY_SYSTEM_ID))
    with pytest.raises(ProtectError):
        hls_key_attributes(sig, SystemSignal(WIDEVINE_SYSTEM_ID))  # no pssh given
    with pytest.raises(ProtectError):
        hls_key_attributes(sig, SystemSignal(COMMON_SYSTEM_ID, key_uri='bad"uri'))
    with pytest.raises(ProtectError):
        KeySignal("cbc1", KID2, (SystemSignal(COMMON_SYSTEM_ID),))  # type: ignore[arg-type]


def ll_playlist(keys: tuple[HlsKey, ...], first: int = 0, count: int = 8, pending: int = 2) -> MediaPlaylist:
    segs = tuple(segment(m) for m in range(first, first + count))
    nxt = first + count
    return MediaPlaylist(
        target_duration=2,
        segments=segs,
        part_target=0.5,
        pending_parts=segment(nxt).parts[:pending],
        next_part=(nxt, pending),
        keys=keys,
    )


def test_media_playlist_key_tags_parse_and_rotate() -> None:
    rot = KeyRotation(interval=4)
    kids = {p: bytes([p + 1]) * 16 for p in range(4)}
    keys = tuple(hls_key(clearkey_signal(kids[p], "cbcs"), period_bounds(p, 4)[0]) for p in range(4))
    pl = ll_playlist(keys, first=2, count=10)  # segments 2..11, pending 12
    body = render_media_playlist(pl)
    assert check_media_playlist(body) == []
    parsed = parse_media_playlist(body)
    for seg in parsed.segments:
        (key,) = seg.keys
        assert key.method == "SAMPLE-AES" and key.keyformat == "org.w3.clearkey"
        assert key.keyid == "0x" + kids[rot.period(seg.msn)].hex().upper()
        assert base64.b64decode(key.uri.split(",", 1)[1]) == kids[rot.period(seg.msn)]
    assert parsed.pending_keys[0].keyid == "0x" + kids[3].hex().upper()  # msn 12 starts period 3
    text = body.decode()
    # the key in force before the first segment (2), then one tag per change (4, 8, 12)
    assert text.count("#EXT-X-KEY:") == 4
    lines = text.splitlines()
    key_at = [i for i, ln in enumerate(lines) if ln.startswith("#EXT-X-KEY:")]
    # the key of a pending segment precedes its first part
    first_pending_part = lines.index('#EXT-X-PART:DURATION=0.5,URI="12.0.m4s",INDEPENDENT=YES')
    assert key_at[-1] < first_pending_part and "12.m4s" not in text
    # a delta update still states the key in force for the first segment it shows
    skipped = parse_media_playlist(render_media_playlist(pl, skip=True))
    assert skipped.skipped_segments > 0 and skipped.segments[0].keys


def test_no_keys_is_byte_identical() -> None:
    pl = ll_playlist(())
    assert b"EXT-X-KEY" not in render_media_playlist(pl)
    assert render_media_playlist(pl) == render_media_playlist(dataclasses.replace(pl, keys=()))


def test_keys_must_be_ordered() -> None:
    with pytest.raises(ValueError):
        ll_playlist((HlsKey(4, ("METHOD=NONE",)), HlsKey(4, ("METHOD=NONE",))))


def test_parser_key_semantics() -> None:
    body = (
        "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MAP:URI=\"init.mp4\"\n"
        '#EXT-X-KEY:METHOD=SAMPLE-AES,URI="data:text/plain;base64,AA==",KEYFORMAT="org.w3.clearkey"\n'
        '#EXT-X-KEY:METHOD=SAMPLE-AES,URI="skd://x",KEYFORMAT="com.apple.streamingkeydelivery"\n'
        "#EXTINF:2.0,\n0.m4s\n"
        '#EXT-X-KEY:METHOD=SAMPLE-AES,URI="skd://y",KEYFORMAT="com.apple.streamingkeydelivery"\n'
        "#EXTINF:2.0,\n1.m4s\n"
        "#EXT-X-KEY:METHOD=NONE\n#EXTINF:2.0,\n2.m4s\n"
    )
    s = parse_media_playlist(body).segments
    assert [k.uri for k in s[0].keys] == ["data:text/plain;base64,AA==", "skd://x"]
    assert [k.uri for k in s[1].keys] == ["data:text/plain;base64,AA==", "skd://y"]  # per KEYFORMAT
    assert s[2].keys == ()
    with pytest.raises(PlaylistError):
        parse_media_playlist("#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-KEY:METHOD=SAMPLE-AES\n")
    with pytest.raises(PlaylistError):
        parse_media_playlist("#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-KEY:URI=\"x\"\n")


def test_multivariant_session_keys() -> None:
    video = TrackInfo(1, "video", 90000, "avc1.64001f", 1280, 720)
    audio = AudioRendition(TrackInfo(2, "audio", 48000, "mp4a.40.2", sample_rate=48000, channels=2), 128_000)
    variants = (Variant("720p", video, 3_000_000),)
    sig = clearkey_signal(GOLDEN_KID, "cbcs", LICENSE)
    session = hls_key_tags(sig)
    body = render_multivariant(variants, audio, session_keys=session)
    parsed = parse_multivariant(body)
    (sk,) = parsed.session_keys
    assert sk.keyformat == "org.w3.clearkey" and sk.keyid == "0x" + GOLDEN_KID.hex().upper()
    assert hls_key_lines(sig, session=True)[0] in body.decode().splitlines()
    assert render_multivariant(variants, audio) == render_multivariant(variants, audio, session_keys=())
    assert b"SESSION-KEY" not in render_multivariant(variants, audio)
    with pytest.raises(PlaylistError):
        parse_multivariant("#EXTM3U\n#EXT-X-SESSION-KEY:METHOD=NONE\n")


# --- DASH ----------------------------------------------------------------------------


def test_mpd_content_protection_parses_back() -> None:
    wv = pssh_box(WIDEVINE_SYSTEM_ID, (), b"\x12\x10" + KID2)
    sig = KeySignal(
        "cbcs",
        KID2,
        (SystemSignal(COMMON_SYSTEM_ID, license_url=LICENSE), SystemSignal(WIDEVINE_SYSTEM_ID, wv),
         SystemSignal(FAIRPLAY_SYSTEM_ID)),
    )
    body = render_mpd(mpd(content_protection=dash_content_protection(sig)))
    assert check_mpd(body) == []
    text = body.decode()
    assert f"<dashif:Laurl>{LICENSE}</dashif:Laurl>" in text
    assert f'<clearkey:Laurl Lic_type="EME-1.0">{LICENSE}</clearkey:Laurl>' in text
    for ns in (f'xmlns:cenc="{CENC_NS}"', f'xmlns:dashif="{DASHIF_CPS_NS}"', f'xmlns:clearkey="{CLEARKEY_NS}"'):
        assert ns in text
    m = parse_mpd(body)
    for aset in m.periods[0].adaptation_sets:
        mp4, ck, common, w = aset.content_protections  # FairPlay is not signalled in DASH
        assert (mp4.scheme_id_uri, mp4.value, mp4.default_kid) == (MP4PROTECTION_SCHEME, "cbcs", kid_uuid(KID2))
        assert ck.scheme_id_uri == f"urn:uuid:{CLEARKEY_DASH_SYSTEM_ID}" and ck.value == "ClearKey1.0"
        assert ck.laurl == LICENSE and ck.clearkey_laurl == LICENSE
        assert ck.pssh == ()  # dash.js 5.2 would pass it as "keyids" init data: TypeError
        assert common.scheme_id_uri == f"urn:uuid:{COMMON_SYSTEM_ID}" and common.laurl is None
        (ck_pssh,) = common.pssh
        box = parse_pssh(base64.b64decode(ck_pssh)[8:])
        assert box.system_id == COMMON_SYSTEM_ID and box.kids == (KID2,)
        assert w.scheme_id_uri == f"urn:uuid:{WIDEVINE_SYSTEM_ID}" and w.pssh == (base64.b64encode(wv).decode(),)
        assert w.laurl is None
    # schema order inside the AdaptationSet: ContentProtection before ProducerReferenceTime/SegmentTemplate
    import xml.etree.ElementTree as ET

    root = ET.fromstring(body)
    for aset in root.iter("{urn:mpeg:dash:schema:mpd:2011}AdaptationSet"):
        names = [c.tag.split("}")[1] for c in aset]
        cp = [i for i, n in enumerate(names) if n == "ContentProtection"]
        assert cp and max(cp) < names.index("ProducerReferenceTime") < names.index("SegmentTemplate")
        if "AudioChannelConfiguration" in names:
            assert names.index("AudioChannelConfiguration") < min(cp)


def test_audio_may_have_its_own_key_or_none() -> None:
    video_sig = clearkey_signal(KID2, "cbcs", LICENSE)
    audio_sig = clearkey_signal(GOLDEN_KID, "cbcs", LICENSE)
    m = parse_mpd(render_mpd(mpd(content_protection=dash_content_protection(video_sig),
                                 audio_content_protection=dash_content_protection(audio_sig))))
    v, a = m.periods[0].adaptation_sets
    assert v.content_protections[0].default_kid == kid_uuid(KID2)
    assert a.content_protections[0].default_kid == kid_uuid(GOLDEN_KID)
    clear_audio = parse_mpd(render_mpd(mpd(content_protection=dash_content_protection(video_sig),
                                           audio_content_protection=())))
    assert clear_audio.periods[0].adaptation_sets[1].content_protections == ()


def test_no_protection_is_byte_identical() -> None:
    base = mpd()
    body = render_mpd(base)
    assert b"ContentProtection" not in body and b"xmlns:cenc" not in body
    assert body == render_mpd(dataclasses.replace(base, content_protection=(), audio_content_protection=None))
    assert parse_mpd(body).periods[0].adaptation_sets[0].content_protections == ()


def test_rotation_pssh_announces_the_next_kid() -> None:
    rot = KeyRotation(interval=5, lead=2)
    kids = [bytes([i + 1]) * 16 for i in range(3)]
    step = rot.step(3)  # two segments before the boundary at 5
    assert step.announce == (0, 1) and step.next_period == 1
    sig = clearkey_signal(kids[step.period], "cbcs", announce_kids=[kids[p] for p in step.announce[1:]])
    (_, _, common) = dash_content_protection(sig)
    assert common.pssh is not None
    assert parse_pssh(base64.b64decode(common.pssh)[8:]).kids == (kids[0], kids[1])
    # the default KID stays the current key
    assert dash_content_protection(sig)[0].default_kid == kid_uuid(kids[0])


def test_mpd_parser_unknown_encoding_is_mpd_error() -> None:
    with pytest.raises(MpdError):
        parse_mpd(b'<?xml version="1.0" encoding="no-such-codec"?><MPD/>')


# --- rotation ------------------------------------------------------------------------


def test_key_period() -> None:
    assert [key_period(m, 4) for m in range(10)] == [0, 0, 0, 0, 1, 1, 1, 1, 2, 2]
    assert key_period(10**9, None) == 0 and key_period(7, 0) == 0
    assert period_bounds(2, 4) == (8, 11) and period_bounds(3, None) == (0, None)
    with pytest.raises(ValueError):
        key_period(-1, 4)
    with pytest.raises(ValueError):
        key_period(1, -4)


def test_rotation_steps() -> None:
    rot = KeyRotation(interval=4, lead=1)
    steps = [rot.step(m) for m in range(9)]
    assert [s.period for s in steps] == [0, 0, 0, 0, 1, 1, 1, 1, 2]
    assert [s.starts_period for s in steps] == [True, False, False, False, True, False, False, False, True]
    assert [s.announce for s in steps] == [(0,), (0,), (0,), (0, 1), (1,), (1,), (1,), (1, 2), (2,)]
    assert rot.periods_between(2, 9) == (0, 1, 2) and rot.periods_between(5, 4) == ()
    off = KeyRotation()
    assert not off.rotates and off.step(100).announce == (0,) and not off.step(100).starts_period
    with pytest.raises(ValueError):
        KeyRotation(interval=2, lead=2)


def test_every_segment_has_its_key_announced_before_use() -> None:
    """Property of the schedule: a period's KID is in some announce set before (or at)
    its first segment, so the CDM can license it without a gap."""
    rot = KeyRotation(interval=6, lead=2)
    seen: set[int] = set()
    for msn in range(60):
        step = rot.step(msn)
        assert step.period in seen or step.starts_period
        seen.update(step.announce)
        if rot.starts_period(msn + 1):
            assert rot.period(msn + 1) in seen  # announced ahead of the boundary


def test_kid_uuid() -> None:
    assert kid_uuid(GOLDEN_KID) == str(UUID(bytes=GOLDEN_KID))
    with pytest.raises(ProtectError):
        kid_uuid(b"short")


# --- a real player: hls.js 1.7 in Debian's Chromium accepts our ClearKey signalling ----------

HLS_JS = Path(__file__).parents[2] / "src" / "flowcast" / "web" / "node_modules" / "hls.js" / "dist" / "hls.min.js"

_PAGE = b"""<!doctype html><html><body><video muted playsinline></video>
<script src="/hls.min.js"></script>
<script>
window.state = {errors: [], keys: []};
const video = document.querySelector('video');
const hls = new Hls({emeEnabled: true, drmSystems: {'org.w3.clearkey': {licenseUrl: '/license'}}});
hls.on(Hls.Events.ERROR, (e, d) => window.state.errors.push(d.details + (d.fatal ? ' fatal' : '')));
hls.on(Hls.Events.LEVEL_LOADED, (e, d) => {
  for (const f of d.details.fragments) {
    for (const [fmt, k] of Object.entries(f.levelkeys || {})) {
      window.state.keys.push({fmt, method: k.method, keyId: Array.from(k.keyId || []).map(b => b.toString(16).padStart(2, '0')).join('')});
    }
  }
});
hls.loadSource('/index.m3u8');
hls.attachMedia(video);
video.play().catch(e => window.state.errors.push('play: ' + e));
</script></body></html>"""


def _serve(files: dict[str, tuple[str, bytes]], license_handler):  # type: ignore[no-untyped-def]
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def _send(self, status: int, ctype: str, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802
            ctype, body = files.get(self.path, ("text/plain", b""))
            self._send(200 if self.path in files else 404, ctype, body)

        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            status, out = license_handler(body)
            self._send(status, "application/json", out)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.mark.browser
@pytest.mark.parametrize("scheme", ["cbcs", "cenc"])
def test_hlsjs_plays_clearkey_with_our_ext_x_key(media, scheme: str) -> None:  # type: ignore[no-untyped-def]
    from tests.browser import chromium_available

    if not chromium_available() or not HLS_JS.exists():
        pytest.skip("needs Debian chromium and hls.js from npm")
    init, key, init_bytes, chunks = _encrypted_vod(media, scheme)
    segs = tuple(Segment(m, m * 1.0, 1.0, (), False, T0 + m, b"") for m in range(2))
    sig = clearkey_signal(key.kid, scheme, "/license")  # type: ignore[arg-type]
    playlist = render_media_playlist(MediaPlaylist(target_duration=1, segments=segs, ended=True, keys=(hls_key(sig, 0),)))
    assert b'KEYFORMAT="org.w3.clearkey"' in playlist
    files = {
        "/index.m3u8": ("application/vnd.apple.mpegurl", playlist),
        "/init.mp4": ("video/mp4", init_bytes),
        "/0.m4s": ("video/mp4", chunks[0]),
        "/1.m4s": ("video/mp4", chunks[1]),
        "/hls.min.js": ("application/javascript", HLS_JS.read_bytes()),
        "/": ("text/html", _PAGE),
    }
    state, requested = _play(files, {key.kid: key})
    assert not [e for e in state["errors"] if "fatal" in e], state
    assert state["t"] > 1.2 and state["frames"] > 30, state  # decrypted and decoded past segment 0
    # hls.js read the KID and METHOD from our tag, and the CDM asked our license logic for it
    assert {(k["fmt"], k["method"], k["keyId"]) for k in state["keys"]} == {
        ("org.w3.clearkey", "SAMPLE-AES" if scheme == "cbcs" else "SAMPLE-AES-CTR", key.kid.hex())}
    assert requested and all(r == (key.kid,) for r in requested)

DASH_JS = Path(__file__).parents[2] / "src" / "flowcast" / "web" / "node_modules" / "dashjs" / "dist" / "modern" / "umd" / "dash.all.min.js"

_DASH_PAGE = b"""<!doctype html><html><body><video muted playsinline></video>
<script src="/dash.all.min.js"></script>
<script>
window.state = {errors: []};
const video = document.querySelector('video');
const player = dashjs.MediaPlayer().create();
player.on(dashjs.MediaPlayer.events.ERROR, (e) => window.state.errors.push(JSON.stringify(e.error || e)));
// No setProtectionData: the licence URL must come from the MPD (dashif:Laurl / clearkey:Laurl).
player.initialize(video, '/manifest.mpd', true);
</script></body></html>"""


def _encrypted_vod(media, scheme: str):  # type: ignore[no-untyped-def]
    import secrets

    from flowcast.protect.cenc import ContentKey, TrackEncryptor

    init, samples = media.read("h264")  # 2 s, 30 fps, GOP 30: two 1 s segments
    kid = secrets.token_bytes(16)
    key = ContentKey(kid, secrets.token_bytes(16), secrets.token_bytes(16 if scheme == "cbcs" else 8))
    enc = TrackEncryptor(scheme, init.tracks[0], key)  # type: ignore[arg-type]
    init_bytes = enc.encrypt_init(init.data)
    chunks = [enc.encrypt_chunk(m + 1, init.tracks[0].track_id, samples[m * 30 : (m + 1) * 30]) for m in range(2)]
    return init, key, init_bytes, chunks


def _play(files: dict[str, tuple[str, bytes]], keys: dict[bytes, object], seconds: float = 1.2) -> tuple[dict, list]:  # type: ignore[type-arg]
    import time

    from tests.browser import launch_chromium

    from flowcast.protect.clearkey import LicenseError, build_license_response, parse_license_request

    requested: list[tuple[bytes, ...]] = []

    def license_handler(body: bytes) -> tuple[int, bytes]:
        try:
            req = parse_license_request(body)
            requested.append(req.kids)
            return 200, build_license_response(req, keys)  # type: ignore[arg-type]
        except LicenseError as exc:
            return exc.status, b"{}"

    server = _serve(files, license_handler)
    state: dict = {}  # type: ignore[type-arg]
    try:
        with launch_chromium() as browser:
            page = browser.new_page()
            page.goto(f"http://127.0.0.1:{server.server_address[1]}/")
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                state = page.evaluate(
                    "() => ({...window.state, t: document.querySelector('video').currentTime,"
                    " frames: document.querySelector('video').getVideoPlaybackQuality().totalVideoFrames})"
                )
                if state["t"] > seconds or any("fatal" in e for e in state["errors"]):
                    break
                page.wait_for_timeout(200)
    finally:
        server.shutdown()
    return state, requested


@pytest.mark.browser
@pytest.mark.parametrize("scheme", ["cenc", "cbcs"])
def test_dashjs_plays_clearkey_with_the_licence_url_from_our_mpd(media, scheme: str) -> None:  # type: ignore[no-untyped-def]
    from tests.browser import chromium_available

    if not chromium_available() or not DASH_JS.exists():
        pytest.skip("needs Debian chromium and dashjs from npm")
    init, key, init_bytes, chunks = _encrypted_vod(media, scheme)
    track = init.tracks[0]
    body = render_mpd(
        mpd(
            video=(DashRepresentation("v", track, 500_000, "30"),),
            audio=None,
            segment_duration=1.0,
            part_duration=None,
            latency=None,
            ended=True,
            media_presentation_duration=2.0,
            content_protection=dash_content_protection(clearkey_signal(key.kid, scheme, "/license")),  # type: ignore[arg-type]
        )
    )
    files = {
        "/manifest.mpd": ("application/dash+xml", body),
        "/v/init.mp4": ("video/mp4", init_bytes),
        "/v/0.m4s": ("video/mp4", chunks[0]),
        "/v/1.m4s": ("video/mp4", chunks[1]),
        "/dash.all.min.js": ("application/javascript", DASH_JS.read_bytes()),
        "/": ("text/html", _DASH_PAGE),
    }
    state, requested = _play(files, {key.kid: key})
    assert not state.get("errors"), state
    assert state["t"] > 1.2 and state["frames"] > 30, state
    assert requested and all(r == (key.kid,) for r in requested)
