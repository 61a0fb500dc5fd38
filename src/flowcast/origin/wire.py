"""Frames between the origin's main process and its workers (sans-I/O: bytes in, messages out).

A frame is a 4-byte big-endian length and a ``marshal`` payload. The messages are tuples
of plain values (str, bytes, numbers, bool, None, lists, tuples): store journal entries,
relayed requests and their responses, access events. ``marshal`` is fast and cannot run
code when loading, but it trusts its input's shape, so the channel is only ever a
socketpair between a process and the children it started, never a network socket.
"""

from __future__ import annotations

import marshal
import struct
from typing import Any

__all__ = ["FrameError", "FrameReader", "MAX_FRAME", "frame"]

MAX_FRAME = 256 * 1024 * 1024  # a whole segment at a very high bitrate fits many times over
_LEN = struct.Struct(">I")


class FrameError(Exception):
    """A frame that no peer of ours would send (oversized, undecodable)."""


def frame(message: tuple[Any, ...]) -> bytes:
    payload = marshal.dumps(message)
    if len(payload) > MAX_FRAME:
        raise FrameError(f"message of {len(payload)} bytes exceeds {MAX_FRAME}")
    return _LEN.pack(len(payload)) + payload


class FrameReader:
    """Feed bytes as they arrive; get back every message completed so far."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[tuple[Any, ...]]:
        self._buf += data
        out: list[tuple[Any, ...]] = []
        pos = 0
        while len(self._buf) - pos >= _LEN.size:
            (size,) = _LEN.unpack_from(self._buf, pos)
            if size > MAX_FRAME:
                raise FrameError(f"frame of {size} bytes exceeds {MAX_FRAME}")
            if len(self._buf) - pos - _LEN.size < size:
                break
            start = pos + _LEN.size
            try:
                message = marshal.loads(bytes(self._buf[start : start + size]))
            except (EOFError, ValueError, TypeError) as exc:
                raise FrameError(f"undecodable frame: {exc}") from None
            if not isinstance(message, tuple) or not message:
                raise FrameError("a frame holds a non-empty tuple")
            out.append(message)
            pos = start + size
        del self._buf[:pos]
        return out
