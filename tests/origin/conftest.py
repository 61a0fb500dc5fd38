"""An in-process origin on 127.0.0.1: store, app and server share the test's event loop."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from flowcast.origin.app import OriginApp
from flowcast.origin.metrics import OriginMetrics
from flowcast.origin.server import ServerHandle, running
from flowcast.origin.store import MediaStore


@dataclass
class Origin:
    store: MediaStore
    app: OriginApp
    metrics: OriginMetrics
    server: ServerHandle
    client: httpx.AsyncClient
    root: Path

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def url(self) -> str:
        return self.server.url

    async def until(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        """Wait (test side) until ``predicate()`` holds, e.g. N requests are being held."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not predicate():
            if loop.time() > deadline:
                raise AssertionError("condition not reached in time")
            await asyncio.sleep(0.002)

    def waiting(self, resource: str | None = None) -> float:
        return self.metrics.waiting_now(resource)


def make_tree(root: Path) -> tuple[Path, dict[str, Path]]:
    static = root / "web"
    static.mkdir()
    (static / "index.html").write_text("<!doctype html><title>flowcast player</title>\n")
    (static / "player.js").write_text("export const player = 1;\n" * 50)
    vendor = root / "node_modules" / "hls.js" / "dist"
    vendor.mkdir(parents=True)
    (vendor / "hls.min.js").write_text("/* hls.js */ var Hls = {};\n" * 100)
    (root / "secret.txt").write_text("do not serve me\n")
    return static, {"hls.js": vendor}


@pytest.fixture(params=["flowcast", "granian"])
def run_origin(tmp_path: Path, request: pytest.FixtureRequest) -> Callable[..., None]:
    """``run_origin(scenario, **store_kwargs)`` runs ``await scenario(origin)`` in a fresh loop.

    On both servers: ours parks blocking reloads (answered from the publish's callback),
    granian awaits them in the request's coroutine; the app must behave the same on each.
    """

    def runner(scenario: Callable[[Origin], Awaitable[None]], *, hold_timeout: float = 3.0) -> None:
        async def main() -> None:
            static, vendors = make_tree(tmp_path)
            store = MediaStore(hold_timeout=hold_timeout)
            metrics = OriginMetrics()
            app = OriginApp(store, static_dir=static, vendor_dirs=vendors, metrics=metrics)
            async with running(app, "127.0.0.1", 0, server=request.param) as server:
                limits = httpx.Limits(max_connections=200, max_keepalive_connections=50)
                async with httpx.AsyncClient(base_url=server.url, limits=limits, timeout=10.0) as client:
                    await scenario(Origin(store, app, metrics, server, client, tmp_path))

        asyncio.run(main())

    return runner
