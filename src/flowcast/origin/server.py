"""Start and stop granian's embedded server in the running event loop.

The embedded server (``granian.server.embed.Server``) runs its RSGI worker on the
caller's asyncio loop, so the packager, the store and the HTTP handlers share one loop:
a publish sets an asyncio.Event that held requests await, with no thread hop.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from granian.constants import HTTPModes, Interfaces, SSLProtocols
from granian.server.embed import Server

__all__ = ["ServerHandle", "free_port", "running", "serve"]

log = logging.getLogger(__name__)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (granian cannot report a port-0 bind)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


@dataclass(slots=True)
class ServerHandle:
    """A running embedded server: where it listens and how to stop it."""

    server: Server
    task: asyncio.Task[None]
    host: str
    port: int
    app: Any = None
    scheme: str = "http"

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"

    async def stop(self, timeout: float = 5.0) -> None:
        """Stop accepting and shut the worker down; waits for the serve task to end."""
        if self.task.done():
            return
        close = getattr(self.app, "close", None)
        if close is not None:
            close()  # held requests answer 503 now instead of keeping granian waiting
        self.server.stop()
        try:
            await asyncio.wait_for(asyncio.shield(self.task), timeout)
        except TimeoutError:
            log.warning("granian did not stop within %.1f s; cancelling", timeout)
            self.task.cancel()
        log.info("origin stopped (%s)", self.url)


async def serve(
    app: Any,
    host: str = "127.0.0.1",
    port: int = 8080,
    *,
    http: HTTPModes = HTTPModes.auto,
    backlog: int = 2048,
    backpressure: int = 65_536,
    log_enabled: bool = False,
    startup_timeout: float = 10.0,
    ssl_cert: Path | None = None,
    ssl_key: Path | None = None,
) -> ServerHandle:
    """Serve the RSGI ``app`` on ``host:port`` (``port=0``: a free port) in this loop.

    ``backpressure`` is the number of requests in flight per worker. granian's default
    (backlog // workers, 128 embedded) would queue blocking-reload viewers behind each
    other; held requests cost an asyncio Task each, so allow tens of thousands.
    """
    if port == 0:
        port = free_port(host)
    server = Server(
        app,
        address=host,
        port=port,
        interface=Interfaces.RSGI,
        http=http,
        backlog=backlog,
        backpressure=backpressure,
        log_enabled=log_enabled,
        ssl_cert=ssl_cert,
        ssl_key=ssl_key,
        ssl_protocol_min=SSLProtocols.tls12,
    )
    task = asyncio.create_task(server.serve(), name=f"granian {host}:{port}")
    handle = ServerHandle(server, task, host, port, app, "https" if ssl_cert else "http")
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
    log.info("origin listening at %s", handle.url)
    return handle


@asynccontextmanager
async def running(app: Any, host: str = "127.0.0.1", port: int = 0, **kwargs: Any) -> AsyncIterator[ServerHandle]:
    """``async with running(app) as srv: ... srv.url ...`` - serve, then stop."""
    handle = await serve(app, host, port, **kwargs)
    try:
        yield handle
    finally:
        await handle.stop()
