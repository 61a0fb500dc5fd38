"""One load-generator process: an event loop running its share of the viewers.

Each viewer joins and leaves at the offsets the ramp gives it; when `link` (what of the
profile the userspace relay applies) impairs anything, each gets its own relay (its access
link). In a namespace run the kernel path applies the rest (netns.relay_part). The worker also measures its own event-loop lag: a
lagging loop delays every viewer's reads and would be charged to the origin otherwise.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from flowcast.loadtest import guard
from flowcast.loadtest.dash_client import DashViewer
from flowcast.loadtest.hls_client import HlsViewer, PlainHlsViewer
from flowcast.loadtest.http import Meter
from flowcast.loadtest.profiles import NetworkProfile
from flowcast.loadtest.relay import Relay
from flowcast.loadtest.viewer import Origin, ViewerBase

CLIENTS: dict[str, type[ViewerBase]] = {"ll-hls": HlsViewer, "hls": PlainHlsViewer, "ll-dash": DashViewer}
LAG_TICK_S = 0.1


@dataclass(frozen=True)
class WorkerPlan:
    host: str  # 127.0.0.1, or the host side of our namespace's veth pair
    netns: str | None  # run the viewers inside this network namespace (netns.py made it)
    port: int
    path: str
    protocol: str
    profile: str  # the run's profile, as the viewer rows name it
    link: NetworkProfile  # what of it the relay applies ("loopback": no relay)
    start_wall: float  # wall clock of the run's t = 0
    windows: tuple[tuple[int, float, float], ...]  # (viewer index, join s, leave s)
    seed: int


def worker_main(plan: WorkerPlan) -> dict[str, Any]:
    if plan.netns is not None:
        from flowcast.loadtest.netns import enter  # noqa: PLC0415 - Linux-only, namespace runs only

        enter(plan.netns)  # this process (a pool worker, one plan) lives there from now on
    return asyncio.run(_run(plan))


async def _run(plan: WorkerPlan) -> dict[str, Any]:
    mono_of_start = plan.start_wall - (time.time() - time.monotonic())
    meter = Meter(mono_of_start)
    profile = plan.link
    client = CLIENTS[plan.protocol]
    lags: list[float] = []
    stop = asyncio.Event()

    async def lag_monitor() -> None:
        while not stop.is_set():
            t = time.monotonic()
            await asyncio.sleep(LAG_TICK_S)
            lags.append(max(0.0, time.monotonic() - t - LAG_TICK_S) * 1000.0)

    relay_stats = {"dropped_connections": 0, "lost_packets": 0}

    async def one(index: int, join: float, leave: float) -> dict[str, Any]:
        await asyncio.sleep(max(0.0, mono_of_start + join - time.monotonic()))
        end_at = mono_of_start + leave
        relays: dict[tuple[str, int], Relay] = {}

        async def dial(host: str, port: int) -> tuple[str, int]:
            """The viewer's access link: one relay per origin it talks to (redundant origins
            each get one, with the same profile), or the origin itself without impairment."""
            host = guard.check_viewer_host(host)  # never anything but loopback or our namespaces
            if not profile.relayed:
                return host, port
            if (host, port) not in relays:
                relay = Relay(profile, port, seed=plan.seed * 100_003 + index * 7 + len(relays), host=host)
                await relay.start()
                relays[(host, port)] = relay
            return "127.0.0.1", relays[(host, port)].port

        try:
            host, port = await dial(plan.host, plan.port)
            viewer = client(host, port, plan.path, end_at=end_at, meter=meter, profile=plan.profile, dial=dial)
            viewer.origins[0] = Origin("target", plan.host, plan.port)
            res = await viewer.run()
        finally:
            for relay in relays.values():
                await relay.close()
                relay_stats["dropped_connections"] += relay.dropped_connections
                relay_stats["lost_packets"] += relay.lost_packets
        d = res.as_dict()
        d["viewer_index"] = index
        return d

    monitor = asyncio.ensure_future(lag_monitor())
    results = await asyncio.gather(*(one(i, j, l) for i, j, l in plan.windows))
    stop.set()
    await monitor
    return {
        "viewers": results,
        "requests": meter.requests,
        "bytes": meter.bytes,
        "loop_lag_ms": lags,
        "relay": relay_stats,
    }
