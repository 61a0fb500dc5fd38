"""Start and stop the origin's HTTP server in the running event loop.

Plain HTTP/1.1 (what a CDN speaks to an origin) is our own server (``origin/http1.py``);
TLS, with HTTP/2 for browsers that reach the origin directly, is granian's embedded server
(``granian.server.embed.Server``). Both run the same RSGI app on the caller's loop, so the
packager, the store and the handlers share one loop: a publish wakes held requests with
no thread hop.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from .http1 import HTTP1Server, Limits

__all__ = ["ServerHandle", "ServerKind", "free_port", "running", "serve", "tune_gc"]

log = logging.getLogger(__name__)

ServerKind = Literal["auto", "flowcast", "granian"]


# Thousands of held requests are thousands of live coroutines, futures and tasks: with
# CPython's default thresholds (700, 10, 10) the cyclic GC walks them over and over, and
# half of what a held request cost was that walk (docs/benchmarks.md, fan-out).
GC_THRESHOLDS = (50_000, 100, 100)  # a young collection then walks <= 50k objects: a few ms


def tune_gc() -> None:
    """For a serving process, once started: what start-up allocated moves out of the
    collector's sight (gc.freeze), and young objects are collected less often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (granian cannot report a port-0 bind)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


@dataclass(slots=True)
class ServerHandle:
    """A running server: where it listens, which one it is, and how to stop it.

    ``task`` runs for as long as the server serves; it ends (with the error, if any) when
    the server stops.
    """

    task: asyncio.Task[None]
    host: str
    port: int
    app: Any
    kind: str  # "flowcast" (origin/http1.py) or "granian"
    scheme: str
    _stop: Callable[[float], Awaitable[None]]

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"

    async def stop(self, timeout: float = 5.0) -> None:
        """Stop accepting and shut down; waits for the serve task to end."""
        if self.task.done():
            return
        close = getattr(self.app, "close", None)
        if close is not None:
            close()  # held requests answer 503 now instead of keeping the server waiting
        await self._stop(timeout)
        log.info("origin stopped (%s)", self.url)


async def serve(
    app: Any,
    host: str = "127.0.0.1",
    port: int = 8080,
    *,
    server: ServerKind = "auto",
    backlog: int = 2048,
    reuse_port: bool = False,
    limits: Limits | None = None,
    startup_timeout: float = 10.0,
    ssl_cert: Path | None = None,
    ssl_key: Path | None = None,
) -> ServerHandle:
    """Serve the RSGI ``app`` on ``host:port`` (``port=0``: a free port) in this loop.

    ``server="auto"``: ours for plain HTTP, granian for TLS (HTTP/2). ``reuse_port``: bind
    with SO_REUSEPORT, so origin worker processes share the port (origin/workers.py);
    granian always does.
    """
    if server == "granian" or (server == "auto" and ssl_cert is not None):
        return await _serve_granian(app, host, port, backlog=backlog, startup_timeout=startup_timeout,
                                    ssl_cert=ssl_cert, ssl_key=ssl_key)
    if ssl_cert is not None:
        raise ValueError("TLS is served by granian (server='granian' or 'auto')")
    http1 = HTTP1Server(app, limits=limits)
    await http1.start(host, port, backlog=backlog, reuse_port=reuse_port)
    stopped = asyncio.Event()

    async def until_stopped() -> None:
        await stopped.wait()

    async def stop(timeout: float) -> None:
        try:
            await http1.close(timeout)
        finally:
            stopped.set()
            await task

    task = asyncio.create_task(until_stopped(), name=f"http1 {host}:{http1.port}")
    handle = ServerHandle(task, host, http1.port, app, "flowcast", "http", stop)
    log.info("origin listening at %s", handle.url)
    return handle


async def _serve_granian(
    app: Any,
    host: str,
    port: int,
    *,
    backlog: int,
    startup_timeout: float,
    ssl_cert: Path | None,
    ssl_key: Path | None,
) -> ServerHandle:
    # Imported here: granian starts Rust runtime threads of its own, needless for plain HTTP.
    from granian.constants import HTTPModes, Interfaces, SSLProtocols  # noqa: PLC0415
    from granian.server.embed import Server  # noqa: PLC0415

    if port == 0:
        port = free_port(host)
    # backpressure: requests in flight per worker. granian's default (backlog // workers,
    # 128 embedded) would queue blocking-reload viewers behind each other.
    server = Server(
        app,
        address=host,
        port=port,
        interface=Interfaces.RSGI,
        http=HTTPModes.auto,
        backlog=backlog,
        backpressure=65_536,
        log_enabled=False,
        ssl_cert=ssl_cert,
        ssl_key=ssl_key,
        ssl_protocol_min=SSLProtocols.tls12,
    )
    task = asyncio.create_task(server.serve(), name=f"granian {host}:{port}")

    async def stop(timeout: float) -> None:
        server.stop()
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout)
        except TimeoutError:
            log.warning("granian did not stop within %.1f s; cancelling", timeout)
            task.cancel()

    handle = ServerHandle(task, host, port, app, "granian", "https" if ssl_cert else "http", stop)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + startup_timeout
    while True:
        if task.done():
            task.result()  # raises the startup error (port in use, bad config)
            raise RuntimeError("granian exited during startup")
        try:
            _, writer = await asyncio.open_connection(host, port)
        except OSError:
            if loop.time() > deadline:
                await handle.stop()
                raise TimeoutError(f"origin did not start listening on {host}:{port}") from None
            await asyncio.sleep(0.01)
            continue
        writer.close()
        break
    log.info("origin listening at %s (granian)", handle.url)
    return handle


@asynccontextmanager
async def running(app: Any, host: str = "127.0.0.1", port: int = 0, **kwargs: Any) -> AsyncIterator[ServerHandle]:
    """``async with running(app) as srv: ... srv.url ...`` - serve, then stop."""
    handle = await serve(app, host, port, **kwargs)
    try:
        yield handle
    finally:
        await handle.stop()
