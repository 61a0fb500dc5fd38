"""Sans-I/O RTMP: handshake, chunk stream, AMF0, and the publish gate that checks the stream key.

Only what a publish front needs (Adobe RTMP specification 1.0, sections 5.2 handshake,
5.3 chunking, 5.4 protocol control, 7.2 commands; AMF0 specification). Bytes in, events
and bytes out; `transcode.rtmp_front` does the sockets.

Why it exists: FFmpeg's RTMP listener (libavformat/rtmpproto.c) logs a mismatching app
("App field don't match up") or stream name ("Unexpected stream X, expecting Y") as a
warning and accepts the publish anyway, so it cannot refuse a wrong stream key.
"""

from __future__ import annotations

import hmac
import os
import struct
from dataclasses import dataclass, field
from typing import Any

HANDSHAKE_SIZE = 1536
RTMP_VERSION = 3
DEFAULT_CHUNK_SIZE = 128
OUR_CHUNK_SIZE = 4096
WINDOW_ACK_SIZE = 2_500_000

# message type ids (5.4, 7.1)
SET_CHUNK_SIZE = 1
ABORT = 2
ACK = 3
USER_CONTROL = 4
WINDOW_ACK = 5
SET_PEER_BW = 6
AUDIO = 8
VIDEO = 9
DATA_AMF0 = 18
COMMAND_AMF0 = 20

CSID_CONTROL = 2
CSID_COMMAND = 3


class ProtocolError(Exception):
    """The peer sent bytes that are not RTMP as we understand it."""


# ---- AMF0 --------------------------------------------------------------------------------


class _Undefined:
    def __repr__(self) -> str:
        return "UNDEFINED"


UNDEFINED = _Undefined()


@dataclass
class EcmaArray:
    items: dict[str, Any] = field(default_factory=dict)


def amf0_encode(*values: Any) -> bytes:
    out = bytearray()
    for v in values:
        _enc(v, out)
    return bytes(out)


def _enc_key(key: str, out: bytearray) -> None:
    raw = key.encode()
    out += struct.pack(">H", len(raw)) + raw


def _enc(v: Any, out: bytearray) -> None:
    if v is None:
        out.append(0x05)
    elif v is UNDEFINED:
        out.append(0x06)
    elif isinstance(v, bool):
        out += bytes((0x01, 1 if v else 0))
    elif isinstance(v, (int, float)):
        out += b"\x00" + struct.pack(">d", float(v))
    elif isinstance(v, str):
        raw = v.encode()
        if len(raw) > 0xFFFF:
            out += b"\x0c" + struct.pack(">I", len(raw)) + raw
        else:
            out += b"\x02" + struct.pack(">H", len(raw)) + raw
    elif isinstance(v, EcmaArray):
        out += b"\x08" + struct.pack(">I", len(v.items))
        for k, item in v.items.items():
            _enc_key(k, out)
            _enc(item, out)
        out += b"\x00\x00\x09"
    elif isinstance(v, dict):
        out.append(0x03)
        for k, item in v.items():
            _enc_key(k, out)
            _enc(item, out)
        out += b"\x00\x00\x09"
    elif isinstance(v, (list, tuple)):
        out += b"\x0a" + struct.pack(">I", len(v))
        for item in v:
            _enc(item, out)
    else:
        raise TypeError(f"cannot encode {type(v).__name__} as AMF0")


def amf0_decode(data: bytes) -> list[Any]:
    """All values in `data`; ProtocolError on truncated or unknown markers."""
    values = []
    pos = 0
    while pos < len(data):
        v, pos = _dec(data, pos, 0)
        values.append(v)
    return values


def _need(data: bytes, pos: int, n: int) -> None:
    if pos + n > len(data):
        raise ProtocolError("truncated AMF0 value")


def _dec_props(data: bytes, pos: int, depth: int) -> tuple[dict[str, Any], int]:
    props: dict[str, Any] = {}
    while True:
        _need(data, pos, 3)
        (klen,) = struct.unpack_from(">H", data, pos)
        if klen == 0 and data[pos + 2] == 0x09:
            return props, pos + 3
        _need(data, pos + 2, klen)
        key = data[pos + 2 : pos + 2 + klen].decode(errors="replace")
        props[key], pos = _dec(data, pos + 2 + klen, depth + 1)


def _dec(data: bytes, pos: int, depth: int) -> tuple[Any, int]:
    if depth > 32:
        raise ProtocolError("AMF0 nesting too deep")
    _need(data, pos, 1)
    marker = data[pos]
    pos += 1
    if marker == 0x00:
        _need(data, pos, 8)
        return struct.unpack_from(">d", data, pos)[0], pos + 8
    if marker == 0x01:
        _need(data, pos, 1)
        return data[pos] != 0, pos + 1
    if marker in (0x02, 0x0C):
        width = 2 if marker == 0x02 else 4
        _need(data, pos, width)
        (n,) = struct.unpack_from(">H" if width == 2 else ">I", data, pos)
        pos += width
        _need(data, pos, n)
        return data[pos : pos + n].decode(errors="replace"), pos + n
    if marker == 0x03:
        return _dec_props(data, pos, depth)
    if marker == 0x05:
        return None, pos
    if marker == 0x06:
        return UNDEFINED, pos
    if marker == 0x08:
        _need(data, pos, 4)
        props, pos = _dec_props(data, pos + 4, depth)
        return EcmaArray(props), pos
    if marker == 0x0A:
        _need(data, pos, 4)
        (n,) = struct.unpack_from(">I", data, pos)
        pos += 4
        items = []
        for _ in range(n):
            item, pos = _dec(data, pos, depth + 1)
            items.append(item)
        return items, pos
    if marker == 0x0B:
        _need(data, pos, 10)
        return struct.unpack_from(">d", data, pos)[0], pos + 10
    raise ProtocolError(f"unsupported AMF0 marker 0x{marker:02x}")


# ---- chunk stream ------------------------------------------------------------------------


@dataclass(frozen=True)
class Message:
    type_id: int
    payload: bytes
    stream_id: int = 0
    timestamp: int = 0
    csid: int = CSID_COMMAND


@dataclass
class _ChunkState:
    timestamp: int = 0
    delta: int = 0
    length: int = 0
    type_id: int = 0
    stream_id: int = 0
    extended: bool = False
    buf: bytearray = field(default_factory=bytearray)


class ChunkReader:
    """Reassembles messages from one direction of a chunk stream; follows Set Chunk Size."""

    MAX_MESSAGE = 16 * 1024 * 1024

    def __init__(self) -> None:
        self.chunk_size = DEFAULT_CHUNK_SIZE
        self._buf = bytearray()
        self._streams: dict[int, _ChunkState] = {}

    def feed(self, data: bytes) -> list[Message]:
        self._buf += data
        out = []
        while (msg := self._one()) is not False:
            if msg is not None:
                out.append(msg)
        return out

    def _one(self) -> Message | None | bool:
        """False: need more bytes; None: consumed a chunk that does not end a message."""
        b = self._buf
        if not b:
            return False
        fmt, csid, pos = b[0] >> 6, b[0] & 0x3F, 1
        if csid == 0:
            if len(b) < 2:
                return False
            csid, pos = 64 + b[1], 2
        elif csid == 1:
            if len(b) < 3:
                return False
            csid, pos = 64 + b[1] + 256 * b[2], 3
        header = (11, 7, 3, 0)[fmt]
        hstart = pos
        if len(b) < pos + header:
            return False
        st = self._streams.get(csid)
        if st is None:
            if fmt != 0:
                raise ProtocolError(f"chunk stream {csid} starts with a type {fmt} header")
            st = _ChunkState()
        new_message = not st.buf
        ts_field = 0
        if fmt <= 2:
            ts_field = int.from_bytes(b[pos : pos + 3], "big")
        if fmt <= 1:
            length = int.from_bytes(b[pos + 3 : pos + 6], "big")
            type_id = b[pos + 6]
        pos += header
        extended = ts_field == 0xFFFFFF if fmt <= 2 else st.extended
        if extended:
            if len(b) < pos + 4:
                return False
            ts_field = int.from_bytes(b[pos : pos + 4], "big")
            pos += 4
        if fmt <= 1:
            if length > self.MAX_MESSAGE:
                raise ProtocolError(f"message of {length} bytes")
            if not new_message and length != st.length:
                raise ProtocolError("new message header in the middle of a message")
            st.length, st.type_id = length, type_id
        remaining = st.length - len(st.buf)
        take = min(self.chunk_size, remaining)
        if len(b) < pos + take:
            return False
        # the chunk is complete: commit its header
        if fmt == 0:
            st.stream_id = int.from_bytes(b[hstart + 7 : hstart + 11], "little")
            st.timestamp, st.delta = ts_field, 0
        elif new_message and fmt in (1, 2):
            st.delta = ts_field
            st.timestamp += ts_field
        elif new_message and fmt == 3:
            st.timestamp += st.delta
        st.extended = extended
        st.buf += b[pos : pos + take]
        del b[: pos + take]
        self._streams[csid] = st
        if len(st.buf) < st.length:
            return None
        msg = Message(st.type_id, bytes(st.buf), st.stream_id, st.timestamp & 0xFFFFFFFF, csid)
        st.buf = bytearray()
        if msg.type_id == SET_CHUNK_SIZE and len(msg.payload) >= 4:
            size = int.from_bytes(msg.payload[:4], "big") & 0x7FFFFFFF
            if size < 1:
                raise ProtocolError("chunk size 0")
            self.chunk_size = size
        return msg


class ChunkWriter:
    """Serialises messages with a full (type 0) header each, at our chunk size."""

    def __init__(self, chunk_size: int = DEFAULT_CHUNK_SIZE) -> None:
        self.chunk_size = chunk_size

    @staticmethod
    def _basic(fmt: int, csid: int) -> bytes:
        if csid < 64:
            return bytes(((fmt << 6) | csid,))
        if csid < 320:
            return bytes((fmt << 6, csid - 64))
        return bytes(((fmt << 6) | 1, (csid - 64) & 0xFF, (csid - 64) >> 8))

    def write(self, msg: Message) -> bytes:
        ts = msg.timestamp & 0xFFFFFFFF
        extended = ts >= 0xFFFFFF
        ext = struct.pack(">I", ts) if extended else b""
        out = bytearray(self._basic(0, msg.csid))
        out += (0xFFFFFF if extended else ts).to_bytes(3, "big")
        out += len(msg.payload).to_bytes(3, "big") + bytes((msg.type_id,))
        out += struct.pack("<I", msg.stream_id) + ext
        for i in range(0, max(1, len(msg.payload)), self.chunk_size):
            if i:
                out += self._basic(3, msg.csid) + ext
            out += msg.payload[i : i + self.chunk_size]
        if msg.type_id == SET_CHUNK_SIZE:
            self.chunk_size = int.from_bytes(msg.payload[:4], "big")
        return bytes(out)


def command(name: str, transaction_id: float, *args: Any, stream_id: int = 0) -> Message:
    return Message(COMMAND_AMF0, amf0_encode(name, transaction_id, *args), stream_id=stream_id)


def parse_command(msg: Message) -> tuple[str, float, list[Any]]:
    """(name, transaction id, arguments); FFmpeg's onFCPublish carries no transaction id."""
    values = amf0_decode(msg.payload)
    if not values or not isinstance(values[0], str):
        raise ProtocolError("command message without a name")
    tid = values[1] if len(values) > 1 and isinstance(values[1], float) else 0.0
    return values[0], tid, values[2:]


def control(type_id: int, payload: bytes) -> Message:
    return Message(type_id, payload, csid=CSID_CONTROL)


# ---- handshake (5.2): plain, no digest; FFmpeg's and OBS's publishers accept it ------------


def handshake_c0c1() -> bytes:
    return bytes((RTMP_VERSION,)) + b"\0" * 8 + os.urandom(HANDSHAKE_SIZE - 8)


def handshake_s0s1s2(c1: bytes) -> bytes:
    """Server reply to C0+C1: S0, S1 (our random), S2 (echo of C1)."""
    s1 = b"\0" * 8 + os.urandom(HANDSHAKE_SIZE - 8)
    return bytes((RTMP_VERSION,)) + s1 + c1


# ---- the publish gate ----------------------------------------------------------------------


@dataclass(frozen=True)
class Send:
    data: bytes


@dataclass(frozen=True)
class Accepted:
    app: str
    stream_key: str


@dataclass(frozen=True)
class Refused:
    reason: str


Event = Send | Accepted | Refused


class PublishGate:
    """Server side of an RTMP publish, up to the moment the stream key is known.

    Feed it every byte from the publisher. It answers the handshake, `connect` and
    `createStream` itself, and emits `Accepted` when `publish` (or an earlier
    `releaseStream`/`FCPublish`) names the right key in the right app, or `Refused` with a
    reason at the first mismatch. `recorded` is the publisher's chunk stream after the
    handshake, verbatim, for replay to the real server; `answered` are the transaction ids
    we replied to, whose replies from the real server must not reach the publisher again.
    """

    def __init__(self, app: str, stream_key: str) -> None:
        self.app = app
        self.stream_key = stream_key
        self.recorded = bytearray()
        self.answered: set[float] = set()
        self.writer = ChunkWriter()
        self._reader = ChunkReader()
        self._pending = bytearray()
        self._state = "c0c1"
        self._client_app: str | None = None
        self.done = False

    def receive(self, data: bytes) -> list[Event]:
        if self.done:
            self.recorded += data
            return []
        self._pending += data
        events: list[Event] = []
        if self._state == "c0c1" and len(self._pending) >= 1 + HANDSHAKE_SIZE:
            if self._pending[0] != RTMP_VERSION:
                self.done = True
                return [Refused(f"not RTMP (version byte {self._pending[0]})")]
            c1 = bytes(self._pending[1 : 1 + HANDSHAKE_SIZE])
            del self._pending[: 1 + HANDSHAKE_SIZE]
            events.append(Send(handshake_s0s1s2(c1)))
            self._state = "c2"
        if self._state == "c2" and len(self._pending) >= HANDSHAKE_SIZE:
            del self._pending[:HANDSHAKE_SIZE]
            self._state = "chunks"
        if self._state == "chunks" and self._pending:
            chunk = bytes(self._pending)
            self._pending.clear()
            self.recorded += chunk
            try:
                for msg in self._reader.feed(chunk):
                    events += self._on_message(msg)
                    if self.done:
                        break
            except ProtocolError as exc:
                self.done = True
                events.append(Refused(f"protocol error: {exc}"))
        return events

    def _check_key(self, name: Any) -> Event | None:
        key = str(name).split("?", 1)[0]  # some encoders append ?params to the key
        if self._client_app != self.app:
            return Refused(f"wrong application {self._client_app!r} (expected {self.app!r})")
        if not hmac.compare_digest(key.encode(), self.stream_key.encode()):
            return Refused("wrong stream key")
        return Accepted(self.app, key)

    def _on_message(self, msg: Message) -> list[Event]:
        if msg.type_id != COMMAND_AMF0:
            return []
        name, tid, args = parse_command(msg)
        w = self.writer
        if name == "connect":
            obj = args[0] if args and isinstance(args[0], dict) else {}
            self._client_app = str(obj.get("app", "")).strip("/")
            self.answered.add(tid)
            if self._client_app != self.app:
                self.done = True
                reject = command("_error", tid, None, {
                    "level": "error", "code": "NetConnection.Connect.Rejected",
                    "description": "unknown application"})
                return [Send(w.write(reject)),
                        Refused(f"wrong application {self._client_app!r} (expected {self.app!r})")]
            out = w.write(control(WINDOW_ACK, struct.pack(">I", WINDOW_ACK_SIZE)))
            out += w.write(control(SET_PEER_BW, struct.pack(">IB", WINDOW_ACK_SIZE, 2)))
            out += w.write(control(SET_CHUNK_SIZE, struct.pack(">I", OUR_CHUNK_SIZE)))
            out += w.write(command(
                "_result", tid,
                {"fmsVer": "FMS/3,0,1,123", "capabilities": 31.0},
                {"level": "status", "code": "NetConnection.Connect.Success",
                 "description": "Connection succeeded.", "objectEncoding": 0.0},
            ))
            return [Send(out)]
        if name == "createStream":
            self.answered.add(tid)
            return [Send(w.write(command("_result", tid, None, 1.0)))]
        if name in ("releaseStream", "FCPublish", "publish"):
            if len(args) < 2 or not isinstance(args[1], str):
                self.done = True
                return [Refused(f"{name} without a stream name")]
            verdict = self._check_key(args[1])
            if isinstance(verdict, Refused):
                self.done = True
                status = command("onStatus", 0.0, None, {
                    "level": "error", "code": "NetStream.Publish.BadName",
                    "description": verdict.reason}, stream_id=msg.stream_id)
                return [Send(w.write(status)), verdict]
            if name == "publish":
                self.done = True
                return [verdict]
        return []
