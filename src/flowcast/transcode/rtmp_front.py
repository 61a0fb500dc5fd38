"""The public RTMP port: checks app and stream key, then hands the publisher to FFmpeg.

FFmpeg listens on a loopback port (`Source.internal_port`); this front owns the public one.
Per connection: `rtmp.PublishGate` answers handshake/connect/createStream and decides on
the key. Refused: log why and close. Accepted: open an RTMP connection to FFmpeg (our own
handshake), replay the publisher's recorded chunk stream verbatim, then relay. Publisher
-> FFmpeg stays verbatim (so FFmpeg's chunk-stream state matches the publisher's); FFmpeg
-> publisher is re-chunked, minus the replies the gate already gave (connect/createStream
results and the control messages), because the publisher already has those.
"""

from __future__ import annotations

import asyncio
import logging
import socket

from flowcast.transcode import rtmp
from flowcast.transcode.sources import Source

log = logging.getLogger("flowcast.transcode.rtmp")

GATE_TIMEOUT = 10.0  # s for a publisher to get from TCP connect to `publish`
UPSTREAM_CONNECT_TIMEOUT = 5.0  # s: FFmpeg may be restarting between two publishers


def free_loopback_port() -> int:
    """A loopback TCP port nobody listens on now (for FFmpeg behind the front)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RtmpFront:
    def __init__(self, source: Source, *, host: str | None = None, port: int | None = None) -> None:
        if source.kind != "rtmp" or source.internal_port is None or source.rtmp_key is None:
            raise ValueError("RtmpFront needs an rtmp source")
        self.app = source.rtmp_app or "live"
        self.key = source.rtmp_key
        self.internal_port = source.internal_port
        listen = source.listen or ("0.0.0.0", 1935)
        self.host = host or listen[0]
        self.port = port if port is not None else listen[1]
        self._server: asyncio.base_events.Server | None = None
        self.accepted = 0
        self.refused = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("RTMP ingest listening on %s:%d, app %r", self.host, self.port, self.app)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _gate(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    gate: rtmp.PublishGate) -> rtmp.Event | None:
        while True:
            data = await reader.read(65536)
            if not data:
                return None
            for ev in gate.receive(data):
                if isinstance(ev, rtmp.Send):
                    writer.write(ev.data)
                    await writer.drain()
                else:
                    return ev

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        who = f"{peer[0]}:{peer[1]}" if peer else "?"
        gate = rtmp.PublishGate(self.app, self.key)
        try:
            try:
                verdict = await asyncio.wait_for(self._gate(reader, writer, gate), GATE_TIMEOUT)
            except asyncio.TimeoutError:
                verdict = rtmp.Refused(f"no publish within {GATE_TIMEOUT:g} s")
            except (ConnectionError, rtmp.ProtocolError) as exc:
                verdict = rtmp.Refused(f"connection error: {exc}")
            if verdict is None:
                return  # hung up before publishing: a port probe, not worth a warning
            if isinstance(verdict, rtmp.Refused):
                self.refused += 1
                log.warning("RTMP publish from %s refused: %s", who, verdict.reason)
                return
            await self._relay(reader, writer, gate, who)
        finally:
            writer.close()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     gate: rtmp.PublishGate, who: str) -> None:
        up = await self._connect_upstream()
        if up is None:
            self.refused += 1
            log.warning("RTMP publish from %s refused: the encoder is not accepting (busy or restarting)", who)
            return
        up_reader, up_writer = up
        self.accepted += 1
        log.info("RTMP publish from %s accepted on app %r", who, self.app)
        try:
            # our handshake with FFmpeg, then the publisher's own bytes from `connect` on
            up_writer.write(rtmp.handshake_c0c1())
            s0s1s2 = await up_reader.readexactly(1 + 2 * rtmp.HANDSHAKE_SIZE)
            up_writer.write(s0s1s2[1 : 1 + rtmp.HANDSHAKE_SIZE])  # C2 = echo of S1
            up_writer.write(bytes(gate.recorded))
            await up_writer.drain()
            down = asyncio.create_task(self._downstream(up_reader, writer, gate))
            upstream = asyncio.create_task(self._pipe(reader, up_writer))
            done, _ = await asyncio.wait([down, upstream], return_when=asyncio.FIRST_COMPLETED)
            for t in (down, upstream):
                t.cancel()
            errors = [t.exception() for t in done if not t.cancelled() and t.exception()]
            if errors:
                raise errors[0]
            log.info("RTMP publish from %s ended", who)
        except (OSError, asyncio.IncompleteReadError, rtmp.ProtocolError) as exc:
            log.warning("RTMP relay for %s failed: %s", who, exc)
        finally:
            up_writer.close()

    async def _connect_upstream(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + UPSTREAM_CONNECT_TIMEOUT
        while True:
            try:
                return await asyncio.open_connection("127.0.0.1", self.internal_port)
            except OSError:
                if loop.time() > deadline:
                    return None
                await asyncio.sleep(0.2)

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()

    @staticmethod
    async def _downstream(up_reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                          gate: rtmp.PublishGate) -> None:
        chunks = rtmp.ChunkReader()
        out = gate.writer  # continues the chunk size the publisher already knows
        while data := await up_reader.read(65536):
            for msg in chunks.feed(data):
                if msg.type_id in (rtmp.SET_CHUNK_SIZE, rtmp.WINDOW_ACK, rtmp.SET_PEER_BW):
                    continue
                if msg.type_id == rtmp.COMMAND_AMF0:
                    try:
                        name, tid, _ = rtmp.parse_command(msg)
                    except rtmp.ProtocolError:
                        name, tid = "", -1.0  # not ours to judge: pass it on
                    if name in ("_result", "_error") and tid in gate.answered:
                        continue
                writer.write(out.write(msg))
            await writer.drain()
