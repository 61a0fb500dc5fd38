"""A simulated Unreal Engine streamer: the flowcast test source over Pixel Streaming.

It connects to the signalling server as a streamer, offers each subscribing player a
WebRTC session (aiortc) with H.264 video and Epic's data channel, decodes the input the
page sends (`input.py`), records every event with its arrival time, and answers the
latency tests. The picture is FFmpeg's testsrc2 with flowcast's burned-in wall-clock strip
(`transcode.timecode`), encoded *once* (libx264 via PyAV, constrained baseline, no
B-frames, 1 s GOP, zerolatency) and the same packets are sent to every player: adding a
player costs packetisation and SRTP, not another encoder. The source's 1 kHz tone goes
along as Opus, encoded by the same FFmpeg process (so audio and video share one clock).
"""

from __future__ import annotations

import asyncio
import fractions
import json
import logging
import os
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtcrtpsender import RTCRtpSender
from aiortc.sdp import candidate_from_sdp
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from flowcast.config import IngestConfig
from flowcast.transcode.sources import resolve_source
from flowcast.webrtc.pixelstreaming import input as psinput
from flowcast.webrtc.pixelstreaming.messages import encode

log = logging.getLogger("flowcast.pixelstreaming.streamer")

VIDEO_CLOCK = 90000
KEYFRAME_MIN_INTERVAL = 0.25  # seconds between forced IDRs
TIME_BASE = fractions.Fraction(1, VIDEO_CLOCK)
AUDIO_CLOCK = 48000
AUDIO_TIME_BASE = fractions.Fraction(1, AUDIO_CLOCK)
OPUS_FRAME = 960  # 20 ms at 48 kHz


class SharedEncoder:
    """One FFmpeg (test source + timecode -> raw frames, tone -> Opus) and one x264:
    the same packets go to every track."""

    def __init__(
        self, width: int = 1280, height: int = 720, fps: int = 30, bitrate: int = 2_500_000,
        ffmpeg: str = "ffmpeg", audio: bool = True,
    ) -> None:
        self.width, self.height, self.fps, self.bitrate, self.ffmpeg = width, height, fps, bitrate, ffmpeg
        self.audio = audio
        self._tracks: set[PacketTrack] = set()
        self._audio_tracks: set[PacketTrack] = set()
        self._audio_thread: threading.Thread | None = None
        self._audio_fd: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._keyframe = threading.Event()
        self._last_forced = 0.0
        self.frames = 0

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        source = resolve_source(IngestConfig(input="testsrc"))
        vf = source.video_filter or "null"
        if (self.width, self.height) != (1280, 720):
            vf += f",scale={self.width}:{self.height}"
        cmd = [
            self.ffmpeg, "-hide_banner", "-loglevel", "error", "-nostdin",
            *source.input_args, "-map", source.video, "-vf", vf, "-r", str(self.fps),
            "-pix_fmt", "yuv420p", "-f", "rawvideo", "pipe:1",
        ]
        pass_fds: tuple[int, ...] = ()
        if self.audio:
            # FFmpeg feeds its outputs in dts order, so the tone is paced by the video's
            # `realtime` filter; one Ogg page per 20 ms Opus packet keeps it unbuffered.
            read_fd, write_fd = os.pipe()
            cmd += [
                "-map", source.audio, "-c:a", "libopus", "-application", "lowdelay", "-frame_duration", "20",
                "-b:a", "64k", "-ac", "2", "-page_duration", "20000", "-flush_packets", "1", "-f", "ogg", f"pipe:{write_fd}",
            ]
            pass_fds = (write_fd,)
            self._audio_fd = read_fd
        self._proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, pass_fds=pass_fds)
        for fd in pass_fds:
            os.close(fd)
        self._thread = threading.Thread(target=self._run, name="ps-encoder", daemon=True)
        self._thread.start()
        if self._audio_fd is not None:
            self._audio_thread = threading.Thread(target=self._run_audio, args=(self._audio_fd,), name="ps-audio", daemon=True)
            self._audio_thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._proc and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
        if self._thread:
            self._thread.join(5)
        if self._audio_thread:
            self._audio_thread.join(5)

    def subscribe(self, track: PacketTrack) -> None:
        if track.kind == "audio":
            self._audio_tracks.add(track)
            return
        self._tracks.add(track)
        self.request_keyframe()  # a new viewer starts on the next frame, not the next GOP

    def unsubscribe(self, track: PacketTrack) -> None:
        self._tracks.discard(track)
        self._audio_tracks.discard(track)

    def request_keyframe(self) -> None:
        # one IDR per request window: a burst of PLIs from many players costs one keyframe
        now = time.monotonic()
        if now - self._last_forced >= KEYFRAME_MIN_INTERVAL:
            self._last_forced = now
            self._keyframe.set()

    def _run(self) -> None:
        assert self._proc and self._proc.stdout
        ctx = av.CodecContext.create("libx264", "w")
        ctx.width, ctx.height = self.width, self.height
        ctx.pix_fmt = "yuv420p"
        ctx.time_base = fractions.Fraction(1, VIDEO_CLOCK)
        ctx.framerate = fractions.Fraction(self.fps, 1)
        ctx.bit_rate = self.bitrate
        ctx.gop_size = self.fps
        ctx.max_b_frames = 0
        ctx.profile = "Constrained Baseline"
        # repeat-headers: every keyframe carries SPS/PPS, so any player can start on it
        ctx.options = {"preset": "ultrafast", "tune": "zerolatency", "x264-params": "repeat-headers=1", "level": "3.1"}
        ctx.open()
        size = self.width * self.height * 3 // 2
        stdout = self._proc.stdout
        t0 = time.monotonic()
        while not self._stop.is_set():
            raw = stdout.read(size)
            if not raw or len(raw) < size:
                break
            frame = av.VideoFrame(self.width, self.height, "yuv420p")
            _fill(frame, raw, self.width, self.height)
            frame.pts = int((time.monotonic() - t0) * VIDEO_CLOCK)
            frame.time_base = TIME_BASE
            if self._keyframe.is_set():
                self._keyframe.clear()
                frame.pict_type = av.video.frame.PictureType.I
            for packet in ctx.encode(frame):
                self.frames += 1
                self._publish(packet)
        log.info("encoder stopped after %d frames", self.frames)

    def _run_audio(self, fd: int) -> None:
        try:
            with open(fd, "rb") as pipe, av.open(_Partial(pipe), format="ogg", options={"probesize": "4096", "analyzeduration": "0"}) as ogg:
                pts = 0
                for packet in ogg.demux(ogg.streams.audio[0]):
                    if self._stop.is_set():
                        break
                    if packet.size == 0:
                        continue
                    data = bytes(packet)
                    loop = self._loop
                    if loop is None or loop.is_closed():
                        break
                    loop.call_soon_threadsafe(self._fan_out_audio, data, pts)
                    pts += OPUS_FRAME
        except (av.FFmpegError, OSError, ValueError, IndexError) as exc:
            if not self._stop.is_set():
                log.warning("audio stopped: %s", exc)

    def _fan_out_audio(self, data: bytes, pts: int) -> None:
        for track in list(self._audio_tracks):
            track.offer(data, pts, True)

    def _publish(self, packet: av.Packet) -> None:
        data = bytes(packet)
        pts, key = packet.pts, packet.is_keyframe
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        loop.call_soon_threadsafe(self._fan_out, data, pts, key)

    def _fan_out(self, data: bytes, pts: int, key: bool) -> None:
        for track in list(self._tracks):
            track.offer(data, pts, key)


class _Partial:
    """A pipe whose read(n) returns what is there: PyAV asks for 32 KB at a time, and a
    blocking read of that much would hold ~1.5 s of 64 kb/s Opus back."""

    def __init__(self, pipe: Any) -> None:
        self._pipe = pipe

    def read(self, n: int = -1) -> bytes:
        return self._pipe.read1(n if n > 0 else 65536)


def _fill(frame: av.VideoFrame, raw: bytes, width: int, height: int) -> None:
    offset = 0
    for plane, (w, h) in zip(frame.planes, ((width, height), (width // 2, height // 2), (width // 2, height // 2))):
        stride = plane.line_size
        chunk = raw[offset : offset + w * h]
        offset += w * h
        if stride == w:
            plane.update(chunk)
        else:
            buf = bytearray(stride * h)
            for row in range(h):
                buf[row * stride : row * stride + w] = chunk[row * w : (row + 1) * w]
            plane.update(bytes(buf))


class PacketTrack(MediaStreamTrack):
    """A track that hands aiortc pre-encoded H.264 or Opus (aiortc packetises an av.Packet
    as is, no encoder of its own)."""

    def __init__(self, encoder: SharedEncoder, kind: str = "video") -> None:
        super().__init__()
        self.kind = kind
        self._time_base = TIME_BASE if kind == "video" else AUDIO_TIME_BASE
        self._encoder = encoder
        self._queue: asyncio.Queue[tuple[bytes, int]] = asyncio.Queue(maxsize=60)
        self._started = False
        encoder.subscribe(self)

    def offer(self, data: bytes, pts: int, key: bool) -> None:
        if not self._started:
            if not key:
                return
            self._started = True
        if self._queue.full():  # a stalled sender drops, and restarts at the next keyframe
            self._started = False
            while not self._queue.empty():
                self._queue.get_nowait()
            if self.kind == "video":
                self._encoder.request_keyframe()
            return
        self._queue.put_nowait((data, pts))

    async def recv(self) -> av.Packet:  # type: ignore[override]
        if self.readyState != "live":
            raise MediaStreamError
        data, pts = await self._queue.get()
        packet = av.Packet(data)
        packet.pts = pts
        packet.time_base = self._time_base
        return packet

    def stop(self) -> None:
        self._encoder.unsubscribe(self)
        super().stop()


@dataclass
class RecordedInput:
    """One input event as it arrived on the streamer."""

    player_id: str
    arrival_ms: float  # wall clock, ms since the epoch
    name: str
    fields: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {"player": self.player_id, "t": self.arrival_ms, "name": self.name, "fields": self.fields}


@dataclass
class _Player:
    pc: RTCPeerConnection
    track: PacketTrack
    audio: PacketTrack | None = None
    channel: Any = None
    pending_ice: list[dict[str, Any]] = field(default_factory=list)


class SimulatedStreamer:
    """The streamer side of Pixel Streaming, connected to `url` (ws://host:8888)."""

    def __init__(
        self,
        url: str,
        *,
        streamer_id: str = "DefaultStreamer",
        encoder: SharedEncoder | None = None,
        input_log: Path | None = None,
        on_input: Callable[[RecordedInput], None] | None = None,
        lip_sync: bool = False,
    ) -> None:
        self.url = url
        self.lip_sync = lip_sync
        self.streamer_id = streamer_id
        self.encoder = encoder or SharedEncoder()
        self.input_log = input_log
        self.on_input = on_input
        self.events: list[RecordedInput] = []
        self.committed_id: str | None = None
        self._players: dict[str, _Player] = {}
        self._ice_servers: list[RTCIceServer] = []
        self._ws: Any = None
        self._log_file: Any = None

    async def run(self, *, reconnect: bool = True) -> None:
        """Connect and serve players until cancelled; reconnect when the server goes away."""
        self.encoder.start()
        if self.input_log:
            self.input_log.parent.mkdir(parents=True, exist_ok=True)
            self._log_file = self.input_log.open("a", buffering=1)
        try:
            while True:
                try:
                    async with connect(self.url, max_size=2**20, ping_interval=20) as ws:
                        self._ws = ws
                        await self._serve(ws)
                except (OSError, ConnectionClosed, InvalidHandshake) as exc:
                    log.warning("signalling connection: %s", exc)
                finally:
                    self._ws = None
                    await self._close_players()
                if not reconnect:
                    return
                await asyncio.sleep(1.0)
        finally:
            await self._close_players()
            self.encoder.stop()
            if self._log_file:
                self._log_file.close()

    async def _serve(self, ws: Any) -> None:
        async for text in ws:
            msg = json.loads(text)
            mtype = msg.get("type")
            if mtype == "config":
                self._ice_servers = _ice_servers(msg.get("peerConnectionOptions") or {})
            elif mtype == "identify":
                await ws.send(encode({"type": "endpointId", "id": self.streamer_id}))
            elif mtype == "endpointIdConfirm":
                self.committed_id = msg["committedId"]
                log.info("streaming as %r", self.committed_id)
            elif mtype == "playerConnected":
                await self._add_player(ws, str(msg["playerId"]))
            elif mtype == "playerDisconnected":
                await self._drop_player(str(msg["playerId"]))
            elif mtype == "answer":
                await self._on_answer(str(msg.get("playerId")), msg["sdp"])
            elif mtype == "iceCandidate":
                await self._on_ice(str(msg.get("playerId")), msg.get("candidate") or {})
            elif mtype == "ping":
                await ws.send(encode({"type": "pong", "time": msg["time"]}))

    async def _add_player(self, ws: Any, player_id: str) -> None:
        await self._drop_player(player_id)
        pc = RTCPeerConnection(RTCConfiguration(iceServers=self._ice_servers))
        track = PacketTrack(self.encoder)
        player = _Player(pc, track)
        self._players[player_id] = player
        transceiver = pc.addTransceiver(track, direction="sendonly")
        h264 = [c for c in RTCRtpSender.getCapabilities("video").codecs if c.mimeType == "video/H264" and c.parameters.get("packetization-mode") == "1"]
        transceiver.setCodecPreferences(h264)
        if self.encoder.audio:
            player.audio = PacketTrack(self.encoder, "audio")
            audio = pc.addTransceiver(player.audio, direction="sendonly")
            if not self.lip_sync:
                # Chrome synchronises audio and video of one MediaStream (msid): under load its
                # audio buffer grows and the video is held back to match (measured: jitter
                # buffer 38 -> 279 ms, glass-to-glass p50 141 -> 390 ms on a loaded 2-core
                # machine). A test tone needs no lip sync, so it gets a stream of its own;
                # Epic's frontend plays such audio through a separate <audio> element.
                audio.sender._stream_id = str(uuid.uuid4())
        # aiortc answers PLI/FIR by flagging its own encoder, which pre-encoded packets bypass:
        # pass the request on to the shared encoder (the next frame becomes an IDR)
        sender = transceiver.sender
        on_pli = sender._send_keyframe

        def send_keyframe() -> None:
            on_pli()
            self.encoder.request_keyframe()

        sender._send_keyframe = send_keyframe  # type: ignore[method-assign]
        channel = pc.createDataChannel("datachannel", ordered=True)
        player.channel = channel
        channel.on("open", lambda: channel.send(psinput.protocol_message()))
        channel.on("message", lambda data: self._on_data(player_id, channel, data))

        @pc.on("connectionstatechange")
        async def _state() -> None:
            log.info("player %s: %s", player_id, pc.connectionState)
            if pc.connectionState == "failed":
                await self._drop_player(player_id)

        await pc.setLocalDescription(await pc.createOffer())
        await ws.send(encode({"type": "offer", "sdp": pc.localDescription.sdp, "playerId": player_id}))

    async def _on_answer(self, player_id: str, sdp: str) -> None:
        player = self._players.get(player_id)
        if player is None:
            return
        await player.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))
        for cand in player.pending_ice:
            await self._add_ice(player, cand)
        player.pending_ice.clear()

    async def _on_ice(self, player_id: str, cand: dict[str, Any]) -> None:
        player = self._players.get(player_id)
        if player is None or not cand.get("candidate"):
            return
        if player.pc.remoteDescription is None:
            player.pending_ice.append(cand)
        else:
            await self._add_ice(player, cand)

    async def _add_ice(self, player: _Player, cand: dict[str, Any]) -> None:
        text = cand["candidate"]
        try:
            candidate = candidate_from_sdp(text.split(":", 1)[1] if text.startswith("candidate:") else text)
        except (ValueError, IndexError):
            log.debug("ignoring unparsable candidate %r", text)
            return
        candidate.sdpMid = cand.get("sdpMid")
        candidate.sdpMLineIndex = cand.get("sdpMLineIndex")
        await player.pc.addIceCandidate(candidate)

    def _on_data(self, player_id: str, channel: Any, data: Any) -> None:
        arrival = time.time() * 1000.0
        if isinstance(data, str):
            data = data.encode("utf-8")
        try:
            event = psinput.decode(data)
        except psinput.BadInputMessage as exc:
            log.warning("player %s: %s", player_id, exc)
            return
        record = RecordedInput(player_id, arrival, event.name, event.fields)
        self.events.append(record)
        if self._log_file:
            self._log_file.write(json.dumps(record.as_dict()) + "\n")
        if self.on_input:
            self.on_input(record)
        if event.name == "LatencyTest":
            channel.send(psinput.from_streamer("LatencyTest", json.dumps(_latency_reply(arrival))))
        elif event.name == "RequestInitialSettings":
            settings = {
                "PixelStreaming": {"AllowPixelStreamingCommands": False, "DisableLatencyTest": False},
                "Encoder": {"TargetBitrate": self.encoder.bitrate, "MaxBitrate": self.encoder.bitrate, "MinQP": 0, "MaxQP": 51},
                "WebRTC": {"FPS": self.encoder.fps, "MinBitrate": 100000, "MaxBitrate": self.encoder.bitrate},
                "ConfigOptions": {},
            }
            channel.send(psinput.from_streamer("InitialSettings", json.dumps(settings)))
        elif event.name == "IFrameRequest":
            self.encoder.request_keyframe()

    async def _drop_player(self, player_id: str) -> None:
        player = self._players.pop(player_id, None)
        if player is None:
            return
        player.track.stop()
        if player.audio:
            player.audio.stop()
        await player.pc.close()

    async def _close_players(self) -> None:
        for pid in list(self._players):
            await self._drop_player(pid)


def _latency_reply(receipt_ms: float) -> dict[str, Any]:
    # The fields Epic's frontend reads (LatencyTestResults): no capture or encode happens
    # for the test itself here, so those spans are zero.
    now = time.time() * 1000.0
    return {
        "ReceiptTimeMs": receipt_ms,
        "TransmissionTimeMs": now,
        "PreCaptureTimeMs": receipt_ms,
        "PostCaptureTimeMs": receipt_ms,
        "PreEncodeTimeMs": receipt_ms,
        "PostEncodeTimeMs": receipt_ms,
        "EncodeMs": 0,
        "CaptureToSendMs": 0,
    }


def _ice_servers(options: dict[str, Any]) -> list[RTCIceServer]:
    servers = []
    for entry in options.get("iceServers") or []:
        urls = entry.get("urls")
        if urls:
            servers.append(RTCIceServer(urls=urls, username=entry.get("username"), credential=entry.get("credential")))
    return servers
