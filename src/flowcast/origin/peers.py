"""Health of the other redundant origins, for the steering manifest (origin.redundant).

Each origin probes the others' ``/time`` every ``interval`` seconds. After ``fail_after``
failed probes in a row a peer counts as down, and the first good probe brings it back;
on each change the steering manifest this origin serves is re-rendered with the down
pathways ranked last (package.steering.priority_for), so players that reload it every TTL
move off a dead origin, or back to one that recovered, without waiting for an error.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from urllib.parse import urlsplit

from flowcast.package.steering import Pathway

__all__ = ["PeerHealth", "own_peers", "probe"]

log = logging.getLogger(__name__)


async def probe(base: str, timeout: float = 1.0) -> bool:
    """True when ``GET <origin>/time`` answers 200 within ``timeout``."""
    u = urlsplit(base)
    https = u.scheme == "https"
    host, port = u.hostname or "", u.port or (443 if https else 80)
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(
                host, port, ssl=ssl.create_default_context() if https else None
            )
            try:
                writer.write(f"GET /time HTTP/1.1\r\nHost: {u.netloc}\r\nConnection: close\r\n\r\n".encode())
                status = await reader.readline()
            finally:
                writer.close()
    except (OSError, TimeoutError, ssl.SSLError):
        return False
    parts = status.split()
    return len(parts) >= 2 and parts[1] == b"200"


class PeerHealth:
    """Probes `peers` (the other origins' pathways) and reports the set that is down."""

    def __init__(
        self,
        peers: tuple[Pathway, ...],
        on_change: Callable[[frozenset[str]], None],
        *,
        interval: float = 1.0,
        fail_after: int = 2,
    ) -> None:
        self.peers = peers
        self.on_change = on_change
        self.interval = interval
        self.fail_after = fail_after
        self.down: frozenset[str] = frozenset()
        self._failures = {p.id: 0 for p in peers}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.peers and self._task is None:
            self._task = asyncio.create_task(self._run(), name="origin peer health")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def _run(self) -> None:
        while True:
            results = await asyncio.gather(*(probe(_origin_of(p)) for p in self.peers))
            for p, ok in zip(self.peers, results):
                self._failures[p.id] = 0 if ok else self._failures[p.id] + 1
            down = frozenset(p.id for p in self.peers if self._failures[p.id] >= self.fail_after)
            if down != self.down:
                for pid in down - self.down:
                    log.warning("redundant origin %s is down: steering players away from it", pid)
                for pid in self.down - down:
                    log.info("redundant origin %s is back", pid)
                self.down = down
                self.on_change(down)
            await asyncio.sleep(self.interval)


def own_peers(pathways: tuple[Pathway, ...], host: str, port: int) -> tuple[Pathway, ...]:
    """The pathways that are not this origin (the one listening on host:port)."""
    local = {host, "127.0.0.1", "localhost", "::1", "0.0.0.0", "::"} if host in ("0.0.0.0", "::") else {host}
    if host in ("127.0.0.1", "localhost", "::1"):
        local |= {"127.0.0.1", "localhost", "::1"}

    def is_self(p: Pathway) -> bool:
        u = urlsplit(p.base)
        return (u.port or (443 if u.scheme == "https" else 80)) == port and (u.hostname or "") in local

    return tuple(p for p in pathways if not is_self(p))


def _origin_of(p: Pathway) -> str:
    u = urlsplit(p.base)
    return f"{u.scheme}://{u.netloc}"
