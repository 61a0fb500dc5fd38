"""Userspace network impairment: an asyncio TCP relay on 127.0.0.1 (the kernel has no netem).
Namespace runs (netns.py) apply loss, rates, delay and jitter on the kernel's path instead
and keep the relay only for connection resets (netns.relay_part).

One `Relay` is one viewer's access link: it listens on an ephemeral loopback port, and every
connection through it shares one token bucket per direction (the link's capacity), a one-way
delay of RTT/2 with uniform jitter (order kept per connection, as TCP delivers in order), a
share of connections reset at accept, and per-packet loss turned into the delay a fast
retransmit costs. It only ever connects to 127.0.0.1 (or, in a namespace run, to the host
side of the namespace's veth pair).
"""

from __future__ import annotations

import asyncio
import random
import socket
import struct
import time
from contextlib import suppress

from flowcast.loadtest.profiles import NetworkProfile

PACKET = 1448  # TCP payload of a 1500-byte Ethernet frame
READ = 16 * 1024
MIN_RTO_S = 0.2  # Linux TCP_RTO_MIN


class TokenBucket:
    def __init__(self, rate_bps: float | None, burst_bytes: int = 16 * 1024) -> None:
        self.rate = rate_bps / 8 if rate_bps else None  # bytes/s
        self.burst = max(burst_bytes, int((self.rate or 0) * 0.01))
        self.tokens = float(self.burst)
        self.t = time.monotonic()

    def reserve(self, n: int) -> float:
        """Take n bytes; return how long to wait before they may leave (the bucket may go negative)."""
        if self.rate is None:
            return 0.0
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.t) * self.rate)
        self.t = now
        self.tokens -= n
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate


class Relay:
    def __init__(self, profile: NetworkProfile, target_port: int, *, seed: int | None = None, host: str = "127.0.0.1") -> None:
        self.profile = profile
        self.target_port = target_port
        # 127.0.0.1, or (inside one of our namespaces) the host side of its veth pair:
        # the worker passes only addresses guard.check_viewer_host accepted.
        self.target_host = host
        self.rng = random.Random(seed)
        self.down = TokenBucket(profile.down_kbps * 1000 if profile.down_kbps else None)
        self.up = TokenBucket(profile.up_kbps * 1000 if profile.up_kbps else None)
        self.port = 0
        self._server: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.dropped_connections = 0
        self.lost_packets = 0

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for t in list(self._tasks):
            t.cancel()
        for t in list(self._tasks):
            with suppress(BaseException):
                await t

    async def _accept(self, cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            if self.rng.random() < self.profile.connection_drop:
                self.dropped_connections += 1
                sock = cw.get_extra_info("socket")
                if sock is not None:  # RST, as a middlebox or a lost SYN-ACK retry budget would
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                cw.close()
                return
            await asyncio.sleep(self._one_way())  # SYN / SYN-ACK take a round trip
            sr, sw = await asyncio.open_connection(self.target_host, self.target_port)
            try:
                await asyncio.gather(self._pump(cr, sw, self.up), self._pump(sr, cw, self.down))
            finally:
                sw.close()
        except (ConnectionError, OSError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            # close() cancels live connections; end the handler quietly (asyncio's stream
            # callback would otherwise log the cancellation as an error)
            pass
        finally:
            cw.close()
            self._tasks.discard(task)

    def _one_way(self) -> float:
        p = self.profile
        j = self.rng.uniform(-p.jitter_ms, p.jitter_ms) if p.jitter_ms else 0.0
        return max(0.0, (p.rtt_ms / 2 + j) / 1000.0)

    async def _pump(self, r: asyncio.StreamReader, w: asyncio.StreamWriter, bucket: TokenBucket) -> None:
        """Copy r -> w, each read leaving at the link rate and arriving one-way-delay later."""
        queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue(maxsize=64)
        loss = self.profile.packet_loss
        rtt = self.profile.rtt_ms / 1000.0

        async def deliver() -> None:
            while True:
                item = await queue.get()
                if item is None:
                    break
                due, data = item
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                w.write(data)
                await w.drain()
            if w.can_write_eof():
                with suppress(OSError):
                    w.write_eof()

        writer = asyncio.ensure_future(deliver())
        last_due = 0.0
        try:
            while True:
                data = await r.read(READ)
                if not data:
                    break
                wait = bucket.reserve(len(data))
                if wait > 0:
                    await asyncio.sleep(wait)  # serialisation at the link rate
                due = time.monotonic() + self._one_way()
                if loss:
                    packets = -(-len(data) // PACKET)
                    lost = sum(1 for _ in range(packets) if self.rng.random() < loss)
                    if lost:
                        self.lost_packets += lost
                        due += lost * max(rtt, MIN_RTO_S)
                due = max(due, last_due)  # TCP delivers in order
                last_due = due
                if writer.done():
                    break  # the far side is gone
                await queue.put((due, data))
            if not writer.done():
                await queue.put(None)
            await writer
        finally:
            if not writer.done():
                writer.cancel()
            with suppress(BaseException):
                await writer  # also retrieves a writer's exception (reset by the peer)
