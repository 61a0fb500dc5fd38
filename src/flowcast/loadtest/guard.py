"""Refuse, before anything starts, runs this machine cannot do honestly or must not do.

- Targets: only http://127.0.0.1 (or `localhost`, which is connected as 127.0.0.1). The load
  generator never resolves names and never sends a byte anywhere else.
- Size: at most MAX_VIEWERS viewers, and at most VIEWERS_PER_CORE per CPU core (the generator
  shares the machine with the origin and FFmpeg).
- Bandwidth: viewers x the most one viewer can pull (the profile's cap, or the top rendition
  on loopback) must stay under LOOPBACK_SHARE of the loopback throughput measured now by
  `measure_loopback` (one Python reader, as the viewers are), times the worker count.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

MAX_VIEWERS = 1000
VIEWERS_PER_CORE = 500
MAX_DURATION_S = 3600.0
LOOPBACK_SHARE = 0.5
PROTOCOLS = ("ll-hls", "hls", "ll-dash")
# Addresses of the network namespaces `netns.py` creates (veth pairs); netns refuses to use
# it when anything else on the host already does, so an address here is always ours.
NETNS_SUBNET = ipaddress.ip_network("10.231.0.0/16")


class LoadTestRefused(ValueError):
    """The run was refused before it started; the message says why."""


@dataclass(frozen=True, slots=True)
class Target:
    host: str  # always "127.0.0.1"
    port: int
    path: str


def loopback_only(url: str) -> Target:
    u = urlsplit(url)
    if u.scheme != "http":
        raise LoadTestRefused(f"target {url!r}: only plain http:// to 127.0.0.1 is supported")
    host = (u.hostname or "").lower()
    if host not in ("127.0.0.1", "localhost"):
        raise LoadTestRefused(
            f"target {url!r}: refusing to send load to {host or 'no host'!r}; the load tester only targets 127.0.0.1"
        )
    if u.username or u.password:
        raise LoadTestRefused("target: credentials in the URL are not accepted")
    port = u.port or 80
    path = (u.path or "/") + (f"?{u.query}" if u.query else "")
    return Target("127.0.0.1", port, path)


def check_viewer_host(host: str) -> str:
    """Where a viewer may connect: 127.0.0.1 (`localhost` is taken as it), or the host side
    of one of our namespaces' veth pairs. Anything else is refused, also when a manifest
    announces it (a pathway or BaseURL elsewhere)."""
    host = host.lower()
    if host in ("127.0.0.1", "localhost"):
        return "127.0.0.1"
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        addr = None
    if addr is not None and addr in NETNS_SUBNET:
        return str(addr)
    raise LoadTestRefused(f"refusing to send load to {host!r}: only 127.0.0.1 and flowcast's own namespaces")


def check_size(viewers: int, duration: float) -> None:
    if not isinstance(viewers, int) or viewers < 1:
        raise LoadTestRefused(f"viewers must be a positive integer, got {viewers!r}")
    cores = os.cpu_count() or 1
    limit = min(MAX_VIEWERS, VIEWERS_PER_CORE * cores)
    if viewers > limit:
        raise LoadTestRefused(
            f"{viewers} viewers is more than this machine can run honestly "
            f"(limit {limit}: {VIEWERS_PER_CORE} per core x {cores} cores, at most {MAX_VIEWERS})"
        )
    if not (1.0 <= duration <= MAX_DURATION_S):
        raise LoadTestRefused(f"duration must be within 1..{MAX_DURATION_S:.0f} s, got {duration}")


def measure_loopback(seconds: float = 0.3) -> float:
    """Bits/s one asyncio reader pulls over a 127.0.0.1 TCP connection (what a worker can do)."""

    async def run() -> float:
        blob = b"\0" * (256 * 1024)
        stop = time.monotonic() + seconds

        async def serve(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            try:
                while time.monotonic() < stop:
                    w.write(blob)
                    await w.drain()
            except ConnectionError:
                pass
            finally:
                w.close()

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        r, w = await asyncio.open_connection("127.0.0.1", port)
        t0, n = time.monotonic(), 0
        while True:
            data = await r.read(256 * 1024)
            if not data:
                break
            n += len(data)
        elapsed = time.monotonic() - t0
        w.close()
        server.close()
        return n * 8 / max(elapsed, 1e-6)

    return asyncio.run(run())


def check_bandwidth(viewers: int, per_viewer_bps: float, loopback_bps: float, workers: int) -> None:
    need = viewers * per_viewer_bps
    have = LOOPBACK_SHARE * loopback_bps * workers
    if need > have:
        raise LoadTestRefused(
            f"{viewers} viewers x {per_viewer_bps / 1e6:.1f} Mbps = {need / 1e9:.2f} Gbps is beyond what the "
            f"generator can read here ({LOOPBACK_SHARE:.0%} of {loopback_bps / 1e9:.2f} Gbps measured on "
            f"loopback x {workers} workers = {have / 1e9:.2f} Gbps)"
        )
