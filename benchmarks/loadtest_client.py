"""Why the load tester has its own HTTP/1.1 client: CPU per request, raw asyncio vs httpx.

Serves a 160 KB body (a 720p LL-HLS part) and a 2 KB body (a delta playlist) from an asyncio
server on 127.0.0.1, then fetches each N times over one keep-alive connection with
flowcast.loadtest.http and with httpx.AsyncClient, and prints requests per CPU-second of the
process (process_time, so the shared machine's other load does not count; the server runs in
the same process, so both figures carry its cost and the ratio understates the difference).

    python -m benchmarks.loadtest_client --requests 2000
"""

from __future__ import annotations

import argparse
import asyncio
import time

import httpx

from flowcast.loadtest.http import Connection


async def serve(body: bytes):  # type: ignore[no-untyped-def]
    head = f"HTTP/1.1 200 OK\r\ncontent-length: {len(body)}\r\ncontent-type: video/iso.segment\r\n\r\n".encode()

    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            while True:
                await r.readuntil(b"\r\n\r\n")
                w.write(head + body)
                await w.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            w.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


async def bench(n: int, size: int) -> dict[str, float]:
    server = await serve(b"\0" * size)
    port = server.sockets[0].getsockname()[1]
    out = {}
    conn = Connection("127.0.0.1", port)
    c0 = time.process_time()
    for _ in range(n):
        await conn.get("/p.m4s", timeout=5)
    out["raw"] = n / (time.process_time() - c0)
    conn.close()
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
        c0 = time.process_time()
        for _ in range(n):
            (await client.get("/p.m4s")).read()
        out["httpx"] = n / (time.process_time() - c0)
    server.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=2000)
    args = ap.parse_args()
    for size in (2_000, 160_000):
        r = asyncio.run(bench(args.requests, size))
        print(f"{size:>7} B body: raw {r['raw']:8.0f} req/CPU-s   httpx {r['httpx']:8.0f} req/CPU-s   ratio {r['raw'] / r['httpx']:.1f}x")


if __name__ == "__main__":
    main()
