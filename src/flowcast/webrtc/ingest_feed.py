"""Decoded WebRTC frames -> a NUT stream on FFmpeg's loopback listener.

A WHIP publisher's tracks arrive decoded (aiortc decodes VP8/H.264/Opus); the ladder's
FFmpeg reads them like any other source, from `-f nut -i tcp://127.0.0.1:<port>?listen=1`.
NUT carries raw yuv420p and s16 PCM with exact timestamps, so FFmpeg probes nothing and
decodes nothing: the only encode is the ladder's.

Timestamps are the arrival clock of this process (one clock for both tracks), because
RTP timestamps of different tracks share no origin until RTCP sender reports arrive. The
picture is scaled to one fixed size: browsers change resolution with bandwidth and CPU,
and a NUT stream cannot. When the publisher sends no audio, silence follows the video
clock so the ladder's audio rendition keeps its cadence.

Muxing and socket writes run on a thread: a 720p30 raw stream is ~40 MB/s, which must
not block the event loop that serves viewers.
"""

from __future__ import annotations

import logging
import queue
import socket
import threading
import time
from fractions import Fraction
from typing import Any

import av
import numpy as np

__all__ = ["FeedError", "NutFeed", "INGEST_TIME_BASE"]

log = logging.getLogger(__name__)

INGEST_TIME_BASE = Fraction(1, 90000)
AUDIO_RATE = 48000
AUDIO_LAYOUT = "stereo"
_SILENCE_CHUNK = 960  # 20 ms, Opus' frame
_QUEUE_FRAMES = 90  # ~3 s of video: beyond that the feed drops (FFmpeg is not keeping up)


class FeedError(Exception):
    """FFmpeg's listener could not be reached or went away."""


class NutFeed:
    """One publisher session's frames into one FFmpeg input. Thread-safe `put_*` calls."""

    def __init__(self, port: int, *, width: int = 1280, height: int = 720, host: str = "127.0.0.1") -> None:
        self.address = (host, port)
        self.width = width
        self.height = height
        self._queue: queue.Queue[tuple[str, Any, float] | None] = queue.Queue(maxsize=_QUEUE_FRAMES)
        self._thread: threading.Thread | None = None
        self._t0: float | None = None
        self.frames_written = 0
        self.frames_dropped = 0
        self.error: str | None = None

    # -- called from the event loop ---------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="whip-feed", daemon=True)
        self._thread.start()

    def put_video(self, frame: av.VideoFrame) -> None:
        self._put(("video", frame, time.monotonic()))

    def put_audio(self, frame: av.AudioFrame) -> None:
        self._put(("audio", frame, time.monotonic()))

    def close(self) -> None:
        """End the stream: FFmpeg sees EOF, exits, and the supervisor re-arms the listener."""
        try:
            self._queue.put_nowait(None)
        except queue.Full:
            # make room: the end matters more than the frames in flight
            try:
                self._queue.get_nowait()
            except queue.Empty:
                pass
            self._queue.put_nowait(None)

    def join(self, timeout: float = 5.0) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _put(self, item: tuple[str, Any, float]) -> None:
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self.frames_dropped += 1

    # -- feed thread ------------------------------------------------------------------------

    def _connect(self, deadline: float) -> socket.socket:
        """FFmpeg may be between runs (the supervisor restarts it): retry until it listens."""
        last: OSError | None = None
        while time.monotonic() < deadline:
            try:
                return socket.create_connection(self.address, timeout=2.0)
            except OSError as exc:
                last = exc
                time.sleep(0.1)
        raise FeedError(f"FFmpeg's ingest listener {self.address[0]}:{self.address[1]} is not reachable: {last}")

    def _run(self) -> None:
        try:
            sock = self._connect(time.monotonic() + 10.0)
        except FeedError as exc:
            self.error = str(exc)
            log.error("%s", exc)
            self._drain()
            return
        sock.settimeout(None)
        out = sock.makefile("wb", buffering=1 << 20)
        try:
            self._mux(out)
        except (OSError, av.FFmpegError) as exc:
            self.error = f"ingest feed stopped: {exc}"
            log.warning("%s", self.error)
            self._drain()
        finally:
            try:
                out.close()
            except OSError:
                pass
            sock.close()

    def _drain(self) -> None:
        """Unblock producers after a failure: discard until the end marker."""
        while True:
            item = self._queue.get()
            if item is None:
                return

    def _mux(self, out: Any) -> None:
        container = av.open(out, "w", format="nut")
        video = container.add_stream("rawvideo", rate=30)
        video.width, video.height, video.pix_fmt = self.width, self.height, "yuv420p"
        video.codec_context.time_base = INGEST_TIME_BASE
        video.time_base = INGEST_TIME_BASE
        audio = container.add_stream("pcm_s16le", rate=AUDIO_RATE)
        audio.layout = AUDIO_LAYOUT
        audio.time_base = Fraction(1, AUDIO_RATE)
        resampler = av.AudioResampler(format="s16", layout=AUDIO_LAYOUT, rate=AUDIO_RATE)
        audio_samples = 0  # samples written so far: audio pts, gapless
        audio_seen = False
        last_video_pts = -1
        try:
            while True:
                item = self._queue.get()
                if item is None:
                    break
                kind, frame, arrived = item
                if self._t0 is None:
                    self._t0 = arrived
                elapsed = arrived - self._t0
                if kind == "video":
                    pts = round(elapsed / INGEST_TIME_BASE)
                    if pts <= last_video_pts:
                        pts = last_video_pts + 1
                    last_video_pts = pts
                    out_frame = frame.reformat(width=self.width, height=self.height, format="yuv420p")
                    out_frame.pts = pts
                    out_frame.time_base = INGEST_TIME_BASE
                    for packet in video.encode(out_frame):
                        container.mux(packet)
                    self.frames_written += 1
                    if not audio_seen:
                        # no publisher audio (yet): silence up to the video clock
                        target = round(elapsed * AUDIO_RATE)
                        while audio_samples + _SILENCE_CHUNK <= target:
                            audio_samples = self._mux_silence(container, audio, audio_samples)
                else:
                    if not audio_seen:
                        audio_seen = True
                        # start where the silence (or the clock) left off, never earlier
                        audio_samples = max(audio_samples, round(elapsed * AUDIO_RATE))
                    for resampled in resampler.resample(frame):
                        resampled.pts = audio_samples
                        resampled.time_base = Fraction(1, AUDIO_RATE)
                        audio_samples += resampled.samples
                        for packet in audio.encode(resampled):
                            container.mux(packet)
        finally:
            for stream in (video, audio):
                try:
                    for packet in stream.encode(None):
                        container.mux(packet)
                except (OSError, av.FFmpegError):
                    pass
            try:
                container.close()
            except (OSError, av.FFmpegError):
                pass

    @staticmethod
    def _mux_silence(container: Any, audio: Any, pts: int) -> int:
        silence = av.AudioFrame.from_ndarray(
            np.zeros((1, _SILENCE_CHUNK * 2), dtype=np.int16), format="s16", layout=AUDIO_LAYOUT
        )
        silence.sample_rate = AUDIO_RATE
        silence.pts = pts
        silence.time_base = Fraction(1, AUDIO_RATE)
        for packet in audio.encode(silence):
            container.mux(packet)
        return pts + _SILENCE_CHUNK
