"""The encoder's WebRTC rendition (MPEG-TS on a pipe) -> encoded H.264 / Opus packets.

The supervisor hands every chunk of the "webrtc" output to `EncoderTap.feed` on the event
loop; one demux thread per FFmpeg run reads them through a blocking file-like buffer with
PyAV and hands each packet back to the loop (`call_soon_threadsafe`). The packets are never
decoded: the fan-out forwards them to every viewer as they are.

Timestamps are rebased per run onto one clock (90 kHz, the MPEG-TS clock) that only moves
forward, so an encoder restart looks like a short gap to the viewers' jitter buffers,
not a jump back in RTP time.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Literal

import av

log = logging.getLogger("flowcast.webrtc")

Kind = Literal["video", "audio"]
OnPacket = Callable[[Kind, "av.Packet", bool], None]

TS_CLOCK = 90000
# Small probe: both streams' parameters are in the first PAT/PMT and packets; a long probe
# would only delay the first frame of every run.
DEMUX_OPTIONS = {"probesize": "65536", "analyzeduration": "200000"}
MAX_BUFFERED = 256 * 1024  # bytes held for a stalled demux thread: ~1 s at 2 Mb/s


class _PipeBuffer:
    """Bytes fed on the loop, read (blocking) by the demux thread; read() returns b"" at EOF."""

    def __init__(self) -> None:
        self._chunks: deque[bytes] = deque()
        self._size = 0
        self._cond = threading.Condition()
        self._eof = False
        self.dropped = 0

    def write(self, data: bytes) -> None:
        with self._cond:
            if self._eof:
                return
            if self._size + len(data) > MAX_BUFFERED:
                # The demux thread is a second behind (a starved CPU): skip the backlog
                # rather than serve old frames; the demuxer resyncs on the next TS packet
                # and viewers' decoders on the next keyframe.
                self.dropped += self._size
                self._chunks.clear()
                self._size = 0
            self._chunks.append(data)
            self._size += len(data)
            self._cond.notify()

    def close(self) -> None:
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def read(self, n: int = -1) -> bytes:
        with self._cond:
            while not self._chunks and not self._eof:
                self._cond.wait()
            if not self._chunks:
                return b""
            data = self._chunks.popleft()
            if 0 < n < len(data):
                self._chunks.appendleft(data[n:])
                data = data[:n]
            self._size -= len(data)
            return data


class EncoderTap:
    """Demuxes the WebRTC rendition of each FFmpeg run and reports its packets on the loop."""

    def __init__(self, on_packet: OnPacket, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.on_packet = on_packet
        self.loop = loop or asyncio.get_event_loop()
        self._buffer: _PipeBuffer | None = None
        self._thread: threading.Thread | None = None
        self._epoch = time.monotonic()
        self._last_out = 0  # last rebased pts (90 kHz), so a new run continues after it
        self.runs = 0
        self.packets = 0
        self.closed = False

    def run_start(self, run: int, started: float) -> None:
        """A new FFmpeg run: end the previous demuxer, start one for the new stream."""
        self._end_run()
        if self.closed:
            return
        self.runs += 1
        buf = self._buffer = _PipeBuffer()
        self._thread = threading.Thread(target=self._demux, args=(buf, run), name=f"webrtc-demux-{run}", daemon=True)
        self._thread.start()

    def feed(self, data: bytes) -> None:
        if self._buffer is not None:
            self._buffer.write(data)

    def close(self) -> None:
        self.closed = True
        self._end_run()

    def _end_run(self) -> None:
        if self._buffer is not None:
            self._buffer.close()
            self._buffer = None
        self._thread = None  # daemon: it ends at EOF on its own

    # -- the demux thread ---------------------------------------------------------------------

    def _demux(self, buf: _PipeBuffer, run: int) -> None:
        try:
            container = av.open(buf, mode="r", format="mpegts", options=DEMUX_OPTIONS)
        except (av.FFmpegError, EOFError, OSError) as exc:
            if not self.closed:
                log.warning("webrtc run %d: cannot read the encoder's MPEG-TS: %s", run, exc)
            return
        offset: int | None = None
        try:
            streams = [s for s in container.streams if s.type in ("video", "audio")]
            for packet in container.demux(streams):
                if packet.pts is None or packet.size == 0:
                    continue
                tb = packet.time_base
                if tb is None or tb.denominator != TS_CLOCK or tb.numerator != 1:
                    continue  # MPEG-TS streams are always 1/90000
                if offset is None:
                    # Place this run on the shared clock: now, but never at or before the
                    # last timestamp already sent.
                    now = round((time.monotonic() - self._epoch) * TS_CLOCK)
                    offset = max(now, self._last_out + TS_CLOCK // 10) - packet.pts
                packet.pts += offset
                if packet.dts is not None:
                    packet.dts += offset
                self._last_out = max(self._last_out, packet.pts)
                kind: Kind = "video" if packet.stream.type == "video" else "audio"
                self.loop.call_soon_threadsafe(self._deliver, kind, packet, bool(packet.is_keyframe))
        except (av.FFmpegError, EOFError, OSError) as exc:
            if not self.closed:
                log.info("webrtc run %d: demux ended: %s", run, exc)
        except RuntimeError:  # the loop closed under us at shutdown
            pass
        finally:
            container.close()

    def _deliver(self, kind: Kind, packet: av.Packet, keyframe: bool) -> None:
        self.packets += 1
        try:
            self.on_packet(kind, packet, keyframe)
        except Exception:
            log.exception("webrtc fan-out failed")
