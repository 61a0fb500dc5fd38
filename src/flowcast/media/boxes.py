"""ISO-BMFF boxes (ISO/IEC 14496-12 clause 4.2): read them from bytes, write them to bytes.

Sans-I/O: every function takes bytes and returns objects or bytes. Malformed input raises
BoxError, never IndexError or struct.error, so callers can fuzz and catch one thing.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = [
    "Box",
    "BoxError",
    "ByteReader",
    "box",
    "full_box",
    "full_box_header",
    "iter_boxes",
    "find_box",
    "find_path",
    "read_header",
]

_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_FOURCC_HEADER = struct.Struct(">I4s")


class BoxError(ValueError):
    """Truncated, oversized or otherwise malformed ISO-BMFF data."""


@dataclass(frozen=True, slots=True)
class Box:
    """One box: its four-character type, where it sits and its payload (after the header)."""

    type: str
    offset: int  # of the box header in the buffer it was read from
    size: int  # whole box, header included
    header_size: int
    payload: bytes


def read_header(data: bytes | bytearray | memoryview, offset: int = 0) -> tuple[str, int, int] | None:
    """Return (type, header_size, size) of the box at `offset`, or None if the header is incomplete.

    size 0 ("box extends to the end of the file", 14496-12 4.2.2) is returned as 0; the caller
    decides where the end is. A size smaller than its own header raises BoxError.
    """
    avail = len(data) - offset
    if avail < 8:
        return None
    size, raw_type = _FOURCC_HEADER.unpack_from(data, offset)
    box_type = raw_type.decode("latin-1")
    header = 8
    if size == 1:  # 64-bit largesize follows the type (4.2.2)
        if avail < 16:
            return None
        size = _U64.unpack_from(data, offset + 8)[0]
        header = 16
    if box_type == "uuid":  # extended type: 16 more header bytes (4.2.2)
        header += 16
        if avail < header:
            return None
    if size != 0 and size < header:
        raise BoxError(f"box {box_type!r} at {offset} has size {size} < header {header}")
    return box_type, header, size


def iter_boxes(data: bytes, offset: int = 0, end: int | None = None) -> Iterator[Box]:
    """Yield the boxes laid end to end in data[offset:end]; strict: truncation raises BoxError."""
    stop = len(data) if end is None else end
    if stop > len(data) or offset < 0:
        raise BoxError("box range outside the buffer")
    pos = offset
    view = memoryview(data)[:stop]
    while pos < stop:
        head = read_header(view, pos)
        if head is None:
            raise BoxError(f"truncated box header at {pos}")
        box_type, header, size = head
        if size == 0:
            size = stop - pos
        if pos + size > stop:
            raise BoxError(f"box {box_type!r} at {pos} needs {size} bytes, {stop - pos} left")
        yield Box(box_type, pos, size, header, bytes(view[pos + header : pos + size]))
        pos += size


def find_box(payload: bytes, box_type: str) -> Box | None:
    """First child of type `box_type` among the boxes in `payload`."""
    for child in iter_boxes(payload):
        if child.type == box_type:
            return child
    return None


def find_path(payload: bytes, *path: str) -> Box | None:
    """Descend container boxes by type, e.g. find_path(moov, "trak", "mdia", "mdhd")."""
    current: Box | None = None
    for box_type in path:
        current = find_box(payload if current is None else current.payload, box_type)
        if current is None:
            return None
    return current


def full_box_header(payload: bytes) -> tuple[int, int]:
    """(version, flags) of a FullBox payload (14496-12 4.2.2); its body starts at byte 4."""
    if len(payload) < 4:
        raise BoxError("full box shorter than its version/flags")
    word = _U32.unpack_from(payload, 0)[0]
    return word >> 24, word & 0xFFFFFF


class ByteReader:
    """Big-endian cursor over a payload that raises BoxError instead of struct.error."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes, pos: int = 0) -> None:
        self.data = data
        self.pos = pos

    @property
    def remaining(self) -> int:
        return len(self.data) - self.pos

    def _take(self, n: int) -> int:
        if n < 0 or self.pos + n > len(self.data):
            raise BoxError(f"need {n} bytes at {self.pos}, have {len(self.data) - self.pos}")
        start = self.pos
        self.pos += n
        return start

    def skip(self, n: int) -> None:
        self._take(n)

    def bytes(self, n: int) -> bytes:
        start = self._take(n)
        return self.data[start : start + n]

    def u8(self) -> int:
        return self.data[self._take(1)]

    def u16(self) -> int:
        start = self._take(2)
        return int.from_bytes(self.data[start : start + 2], "big")

    def u24(self) -> int:
        start = self._take(3)
        return int.from_bytes(self.data[start : start + 3], "big")

    def u32(self) -> int:
        start = self._take(4)
        return int.from_bytes(self.data[start : start + 4], "big")

    def i32(self) -> int:
        start = self._take(4)
        return int.from_bytes(self.data[start : start + 4], "big", signed=True)

    def u64(self) -> int:
        start = self._take(8)
        return int.from_bytes(self.data[start : start + 8], "big")


def _fourcc(box_type: str) -> bytes:
    raw = box_type.encode("latin-1")
    if len(raw) != 4:
        raise BoxError(f"box type must be four characters, got {box_type!r}")
    return raw


def box(box_type: str, payload: bytes = b"") -> bytes:
    """Serialise one box; switches to a 64-bit largesize only when 32 bits cannot hold it.

    For "uuid" the payload starts with the 16-byte extended type, which readers take as
    part of the header (4.2.2); a shorter payload would write a box no reader can parse.
    """
    if box_type == "uuid" and len(payload) < 16:
        raise BoxError("a uuid box needs its 16-byte extended type at the start of the payload")
    size = 8 + len(payload)
    if size <= 0xFFFFFFFF:
        return _U32.pack(size) + _fourcc(box_type) + payload
    return _U32.pack(1) + _fourcc(box_type) + _U64.pack(size + 8) + payload


def full_box(box_type: str, version: int, flags: int, payload: bytes = b"") -> bytes:
    """Serialise a FullBox: one byte version and 24-bit flags ahead of the payload (4.2.2)."""
    if not 0 <= version <= 0xFF or not 0 <= flags <= 0xFFFFFF:
        raise BoxError(f"bad full box version/flags {version}/{flags:#x}")
    return box(box_type, _U32.pack(version << 24 | flags) + payload)
