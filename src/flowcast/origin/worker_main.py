"""One origin worker process, started by ``origin.workers.WorkerPool`` (not run by hand).

``python -m flowcast.origin.worker_main FD``: FD is the worker's end of the socketpair.
The first message is the hello (effective config, TLS files); then journal entries keep
the replica store current while the HTTP server serves from it on the shared port.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any

import uvloop

from flowcast.config import FlowcastConfig
from flowcast.origin.access import KID, MediaAccess, load_or_create_secret
from flowcast.origin.app import OriginApp, npm_vendor_dirs
from flowcast.origin.metrics import OriginMetrics
from flowcast.origin.server import serve, tune_gc
from flowcast.origin.store import MediaStore
from flowcast.origin.telemetry_routes import CMCD_HEADERS
from flowcast.origin.wire import FrameReader, frame
from flowcast.origin.workers import serves_locally
from flowcast.protect.tokens import TokenVerifier

log = logging.getLogger("flowcast.origin.worker")

WEB_DIR = Path(__file__).resolve().parent.parent / "web"
MAX_RELAYED_BODY = 1024 * 1024  # the largest body any relayed route accepts is far smaller
RELAY_TIMEOUT = 30.0


class AccessForwarder:
    """Stands in for the QoE service in a worker: access events go to the main process."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self._writer = writer

    def record_access(
        self, ts: float, path: str, query: str, scope_headers: Any, status: int, nbytes: int, ttfb_ms: float
    ) -> None:
        cmcd = [(name, v) for name in CMCD_HEADERS if (v := scope_headers.get(name))]
        self._writer.write(frame(("access", ts, path, query, cmcd, status, nbytes, ttfb_ms)))

    async def handle(self, scope: Any, proto: Any, method: str, path: str) -> bool:
        return False  # QoE routes are relayed, never served here


class ForwardingMetrics(OriginMetrics):
    """Request and byte counts go to the main process once a second (its /metrics is the
    one scraped); hold times and held requests stay in this process."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        super().__init__()
        self._writer = writer
        self._counts: dict[tuple[str, int], list[int]] = {}

    def observe(self, resource: str, status: int, nbytes: int) -> None:
        c = self._counts.get((resource, status))
        if c is None:
            c = self._counts[(resource, status)] = [0, 0]
        c[0] += 1
        c[1] += nbytes

    async def forward(self, period: float = 1.0) -> None:
        while True:
            await asyncio.sleep(period)
            self.flush()

    def flush(self) -> None:
        if self._counts:
            batch = [(r, s, n, b) for (r, s), (n, b) in self._counts.items()]
            self._counts = {}
            self._writer.write(frame(("metrics", batch)))


class WorkerFront:
    """The worker's RSGI app: media from the replica, everything else relayed."""

    def __init__(self, app: OriginApp, writer: asyncio.StreamWriter) -> None:
        self.app = app
        self._writer = writer
        self._ids = itertools.count(1)
        self.pending: dict[int, asyncio.Future[tuple[int, list[tuple[str, str]], bytes]]] = {}

    def close(self) -> None:
        self.app.close()

    async def __rsgi__(self, scope: Any, proto: Any) -> None:
        await self(scope, proto)

    async def __call__(self, scope: Any, proto: Any) -> None:
        if scope.proto != "http":
            return
        if serves_locally(scope.method, scope.path):
            await self.app(scope, proto)
            return
        length = scope.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_RELAYED_BODY):
            proto.response_bytes(413, [("content-type", "text/plain")], b"request body too large\n")
            return
        body = await proto() if scope.method in ("POST", "PUT", "PATCH") else b""
        if len(body) > MAX_RELAYED_BODY:
            proto.response_bytes(413, [("content-type", "text/plain")], b"request body too large\n")
            return
        rid = next(self._ids)
        answer = self.pending[rid] = asyncio.get_running_loop().create_future()
        headers = list(scope.headers.items())
        self._writer.write(frame(("relay", rid, scope.method, scope.path, scope.query_string, headers,
                                  scope.client or "", bytes(body))))
        try:
            status, resp_headers, resp_body = await asyncio.wait_for(answer, RELAY_TIMEOUT)
        except TimeoutError:
            proto.response_bytes(504, [("content-type", "text/plain"), ("cache-control", "no-store")],
                                 b"main origin process did not answer\n")
            return
        finally:
            self.pending.pop(rid, None)
        proto.response_bytes(status, [tuple(h) for h in resp_headers], resp_body)


async def run(fd: int) -> None:
    sock = socket.socket(fileno=fd)
    reader, writer = await asyncio.open_connection(sock=sock, limit=2**20)
    frames = FrameReader()
    queue: list[tuple[Any, ...]] = []
    synced = False
    while not synced:  # the hello and the whole snapshot, before serving anything
        data = await reader.read(2**20)
        if not data:
            return
        msgs = frames.feed(data)
        synced = any(m[0] == "synced" for m in msgs)
        queue.extend(msgs)
    hello = queue.pop(0)
    assert hello[0] == "hello"
    config = FlowcastConfig.model_validate_json(hello[1]["config"])
    store = MediaStore()
    access = None
    if config.protection.require_token:
        access = MediaAccess(TokenVerifier({KID: load_or_create_secret(Path(config.data_dir))}))
    metrics = ForwardingMetrics(writer)
    app = OriginApp(
        store,
        static_dir=WEB_DIR,
        vendor_dirs=npm_vendor_dirs(WEB_DIR / "node_modules"),
        metrics=metrics,
        access=access,
        hsts=config.origin.tls,
        telemetry=AccessForwarder(writer) if config.telemetry.enabled else None,  # type: ignore[arg-type]
    )
    front = WorkerFront(app, writer)

    def dispatch(msg: tuple[Any, ...]) -> None:
        if msg[0] == "j":
            try:
                store.apply(msg[1:])
            except (ValueError, KeyError) as exc:  # as the main store would have refused it
                log.warning("journal entry %s %s not applied: %s", msg[1], msg[2], exc)
        elif msg[0] == "resp":
            fut = front.pending.get(msg[1])
            if fut is not None and not fut.done():
                fut.set_result((msg[2], msg[3], msg[4]))

    for msg in queue:
        dispatch(msg)
    cert, key = hello[1]["tls_cert"], hello[1]["tls_key"]
    try:
        handle = await serve(front, config.origin.host, config.origin.port, reuse_port=True,
                             server=config.origin.server,
                             ssl_cert=Path(cert) if cert else None, ssl_key=Path(key) if key else None)
        await asyncio.sleep(0.2)  # with SO_REUSEPORT the readiness probe may reach a sibling
        if handle.task.done():
            handle.task.result()
    except Exception as exc:  # noqa: BLE001 - reported to the main process, which logs it
        writer.write(frame(("fatal", f"{type(exc).__name__}: {exc}")))
        await writer.drain()
        return
    writer.write(frame(("ready",)))
    tune_gc()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    async def pump() -> None:
        while True:
            data = await reader.read(2**20)
            if not data:
                break  # the main process is gone: so is this worker's reason to be
            for msg in frames.feed(data):
                dispatch(msg)

    forwarding = asyncio.create_task(metrics.forward())
    pumping = asyncio.create_task(pump())
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait({pumping, stopping}, return_when=asyncio.FIRST_COMPLETED)
    await handle.stop()
    metrics.flush()
    for task in (pumping, stopping, forwarding):
        task.cancel()


def main() -> None:
    logging.basicConfig(
        level=os.environ.get("FLOWCAST_LOG_LEVEL", "INFO"),
        format=f"%(asctime)s worker{os.environ.get('FLOWCAST_WORKER_INDEX', '?')} %(levelname)s %(name)s: %(message)s",
    )
    uvloop.run(run(int(sys.argv[1])))


if __name__ == "__main__":
    main()
