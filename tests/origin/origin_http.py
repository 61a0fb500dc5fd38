"""Raw HTTP/1.1 over a socket and playlist fixtures for the origin tests."""

from __future__ import annotations

import asyncio


# -- raw HTTP/1.1 over a socket, for what httpx hides (chunk boundaries, odd paths) --------


async def raw_open(port: int, target: str, *, method: str = "GET", headers: str = "") -> tuple[
    asyncio.StreamReader, asyncio.StreamWriter
]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{headers}\r\n".encode())
    await writer.drain()
    return reader, writer


async def read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    raw = await reader.readuntil(b"\r\n\r\n")
    lines = raw.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        if line:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
    return status, headers


async def read_chunk(reader: asyncio.StreamReader) -> bytes:
    """One HTTP/1.1 chunk's payload (b"" for the last-chunk)."""
    size_line = await reader.readuntil(b"\r\n")
    size = int(size_line.split(b";")[0], 16)
    data = await reader.readexactly(size) if size else b""
    await reader.readuntil(b"\r\n")
    return data


async def raw_get(port: int, target: str, *, method: str = "GET", headers: str = "") -> tuple[int, dict[str, str], bytes]:
    reader, writer = await raw_open(port, target, method=method, headers=headers)
    try:
        status, hdrs = await read_head(reader)
        if method == "HEAD":
            body = b""
        elif hdrs.get("transfer-encoding") == "chunked":
            body = b""
            while chunk := await read_chunk(reader):
                body += chunk
        else:
            body = await reader.readexactly(int(hdrs.get("content-length", "0")))
        return status, hdrs, body
    finally:
        writer.close()


def playlist_text(msn: int, part: int, *, ended: bool = False, delta: bool = False) -> bytes:
    """A stand-in media playlist whose text says where it is (the origin never parses it)."""
    kind = "DELTA" if delta else "FULL"
    end = "#EXT-X-ENDLIST\n" if ended else ""
    return f"#EXTM3U\n#EXT-X-TARGETDURATION:1\n# {kind} msn={msn} part={part}\n{end}".encode()


def publish(store, path: str, msn: int, part: int, *, td: float = 1.0, pt: float | None = 0.25,
            ended: bool = False, with_delta: bool = True) -> None:
    store.put_playlist(
        path,
        full=playlist_text(msn, part, ended=ended),
        delta=playlist_text(msn, part, ended=ended, delta=True) if with_delta else None,
        msn=msn,
        part=part,
        target_duration=td,
        part_target=pt,
        ended=ended,
    )
