"""Redundant origins watch each other: a peer that stops answering /time is ranked last in
the steering manifest, and put back when it answers again."""

from __future__ import annotations

import asyncio

from flowcast.origin.peers import PeerHealth, own_peers, probe
from flowcast.package.steering import pathways


async def _time_server(port: int = 0, status: bytes = b"200 OK") -> asyncio.Server:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 " + status + b"\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        writer.close()

    return await asyncio.start_server(answer, "127.0.0.1", port)


def test_own_peers_leaves_out_this_origin() -> None:
    pws = pathways(["http://127.0.0.1:8080", "http://127.0.0.1:8081", "http://cdn-b.example:8080"], "/live/s/")
    assert [p.id for p in own_peers(pws, "127.0.0.1", 8080)] == ["origin-2", "origin-3"]
    assert [p.id for p in own_peers(pws, "0.0.0.0", 8081)] == ["origin-1", "origin-3"]


def test_a_peer_that_stops_answering_is_down_then_back() -> None:
    async def main() -> None:
        up = await _time_server()
        port = up.sockets[0].getsockname()[1]
        bad = await _time_server(status=b"503 Service Unavailable")
        bad_port = bad.sockets[0].getsockname()[1]
        assert await probe(f"http://127.0.0.1:{port}")
        assert not await probe(f"http://127.0.0.1:{bad_port}")  # answers, but not 200
        changes: list[frozenset[str]] = []
        peers = pathways([f"http://127.0.0.1:{port}", "http://127.0.0.1:9"], "/live/s/")
        health = PeerHealth(peers, changes.append, interval=0.05, fail_after=2)
        health.start()
        await asyncio.sleep(0.4)
        assert changes == [frozenset({"origin-2"})]  # nothing listens on port 9
        up.close()
        await up.wait_closed()
        await asyncio.sleep(0.4)
        assert changes[-1] == frozenset({"origin-1", "origin-2"})
        again = await _time_server(port)
        await asyncio.sleep(0.3)
        assert changes[-1] == frozenset({"origin-2"})
        await health.stop()
        again.close()
        bad.close()

    asyncio.run(main())
