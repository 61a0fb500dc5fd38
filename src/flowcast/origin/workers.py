"""Origin worker processes: more cores behind the same port.

``origin.workers: N`` runs N-1 worker processes beside the main one (the one that runs
the packager). Each worker binds the same host:port (with SO_REUSEPORT, so the
kernel spreads connections over the processes) and serves ``/live/``, ``/vendor/`` and
``/time`` from its own replica of the main store. The replica is fed over a socketpair:
a snapshot first, then every publish as the main store applies it
(``MediaStore.replicate_to``), so blocking reloads, preload hints and growing segments
behave in a worker exactly as in the main process.

What needs the main process's state is relayed to it over the same channel: the license
server, QoE collection and reports, chaos, WHIP/WHEP, /metrics and the player pages.
Access events of the media a worker serves travel back, so QoE sees every request. A
worker that exits or falls behind (its channel backs up past ``max_backlog``) is
replaced by a new one, which starts from a fresh snapshot.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flowcast.origin.store import JournalEntry, MediaStore
from flowcast.origin.wire import FrameError, FrameReader, frame

__all__ = ["LOCAL_PREFIXES", "RelayedScope", "RelayProto", "WorkerError", "WorkerPool", "serves_locally"]

log = logging.getLogger(__name__)

# What a worker answers from its replica; everything else is relayed to the main process.
LOCAL_PREFIXES = ("/live/", "/vendor/")
_LOCAL_METHODS = frozenset(("GET", "HEAD", "OPTIONS"))


def serves_locally(method: str, path: str) -> bool:
    return method in _LOCAL_METHODS and (path.startswith(LOCAL_PREFIXES) or path == "/time")


class WorkerError(Exception):
    """A worker process could not be started."""


@dataclass(slots=True)
class RelayedScope:
    """The RSGI scope attributes the origin's handlers read, for a relayed request."""

    method: str
    path: str
    query_string: str
    headers: dict[str, str]
    client: str
    proto: str = "http"
    scheme: str = "http"


class RelayProto:
    """An RSGI protocol that keeps the response, to send it back to the worker."""

    def __init__(self, body: bytes) -> None:
        self._body = body
        self.status = 500
        self.headers: list[tuple[str, str]] = []
        self.chunks: list[bytes] = []
        self._never: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def __call__(self) -> bytes:
        return self._body

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._body_chunks()

    async def _body_chunks(self) -> AsyncIterator[bytes]:
        if self._body:
            yield self._body

    async def client_disconnect(self) -> None:
        await self._never  # the worker holds the client; a relayed answer is never abandoned

    def response_bytes(self, status: int, headers: Any, body: bytes) -> None:
        self.status, self.headers, self.chunks = status, list(headers), [bytes(body)]

    def response_str(self, status: int, headers: Any, body: str) -> None:
        self.response_bytes(status, headers, body.encode())

    def response_empty(self, status: int, headers: Any) -> None:
        self.status, self.headers, self.chunks = status, list(headers), []

    def response_file(self, status: int, headers: Any, path: str) -> None:
        self.response_bytes(status, headers, Path(path).read_bytes())

    def response_stream(self, status: int, headers: Any) -> "RelayProto":
        self.status, self.headers, self.chunks = status, list(headers), []
        return self

    async def send_bytes(self, data: bytes) -> None:
        self.chunks.append(bytes(data))

    async def send_str(self, data: str) -> None:
        self.chunks.append(data.encode())


@dataclass(slots=True)
class _Worker:
    index: int
    process: asyncio.subprocess.Process
    writer: asyncio.StreamWriter
    reader: asyncio.StreamReader
    allowance: int = 0  # write-buffer bytes past which the worker counts as stuck
    ready: asyncio.Future[None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    task: asyncio.Task[None] | None = None
    closed: bool = False


class WorkerPool:
    """Starts, feeds and replaces the worker processes of one origin (the main side).

    ``app``: the main process's OriginApp, which answers relayed requests.
    ``record_access``: where workers' access events go (the QoE service), or None.
    ``metrics``: the main OriginMetrics; workers' request and byte counts are added to it
    every second, so /metrics counts every request (hold times stay per process).
    """

    def __init__(
        self,
        count: int,
        store: MediaStore,
        app: Any,
        hello: dict[str, Any],
        *,
        record_access: Any = None,
        metrics: Any = None,
        max_backlog: int = 64 * 1024 * 1024,
        start_timeout: float = 30.0,
    ) -> None:
        self.count = count
        self.store = store
        self.app = app
        self.hello = hello
        self.record_access = record_access
        self.metrics = metrics  # OriginMetrics: workers' request counts are added to it
        if metrics is not None:
            metrics.bind_workers(self)
        self.max_backlog = max_backlog
        self.start_timeout = start_timeout
        self.workers: dict[int, _Worker] = {}
        self.restarts = 0
        self._closing = False
        self._stop_replication: Any = None

    @property
    def pids(self) -> list[int]:
        return [w.process.pid for w in self.workers.values()]

    async def start(self) -> None:
        """Start every worker; returns once each one listens."""
        self._stop_replication = self.store.replicate_to(self._broadcast)
        for i in range(self.count):
            await self._spawn(i)

    async def stop(self) -> None:
        self._closing = True
        if self._stop_replication is not None:
            self._stop_replication()
        for w in list(self.workers.values()):
            await self._retire(w)

    async def _spawn(self, index: int) -> None:
        parent, child = socket.socketpair()
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "flowcast.origin.worker_main", str(child.fileno()),
                pass_fds=(child.fileno(),),
                stdin=asyncio.subprocess.DEVNULL,
                env={**os.environ, "FLOWCAST_WORKER_INDEX": str(index + 1)},
            )
        finally:
            child.close()
        reader, writer = await asyncio.open_connection(sock=parent, limit=2**20)
        w = _Worker(index, proc, writer, reader)
        self.workers[index] = w
        # Snapshot, then every publish (_broadcast to the workers registered here), in one
        # synchronous step: no publish falls in between.
        writer.write(frame(("hello", self.hello)))
        for entry in self.store.snapshot():
            writer.write(frame(("j", *entry)))
        writer.write(frame(("synced",)))  # the worker serves only from a whole snapshot
        w.allowance = writer.transport.get_write_buffer_size() + self.max_backlog
        w.task = asyncio.create_task(self._serve(w), name=f"origin worker {index + 1}")
        try:
            await asyncio.wait_for(asyncio.shield(w.ready), self.start_timeout)
        except (TimeoutError, WorkerError) as exc:
            await self._retire(w)
            raise WorkerError(f"origin worker {index + 1} did not start: {exc or 'timed out'}") from None
        log.info("origin worker %d listening (pid %d)", index + 1, proc.pid)
        if self._closing:  # stopped while this one was starting
            await self._retire(w)

    def _broadcast(self, entry: JournalEntry) -> None:
        """One publish to every worker, framed once."""
        if not self.workers:
            return
        data = frame(("j", *entry))
        for w in self.workers.values():
            if w.closed:
                continue
            if w.writer.transport.get_write_buffer_size() > w.allowance:
                log.error("origin worker %d fell %d bytes behind; replacing it", w.index + 1, self.max_backlog)
                w.closed = True
                w.process.kill()
                continue
            w.writer.write(data)

    async def _serve(self, w: _Worker) -> None:
        """Read what the worker sends until it goes away; then replace it."""
        frames = FrameReader()
        try:
            while True:
                data = await w.reader.read(2**20)
                if not data:
                    break
                for msg in frames.feed(data):
                    kind = msg[0]
                    if kind == "access":
                        if self.record_access is not None:
                            _, ts, path, query, cmcd, status, nbytes, ttfb_ms = msg
                            self.record_access(ts, path, query, dict(cmcd), status, nbytes, ttfb_ms)
                    elif kind == "metrics":
                        if self.metrics is not None:
                            for resource, status, count, nbytes in msg[1]:
                                self.metrics.observe_many(resource, status, count, nbytes)
                    elif kind == "relay":
                        asyncio.create_task(self._relay(w, msg))
                    elif kind == "ready":
                        if not w.ready.done():
                            w.ready.set_result(None)
                    elif kind == "fatal":
                        if not w.ready.done():
                            w.ready.set_exception(WorkerError(str(msg[1])))
                        log.error("origin worker %d: %s", w.index + 1, msg[1])
        except (ConnectionError, FrameError) as exc:
            log.error("origin worker %d channel: %s", w.index + 1, exc)
        finally:
            w.closed = True
            if not w.ready.done():
                w.ready.set_exception(WorkerError("exited during start"))
        code = await w.process.wait()
        if self._closing or self.workers.get(w.index) is not w:
            return
        del self.workers[w.index]
        log.error("origin worker %d (pid %d) exited with %s; starting a new one", w.index + 1, w.process.pid, code)
        while not self._closing:
            self.restarts += 1
            await asyncio.sleep(min(5.0, 0.5 * self.restarts))
            if self._closing:
                return
            try:
                await self._spawn(w.index)
                return
            except WorkerError as exc:
                log.error("%s", exc)

    async def _relay(self, w: _Worker, msg: tuple[Any, ...]) -> None:
        _, rid, method, path, query, headers, client, body = msg
        proto = RelayProto(body)
        scope = RelayedScope(method, path, query, dict(headers), client)
        try:
            await self.app(scope, proto)
        except Exception:  # noqa: BLE001 - one relayed request must not take the pool down
            log.exception("relayed %s %s failed", method, path)
            proto.response_bytes(500, [("content-type", "text/plain")], b"internal error\n")
        if not w.closed:
            w.writer.write(frame(("resp", rid, proto.status, proto.headers, b"".join(proto.chunks))))

    async def _retire(self, w: _Worker) -> None:
        w.closed = True
        if self.workers.get(w.index) is w:
            del self.workers[w.index]
        if w.process.returncode is None:
            w.process.terminate()
            try:
                await asyncio.wait_for(w.process.wait(), 5.0)
            except TimeoutError:
                w.process.kill()
                await w.process.wait()
        w.writer.close()
        if w.task is not None and w.task is not asyncio.current_task():
            w.task.cancel()


def worker_hello(config_json: str, tls_cert: Path | None, tls_key: Path | None) -> dict[str, Any]:
    """What a worker needs to build its origin: the effective config (after command-line
    overrides) and the certificate paths. Secrets stay in their files; the worker reads them."""
    return {
        "config": config_json,
        "tls_cert": str(tls_cert) if tls_cert else None,
        "tls_key": str(tls_key) if tls_key else None,
        "started": time.time(),
    }
