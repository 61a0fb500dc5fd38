"""WHEP request checks (sans-I/O), the WebRTC encoder output, the demux tap on real FFmpeg
output and the fan-out's keyframe / slow-viewer rules."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import av
import pytest
from aiortc import RTCPeerConnection

from flowcast.config import ConfigError, parse_config
from flowcast.transcode.command import WEBRTC_OUTPUT, build_command, h264_level, output_names, webrtc_output
from flowcast.transcode.sources import resolve_source
from flowcast.webrtc.forward import Fanout, PacketTrack
from flowcast.webrtc.source import MAX_BUFFERED, EncoderTap, _PipeBuffer
from flowcast.webrtc.turn import turn_credentials
from flowcast.webrtc.whep import (
    SDP,
    SDPFRAG,
    TurnIssuer,
    WhepError,
    bearer_token,
    link_value,
    parse_offer,
    parse_path,
    parse_sdpfrag,
    require_type,
)


async def _browser_like_offer(video: bool = True, audio: bool = True) -> str:
    pc = RTCPeerConnection()
    if video:
        pc.addTransceiver("video", direction="recvonly")
    if audio:
        pc.addTransceiver("audio", direction="recvonly")
    await pc.setLocalDescription(await pc.createOffer())
    sdp = pc.localDescription.sdp
    await pc.close()
    return sdp


# -- request checks ---------------------------------------------------------------------------


def test_paths() -> None:
    assert parse_path("/whep/live") == ("live", None)
    rid = "A" * 32
    assert parse_path(f"/whep/live/{rid}") == ("live", rid)
    for bad in ("/whep/", "/whep/live/short", "/whep/live/x/y", "/whep/../etc", f"/whep/li ve/{rid}"):
        with pytest.raises(WhepError) as exc:
            parse_path(bad)
        assert exc.value.status == 404


def test_content_types() -> None:
    require_type("application/sdp", SDP)
    require_type("Application/SDP; charset=utf-8", SDP)
    for bad in (None, "", "text/plain", "application/json", "application/sdpx"):
        with pytest.raises(WhepError) as exc:
            require_type(bad, SDP)
        assert exc.value.status == 415
        assert ("accept", SDP) in exc.value.headers
    with pytest.raises(WhepError) as exc:
        require_type(SDP, SDPFRAG)
    assert exc.value.status == 415


def test_offer_accepted_and_refused() -> None:
    offer = parse_offer(asyncio.run(_browser_like_offer()).encode())
    assert offer.video and offer.audio
    audio_only = parse_offer(asyncio.run(_browser_like_offer(video=False)).encode())
    assert audio_only.audio and not audio_only.video
    for garbage in (b"", b"hello", b"v=0\r\nm=video", b"\xff\xfe", "v=0\r\nm=video x y\r\n".encode()):
        with pytest.raises(WhepError) as exc:
            parse_offer(garbage)
        assert exc.value.status in (400, 413), garbage
    # An offer whose video has only VP8 (no H.264 constrained baseline) and no audio.
    vp8_only = "\r\n".join(
        line
        for line in asyncio.run(_browser_like_offer(audio=False)).split("\r\n")
        if "H264" not in line and "apt=" not in line and "profile-level-id" not in line
    )
    with pytest.raises(WhepError) as exc:
        parse_offer(vp8_only.encode())
    assert exc.value.status == 400 and "H.264" in exc.value.message
    with pytest.raises(WhepError) as exc:
        parse_offer(b"v=0\r\n" + b"a=x\r\n" * 20000)
    assert exc.value.status == 413


def test_sdpfrag_and_bearer() -> None:
    frag = parse_sdpfrag(
        b"a=ice-ufrag:abcd\r\na=ice-pwd:secretsecret\r\nm=audio 9 RTP/AVP 0\r\na=mid:0\r\n"
        b"a=candidate:1 1 udp 2122260223 127.0.0.1 50000 typ host\r\na=end-of-candidates\r\n"
    )
    assert frag.ufrag == "abcd" and frag.pwd == "secretsecret" and frag.end_of_candidates
    assert frag.candidates == ("1 1 udp 2122260223 127.0.0.1 50000 typ host",)
    assert bearer_token("Bearer abc.def") == "abc.def"
    assert bearer_token("bearer  x") == "x"
    assert bearer_token("Basic abc") is None and bearer_token(None) is None and bearer_token("Bearer ") is None


def test_link_headers_carry_turn_rest_credentials() -> None:
    assert link_value("stun:127.0.0.1:3478") == '<stun:127.0.0.1:3478>; rel="ice-server"'
    issuer = TurnIssuer("s3cret-for-tests", ("turn:127.0.0.1:3478?transport=udp",), ttl=600)
    (link,) = issuer.links("viewer1")
    assert link.startswith('<turn:127.0.0.1:3478?transport=udp>; rel="ice-server"; username="')
    username = link.split('username="')[1].split('"')[0]
    password = link.split('credential="')[1].split('"')[0]
    expiry, user = username.split(":")
    assert user == "viewer1"
    # The same HMAC coturn checks (turn.py, tested against coturn in test_turn.py).
    assert turn_credentials("s3cret-for-tests", "viewer1", ttl=600, now=int(expiry) - 600).password == password
    assert 'credential-type="password"' in link


# -- the encoder's WebRTC output ------------------------------------------------------------------


def _config(**webrtc: object) -> object:
    return parse_config({"webrtc": {"enabled": True, **webrtc}})


def test_output_only_when_enabled() -> None:
    assert WEBRTC_OUTPUT not in output_names(parse_config({}))
    cfg = _config()
    names = output_names(cfg)
    assert names[-1] == WEBRTC_OUTPUT
    cmd = build_command(cfg, {n: 3 + i for i, n in enumerate(names)}, source=resolve_source(cfg.ingest))
    tail = cmd[cmd.index("[vw]") - 1 :]
    assert tail[-1] == f"pipe:{3 + len(names) - 1}"
    for opt, value in (("-profile:v", "baseline"), ("-bf", "0"), ("-g", "30"), ("-tune", "zerolatency"),
                       ("-c:a", "libopus"), ("-ar", "48000"), ("-f", "mpegts"), ("-level:v", "3.1")):  # fmt: skip
        assert tail[tail.index(opt) + 1] == value, opt


def test_level_and_config_errors() -> None:
    assert h264_level(1280, 720, 30) == "3.1"
    assert h264_level(640, 360, 30) == "3.0"
    assert h264_level(1920, 1080, 30) == "4.0"
    with pytest.raises(ConfigError, match="webrtc.width"):
        parse_config({"webrtc": {"width": 1281}})
    with pytest.raises(ConfigError, match="webrtc.gop_s"):
        parse_config({"webrtc": {"gop_s": 10}})


def _encode_ts(tmp: Path, seconds: float = 2.5) -> bytes:
    """Real FFmpeg output with exactly the WebRTC output's options (on a file)."""
    cfg = _config(width=320, height=180)
    src = resolve_source(cfg.ingest)
    args = webrtc_output(cfg, src, 1)[:-1] + [str(tmp / "w.ts")]
    cmd = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc2=size=320x180:rate=30",
           "-f", "lavfi", "-i", "sine=frequency=1000:sample_rate=48000", "-t", str(seconds),
           "-filter_complex", "[0:v]null[vw]", *args]  # fmt: skip
    cmd[cmd.index(src.audio)] = "1:a:0"
    subprocess.run(cmd, check=True, timeout=60)
    return (tmp / "w.ts").read_bytes()


def test_tap_demuxes_real_encoder_output(tmp_path: Path) -> None:
    data = _encode_ts(tmp_path)

    async def run() -> list[tuple[str, av.Packet, bool]]:
        got: list[tuple[str, av.Packet, bool]] = []
        tap = EncoderTap(lambda k, p, key: got.append((k, p, key)), asyncio.get_running_loop())
        tap.run_start(1, 0.0)
        for i in range(0, len(data), 1316):  # pipe-sized pieces with arbitrary boundaries
            tap.feed(data[i : i + 1316])
            await asyncio.sleep(0.001)  # at about the pace a pipe delivers them
        tap.close()
        seen = -1
        for _ in range(100):  # until the demux thread has delivered everything
            await asyncio.sleep(0.2)
            if len(got) == seen:
                break
            seen = len(got)
        return got

    got = asyncio.run(run())
    video = [(p, k) for kind, p, k in got if kind == "video"]
    audio = [p for kind, p, _ in got if kind == "audio"]
    assert len(video) >= 70 and len(audio) >= 100, (len(video), len(audio))
    keyframes = [p for p, k in video if k]
    assert video[0][1], "the stream starts at a keyframe"
    assert 2 <= len(keyframes) <= 4  # GOP 1 s over 2.5 s
    for p in keyframes:
        body = bytes(p)
        assert b"\x00\x00\x01\x67\x42\xc0" in body, "in-band SPS: constrained baseline (42c0) before each IDR"
    pts = [p.pts for p, _ in video]
    assert pts == sorted(pts) and all(b - a == 3000 for a, b in zip(pts, pts[1:]))  # 30 fps at 90 kHz
    # The packets decode as H.264 (what every viewer's decoder gets).
    dec = av.CodecContext.create("h264", "r")
    frames = [f for p, _ in video for f in dec.decode(p)]
    assert frames and frames[0].width == 320 and frames[0].height == 180


def test_pipe_buffer_skips_a_backlog_instead_of_growing() -> None:
    buf = _PipeBuffer()
    chunk = b"G" + bytes(187)
    for _ in range(MAX_BUFFERED // len(chunk) + 10):
        buf.write(chunk)
    assert buf.dropped > 0 and buf._size <= MAX_BUFFERED
    buf.close()
    assert buf.read(10) == chunk[:10]  # what is left is still read in order, then EOF
    while buf.read(4096):
        pass
    assert buf.read() == b""


def test_fanout_keyframe_start_and_slow_viewer(tmp_path: Path) -> None:
    _encode_ts(tmp_path)
    with av.open(str(tmp_path / "w.ts")) as c:
        video = [(p, bool(p.is_keyframe)) for p in c.demux(video=0) if p.size]
    keys = [i for i, (_, key) in enumerate(video) if key]
    second_key, third_key = keys[1], keys[2]

    async def join_mid_gop() -> tuple[PacketTrack, av.Packet]:
        fan = Fanout()
        track, _ = fan.subscribe()
        for p, key in video[:5]:
            fan.publish("video", p, key)  # before the sender pulls (ICE, DTLS): not queued
        assert track._queue.empty()
        first = asyncio.ensure_future(track.recv())  # connected: aiortc's sender asks
        await asyncio.sleep(0)
        for p, key in video[5:third_key]:  # mid-GOP: nothing until the next keyframe
            fan.publish("video", p, key)
        return track, await first

    t, first = asyncio.run(join_mid_gop())
    assert first is video[second_key][0]
    assert t._queue.qsize() == third_key - second_key - 1

    async def never_reads() -> tuple[PacketTrack, PacketTrack]:
        fan = Fanout()
        slow, _ = fan.subscribe()
        fast, _ = fan.subscribe()
        first = asyncio.ensure_future(slow.recv())  # asked once, then never again
        await asyncio.sleep(0)
        pending = asyncio.ensure_future(fast.recv())
        await asyncio.sleep(0)
        got = 0
        for _ in range(3):
            for p, key in video:
                fan.publish("video", p, key)
                await pending  # the other viewer keeps up
                pending = asyncio.ensure_future(fast.recv())
                got += 1
        assert got == 3 * len(video) and first.done()
        pending.cancel()
        return slow, fast

    slow, fast = asyncio.run(never_reads())
    # The stalled viewer dropped what was queued and resumed at a keyframe; memory is bounded.
    assert slow.frames_dropped > 0
    assert slow._queue.qsize() <= slow._queue.maxsize
    assert slow._queue.get_nowait().is_keyframe
    assert fast.frames_dropped == 0 and fast.frames_sent == 3 * len(video)
    assert slow.frames_sent == 1
    # Every frame is accounted for: sent, dropped, or still queued.
    assert slow.frames_sent + slow.frames_dropped + slow._queue.qsize() + 1 == 3 * len(video)


def test_cli_turn_and_interactive_mode() -> None:
    from flowcast.cli import build_config, make_parser

    cfg = build_config(make_parser().parse_args(["up", "--turn"]))
    assert cfg.webrtc.enabled and cfg.webrtc.turn.enabled
    cfg = build_config(make_parser().parse_args(["up", "--mode", "interactive"]))
    assert cfg.webrtc.enabled and not cfg.webrtc.turn.enabled and cfg.packaging.mode == "low-latency"
    assert not build_config(make_parser().parse_args(["up"])).webrtc.enabled
    with pytest.raises(ConfigError, match="webrtc.ice_host_addresses"):
        parse_config({"webrtc": {"ice_host_addresses": ["localhost"]}})


def test_answer_level_follows_the_encoder() -> None:
    from flowcast.webrtc.egress import profile_level_id

    assert profile_level_id(h264_level(1280, 720, 30)) == "42e01f"  # what the HTTP test negotiates
    assert profile_level_id(h264_level(1920, 1080, 30)) == "42e028"
    assert profile_level_id(h264_level(640, 360, 30)) == "42e01e"


def test_bad_turn_secret_is_a_clear_startup_error(tmp_path: Path) -> None:
    import os
    import sys

    cfg = tmp_path / "c.yaml"
    cfg.write_text("telemetry: {enabled: false}\n")
    secret = "bad secret value"
    proc = subprocess.run(
        [sys.executable, "-m", "flowcast.cli", "up", "--config", str(cfg), "--turn", "--data-dir", str(tmp_path)],
        env={**os.environ, "FLOWCAST_TURN_SECRET": secret}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "webrtc.turn" in proc.stderr and secret not in proc.stderr + proc.stdout
