"""Protection System Specific Header boxes (ISO/IEC 23001-7 clause 8.1): write and parse.

Sans-I/O: bytes in, bytes or PsshBox out. Version 1 lists the KIDs in the box itself, which is
what the Common (W3C ClearKey) system requires ("pssh version 1 with KIDs, DataSize 0").
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from uuid import UUID

from flowcast.media.boxes import BoxError, ByteReader, full_box, full_box_header, iter_boxes

__all__ = [
    "COMMON_SYSTEM_ID",
    "FAIRPLAY_SYSTEM_ID",
    "PLAYREADY_SYSTEM_ID",
    "WIDEVINE_SYSTEM_ID",
    "PsshBox",
    "clearkey_pssh",
    "find_pssh",
    "parse_pssh",
    "pssh_box",
]

COMMON_SYSTEM_ID = UUID("1077efec-c0b2-4d02-ace3-3c1e52e2fb4b")  # W3C Common PSSH / ClearKey
WIDEVINE_SYSTEM_ID = UUID("edef8ba9-79d6-4ace-a3c8-27dcd51d21ed")
PLAYREADY_SYSTEM_ID = UUID("9a04f079-9840-4286-ab92-e65be0885f95")
FAIRPLAY_SYSTEM_ID = UUID("94ce86fb-07ff-4f43-adb8-93d2fa968ca2")


@dataclass(frozen=True, slots=True)
class PsshBox:
    """A parsed pssh; `to_bytes()` writes it back unchanged."""

    system_id: UUID
    kids: tuple[bytes, ...] = ()
    data: bytes = b""
    version: int = 0

    def to_bytes(self) -> bytes:
        return pssh_box(self.system_id, self.kids, self.data, self.version)


def _system_bytes(system_id: UUID | bytes) -> bytes:
    raw = system_id.bytes if isinstance(system_id, UUID) else bytes(system_id)
    if len(raw) != 16:
        raise BoxError(f"SystemID must be 16 bytes, got {len(raw)}")
    return raw


def pssh_box(
    system_id: UUID | bytes,
    kids: Sequence[bytes] = (),
    data: bytes = b"",
    version: int | None = None,
) -> bytes:
    """One pssh box. Version defaults to 1 when KIDs are given, else 0 (23001-7 8.1.2)."""
    if version is None:
        version = 1 if kids else 0
    if version not in (0, 1):
        raise BoxError(f"pssh version {version} unsupported")
    if kids and version == 0:
        raise BoxError("pssh version 0 cannot carry KIDs")
    body = _system_bytes(system_id)
    if version == 1:
        for kid in kids:
            if len(kid) != 16:
                raise BoxError(f"KID must be 16 bytes, got {len(kid)}")
        body += struct.pack(">I", len(kids)) + b"".join(kids)
    body += struct.pack(">I", len(data)) + data
    return full_box("pssh", version, 0, body)


def clearkey_pssh(kids: Sequence[bytes]) -> bytes:
    """The Common-system pssh W3C ClearKey players look for: version 1, KIDs, no data."""
    return pssh_box(COMMON_SYSTEM_ID, kids, b"", 1)


def parse_pssh(payload: bytes) -> PsshBox:
    """Parse a pssh *payload* (the bytes after the 8-byte box header)."""
    version, _ = full_box_header(payload)
    if version not in (0, 1):
        raise BoxError(f"pssh version {version} unsupported")
    r = ByteReader(payload, 4)
    system_id = UUID(bytes=r.bytes(16))
    kids: tuple[bytes, ...] = ()
    if version == 1:
        count = r.u32()
        if count * 16 > r.remaining:
            raise BoxError(f"pssh claims {count} KIDs, payload too short")
        kids = tuple(r.bytes(16) for _ in range(count))
    size = r.u32()
    data = r.bytes(size)
    if r.remaining:
        raise BoxError(f"{r.remaining} trailing bytes after pssh data")
    return PsshBox(system_id, kids, data, version)


def find_pssh(container_payload: bytes) -> list[PsshBox]:
    """Every pssh directly inside a moov or moof payload."""
    return [parse_pssh(b.payload) for b in iter_boxes(container_payload) if b.type == "pssh"]
