"""The origin's own HTTP/1.1 server: the RSGI app on the event loop's transports.

Why ours: a publish wakes thousands of held playlist reloads at once, and what each costs
decides how many viewers one core can hold. granian hands every request and response
across its Rust threads and the loop's self-pipe, which capped the origin at 0.52 x nginx
for a 2 KB playlist and ~40 µs per held response (docs/benchmarks.md). Here llhttp
(httptools, the parser of uvicorn and Node) parses inside the protocol callback, the app
runs in that same callback (no Task unless it has to wait), and a response is one write.

The app does not know which server runs it: this module hosts the RSGI interface the app
was written for (``scope``, ``proto.response_*``, ``await proto()``, ``async for chunk
in proto``, ``client_disconnect()``). granian still serves TLS with HTTP/2
(``origin/server.py``).

HTTP/1.1 as RFC 9112 asks of an origin: keep-alive and pipelining (answered in order),
``Expect: 100-continue``, chunked responses for bodies still being produced, HEAD, Date,
400 for a malformed request or an HTTP/1.1 request without Host, 408 for a client too slow
to send its head or body, 413 for an oversized body, 414/431 for an oversized head. A
client never costs the others more than its own buffers: unread bodies and pipelined
requests pause reading from that client; a client that stops reading pauses its own
responses (``drain``).
"""

from __future__ import annotations

import asyncio
import contextvars
import http
import logging
import os
import socket
import time
try:
    from _asyncio import current_task as _current_task  # 3.12+: in C
except ImportError:  # 3.11: the same lookup, without asyncio.current_task's Python frame
    _current_task = asyncio.tasks._current_tasks.get
from asyncio.tasks import _enter_task, _leave_task  # C accelerated: what eager tasks use
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from email.utils import formatdate
from typing import Any
from urllib.parse import unquote

import httptools

__all__ = ["ClientGone", "HTTP1Server", "Headers", "Limits", "render_head", "split_target"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Limits:
    """What one client may make the server hold for it, and for how long."""

    max_header_bytes: int = 32 * 1024  # request line + headers (nginx: 1 KB + 4 x 8 KB)
    max_headers: int = 100
    max_body: int = 8 * 1024 * 1024  # the app applies its own, smaller limit per route
    unread_body: int = 64 * 1024  # buffered and not yet read by the app: pause the client
    max_pipelined: int = 16  # requests read ahead of their turn before reading pauses
    header_timeout: float = 10.0  # from the first byte of a request to its last header
    body_timeout: float = 30.0  # between two pieces of a request body
    idle_timeout: float = 75.0  # keep-alive (nginx's default)


class ClientGone(ConnectionError):
    """The client went away while its response was being streamed to it."""


class BadRequest(Exception):
    """A request refused before the app saw it; ``status`` is what the client is told."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


# -- the response head, sans I/O ---------------------------------------------------------

_STATUS_LINES = {s.value: f"HTTP/1.1 {s.value} {s.phrase}\r\n".encode() for s in http.HTTPStatus}
_NO_BODY = frozenset({204, 304}) | frozenset(range(100, 200))
_date: list[Any] = [0, b""]


def _date_line() -> bytes:
    now = int(time.time())
    if now != _date[0]:
        _date[0], _date[1] = now, f"date: {formatdate(now, usegmt=True)}\r\n".encode()
    return _date[1]


def render_head(status: int, headers: list[tuple[str, str]], framing: bytes = b"") -> bytes:
    """The status line and header block of a response, through the blank line.

    ``framing`` is what the server adds after the app's headers (length or chunked coding,
    connection), each line ending in CRLF. Raises ValueError for a header that would split
    the response (CR or LF in a name or value: RFC 9110 5.5) or a status that is not 3 digits.
    """
    line = _STATUS_LINES.get(status) or _status_line(status)
    now = int(time.time())
    if now != _date[0]:
        _date_line()
    return b"".join((line, _block(headers), framing, _date[1], b"\r\n"))


def _status_line(status: int) -> bytes:
    if not (isinstance(status, int) and 100 <= status <= 999):
        raise ValueError(f"status {status!r} is not a three-digit code")
    return b"HTTP/1.1 %d \r\n" % status


def _block(headers: list[tuple[str, str]]) -> bytes:
    # The app sends the same few header lists again and again (they change with each
    # publish, not each request): render and check each one once.
    try:
        key: tuple[tuple[str, str], ...] | None = tuple(headers)
        block = _blocks.get(key)  # type: ignore[arg-type]
    except TypeError:  # a list of lists: fine, just not cacheable
        key = block = None
    if block is None:
        block = _render_block(headers)
        if key is not None:
            if len(_blocks) >= _BLOCKS_MAX:
                _blocks.clear()
            _blocks[key] = block
    return block


_blocks: dict[tuple[tuple[str, str], ...], bytes] = {}
_BLOCKS_MAX = 4096
_LENGTHS: dict[int, bytes] = {}  # body size -> its content-length line (a live window's few sizes)
_LENGTHS_MAX = 4096


def _render_block(headers: list[tuple[str, str]]) -> bytes:
    text = "".join([f"{name}: {value}\r\n" for name, value in headers])
    # Every line we wrote ends in CRLF; any other CR or LF came from a name or a value.
    n = len(headers)
    if text.count("\n") != n or text.count("\r") != n:
        raise ValueError("CR or LF in a response header")
    return text.encode("latin-1")


# -- the request, sans I/O ---------------------------------------------------------------


class Headers:
    """Request headers as RSGI gives them: lower-case names; ``get`` returns the first."""

    __slots__ = ("_raw", "_map")

    def __init__(self, raw: list[tuple[bytes, bytes]], fields: dict[bytes, bytes] | None = None) -> None:
        self._raw = raw
        # Bytes in, bytes kept: only the values asked for are decoded. Where a name repeats,
        # the first value is the one that counts (the parser builds ``fields`` as it goes).
        self._map = {n.lower(): v for n, v in reversed(raw)} if fields is None else fields

    def get(self, name: str, default: str | None = None) -> str | None:
        m = self._map
        key = _NAME_BYTES.get(name)
        if key is None:
            key = name.lower().encode("latin-1")
            if len(_NAME_BYTES) < 512:
                _NAME_BYTES[name] = key
        value = m.get(key)
        return default if value is None else value.decode("latin-1")

    def get_all(self, name: str) -> list[str]:
        key = name.lower().encode("latin-1")
        return [v.decode("latin-1") for n, v in self._raw if n.lower() == key]

    def items(self) -> list[tuple[str, str]]:
        return [(n.decode("latin-1").lower(), v.decode("latin-1")) for n, v in self._raw]

    def keys(self) -> list[str]:
        return [n for n, _ in self.items()]

    def values(self) -> list[str]:
        return [v for _, v in self.items()]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None


_NAME_BYTES: dict[str, bytes] = {}  # the header names apps ask for, encoded once (bounded)


def split_target(target: bytes) -> tuple[str, str]:
    """(percent-decoded path, raw query) of a request-target (RFC 9112 3.2).

    Origin-form is the norm; absolute-form (what a proxy sends, and any server MUST
    accept) is reduced to its path; ``*`` (OPTIONS) stays ``*``.
    """
    # Viewers of a live stream ask for the same targets (the next part, the same blocking
    # reload): split each once.
    hit = _targets.get(target)
    if hit is not None:
        return hit
    hit = _split_target(target)
    if len(_targets) >= _TARGETS_MAX:
        _targets.clear()
    _targets[target] = hit
    return hit


_targets: dict[bytes, tuple[str, str]] = {}
_TARGETS_MAX = 8192


def _split_target(target: bytes) -> tuple[str, str]:
    if target[:1] != b"/":
        if target == b"*":
            return "*", ""
        scheme_end = target.find(b"://")
        if scheme_end <= 0 or target[:scheme_end].lower() not in (b"http", b"https"):
            raise BadRequest(400, "request-target is neither origin-form nor absolute-form")
        slash = target.find(b"/", scheme_end + 3)
        target = target[slash:] if slash >= 0 else b"/"
    hash_at = target.find(b"#")
    if hash_at >= 0:
        target = target[:hash_at]
    q = target.find(b"?")
    if q >= 0:
        path, query = target[:q].decode("latin-1"), target[q + 1:].decode("latin-1")
    else:
        path, query = target.decode("latin-1"), ""
    if "%" in path:
        path = unquote(path.encode("latin-1").decode("utf-8", "surrogateescape"))
    return path, query


# -- one request: the RSGI scope and protocol in one object ------------------------------

_S_NONE, _S_HEAD, _S_DONE = 0, 1, 2  # response not started / head sent (streaming) / complete


class _Request:
    """One request: its RSGI scope (method, path, headers, ...) and protocol (responses,
    body) at once; the app gets it as both arguments."""

    proto = "http"
    rsgi_version = "1.5"
    scheme = "http"
    authority = None
    # What only some requests change (a body, a stream, a file) stays a class default until
    # then, in a __dict__ made on first write; the rest are slots set at once.
    expect_continue = False
    body: list[bytes] | None = None  # received, not yet read; None: none, or discarded
    waiter: asyncio.Future[None] | None = None  # the app waiting for body
    chunked = False
    pending: asyncio.Future[None] | None = None  # a file response still being sent
    body_error: Exception | None = None
    parkable = True  # the app may park() this request (see below)

    __slots__ = ("conn", "method", "path", "query_string", "http_version", "headers", "keep_alive",
                 "complete", "state", "started", "running", "parked", "__dict__")

    def __init__(self, conn: _Connection, method: str, path: str, query: str, version: str, headers: Headers,
                 keep_alive: bool) -> None:
        self.conn = conn
        self.method = method
        self.path = path
        self.query_string = query
        self.http_version = version
        self.headers = headers
        self.keep_alive = keep_alive
        self.complete = False  # the whole request (body included) has been received
        self.state = _S_NONE
        self.started = False  # handed to the app
        self.running = False  # the app has not returned yet
        self.parked = False  # park(): the app answers later from a callback, then calls unpark()

    @property
    def client(self) -> str:
        return self.conn.client

    @property
    def server(self) -> str:
        return self.conn.local

    @property
    def scope(self) -> _Request:
        return self

    # Parking (ours, not RSGI): an app may return with no answer yet and give one later
    # from a plain callback, e.g. when a publish releases a blocking reload. The request
    # then costs no coroutine, future or step while it waits (docs/benchmarks.md, fan-out).

    def park(self) -> None:
        """Called by the app before it returns unanswered: the answer comes with unpark()."""
        self.parked = True

    def unpark(self, exc: BaseException | None = None) -> None:
        """The app is done with a parked request (``exc``: it failed, a 500 if unanswered)."""
        if self.parked:
            self.parked = False
            self.conn._app_done(self, exc)

    # RSGI responses -------------------------------------------------------------------

    def _head(self, status: int, headers: list[tuple[str, str]], framing: bytes) -> bytes:
        if self.state:
            raise RuntimeError("response already started")
        if self.expect_continue and not self.complete:
            self.keep_alive = False  # never told to send its body: it may or may not come
        if not self.keep_alive:
            framing += b"connection: close\r\n"
        elif self.http_version == "1.0":
            framing += b"connection: keep-alive\r\n"
        return render_head(status, headers, framing)

    def response_empty(self, status: int, headers: list[tuple[str, str]]) -> None:
        if status in _NO_BODY or any(n.lower() == "content-length" for n, _ in headers):
            data = self._head(status, headers, b"")
        else:
            data = self._head(status, headers, b"content-length: 0\r\n")
        self.state = _S_DONE
        self.conn.write(data)

    def response_bytes(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        # The path of nearly every response: kept to one call (render_head) on purpose.
        if self.state or status in _NO_BODY:
            self.response_empty(status, headers)  # raises when a response was already sent
            return
        size = len(body)
        framing = _LENGTHS.get(size)
        if framing is None:
            framing = b"content-length: %d\r\n" % size
            if len(_LENGTHS) < _LENGTHS_MAX:
                _LENGTHS[size] = framing
        if self.expect_continue and not self.complete:
            self.keep_alive = False  # as in _head
        if not self.keep_alive:
            framing += b"connection: close\r\n"
        elif self.http_version == "1.0":
            framing += b"connection: keep-alive\r\n"
        line = _STATUS_LINES.get(status) or _status_line(status)
        block = _block(headers)  # (these two raise before anything is sent: the app's 500)
        now = int(time.time())
        if now != _date[0]:
            _date_line()
        self.state = _S_DONE
        conn = self.conn
        if conn.closed:
            return
        if self.method == "HEAD":
            conn.transport.write(b"".join((line, block, framing, _date[1], b"\r\n")))
        elif size > _BIG_BODY:  # no copy of the body into a joined buffer
            conn.transport.writelines((b"".join((line, block, framing, _date[1], b"\r\n")), body))
        else:
            conn.transport.write(b"".join((line, block, framing, _date[1], b"\r\n", body)))

    def response_str(self, status: int, headers: list[tuple[str, str]], body: str) -> None:
        self.response_bytes(status, headers, body.encode())

    def response_stream(self, status: int, headers: list[tuple[str, str]]) -> _Stream:
        # HTTP/1.0 has no chunked coding: the end of the body is the end of the connection.
        if self.http_version == "1.0":
            self.keep_alive = False
        self.chunked = self.http_version != "1.0" and self.method != "HEAD"
        self.conn.write(self._head(status, headers, b"transfer-encoding: chunked\r\n" if self.chunked else b""))
        self.state = _S_HEAD
        return _Stream(self)

    def response_file(self, status: int, headers: list[tuple[str, str]], path: str) -> None:
        size = os.stat(path).st_size
        self.conn.write(self._head(status, headers, b"content-length: %d\r\n" % size))
        if self.method == "HEAD":
            self.state = _S_DONE
            return
        self.state = _S_HEAD
        self.pending = self.conn.loop.create_future()
        self.conn.loop.create_task(self._send_file(path))

    async def _send_file(self, path: str) -> None:
        try:
            with open(path, "rb") as f:
                while chunk := f.read(256 * 1024):
                    if self.conn.closed:
                        break
                    self.conn.write(chunk)
                    await self.conn.drain()
        except (OSError, ClientGone) as exc:
            log.debug("file response %s ended early: %s", path, exc)
            self.conn.abort()
        finally:
            self.state = _S_DONE
            assert self.pending is not None
            self.pending.set_result(None)
            self.conn.loop.call_soon(self.conn.settle, self)

    # RSGI request body ---------------------------------------------------------------

    def client_disconnect(self) -> asyncio.Future[None]:
        return self.conn.disconnected()

    async def __call__(self) -> bytes:
        return b"".join([chunk async for chunk in self])

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[bytes]:
        while True:
            if self.body:
                chunk = self.body.pop(0)
                self.conn.body_read(len(chunk))
                yield chunk
                continue
            if self.body_error is not None:
                raise self.body_error
            if self.complete or self.conn.closed:
                return
            if self.expect_continue:
                self.expect_continue = False  # told to go on: the body will come
                if not self.state:
                    self.conn.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            self.waiter = self.conn.loop.create_future()
            try:
                await self.waiter
            finally:
                self.waiter = None

    def _wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)


class _Stream:
    """The transport of a streamed (chunked) response: ``send_bytes`` / ``send_str``."""

    __slots__ = ("req",)

    def __init__(self, req: _Request) -> None:
        self.req = req

    async def send_bytes(self, data: bytes) -> None:
        req = self.req
        conn = req.conn
        if conn.closed:
            raise ClientGone("client closed the connection")
        if not data or req.method == "HEAD":
            return
        conn.write(b"%x\r\n%b\r\n" % (len(data), data) if req.chunked else data)
        await conn.drain()

    async def send_str(self, data: str) -> None:
        await self.send_bytes(data.encode())


# -- running the app's coroutines -----------------------------------------------------------
#
# Most requests are answered without waiting (the object or playlist is there). Their
# coroutine runs its one step right in the protocol callback, as Python 3.12's eager tasks
# do, instead of costing a Task and a trip through the loop. One that has to wait (a held
# request) is then driven by a ``_Step``: each future it awaits resumes it, as a Task's
# would, without a Task's registration, scheduling and wrapper frames (a publish resumes
# thousands at once). While a step runs, its ``_Step`` is asyncio's current task, so
# asyncio.timeout() and current_task() work in the app as they do in a Task.


class _Step:
    """Drives one request's coroutine from the futures it awaits; the "task" asyncio sees."""

    __slots__ = ("conn", "req", "coro", "ctx", "awaiting", "_cancels", "_must_cancel")

    def __init__(self, conn: _Connection) -> None:
        self.conn = conn
        self.req: _Request | None = None
        self.coro: Any = None
        self.ctx: contextvars.Context | None = None
        self.awaiting: asyncio.Future[Any] | None = None
        self._cancels = 0
        self._must_cancel = False

    # what asyncio.timeout() and the like call on the current task

    def cancel(self, msg: Any = None) -> bool:
        if self.coro is None and self.req is not None:
            return False  # finished
        self._cancels += 1
        fut = self.awaiting
        if fut is None or not fut.cancel(msg):
            self._must_cancel = True  # thrown in at the next step
        return True

    def uncancel(self) -> int:
        if self._cancels > 0:
            self._cancels -= 1
        return self._cancels

    def cancelling(self) -> int:
        return self._cancels

    def done(self) -> bool:
        return self.coro is None and self.req is not None

    def get_name(self) -> str:
        return "http1 request"

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self.conn.loop

    # driving

    def wait_on(self, yielded: Any) -> None:
        """The coroutine yielded ``yielded`` (a future it awaits, or None for a bare yield)."""
        loop = self.conn.loop
        if yielded is None:
            loop.call_soon(self.resume, None, context=self.ctx)
            return
        if not getattr(yielded, "_asyncio_future_blocking", False):
            self._must_cancel = False
            self.coro.throw(RuntimeError(f"request coroutine yielded {yielded!r}, not a future"))
            return  # (unreachable unless the coroutine swallows it and yields again)
        yielded._asyncio_future_blocking = False
        self.awaiting = yielded
        yielded.add_done_callback(self.resume, context=self.ctx)
        if self._must_cancel and yielded.cancel():
            self._must_cancel = False

    def resume(self, _done: Any) -> None:
        """A done-callback (or call_soon) run in the request's own context (wait_on)."""
        self.awaiting = None
        conn, req, loop = self.conn, self.req, self.conn.loop
        assert req is not None
        _enter_task(loop, self)
        try:
            if self._must_cancel:
                self._must_cancel = False
                yielded = self.coro.throw(asyncio.CancelledError())
            else:
                yielded = self.coro.send(None)
        except StopIteration:
            _leave_task(loop, self)
            self.coro = None
            conn._app_done(req, None)
            return
        except asyncio.CancelledError:
            _leave_task(loop, self)
            self.coro = None
            conn._app_done(req, None)
            return
        except (KeyboardInterrupt, SystemExit):
            _leave_task(loop, self)
            raise
        except BaseException as exc:  # noqa: BLE001 - the app's failure is this request's 500
            _leave_task(loop, self)
            self.coro = None
            conn._app_done(req, exc)
            return
        _leave_task(loop, self)
        self.wait_on(yielded)


# -- one connection ----------------------------------------------------------------------

LINGER = 2.0  # seconds a refused client's connection is read (and dropped) before closing

App = Callable[[Any, Any], Any]
_BIG_BODY = 16 * 1024  # above this a body is written beside its head (writev), not joined to it
_METHODS = {m.encode(): m for m in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")}


class _Connection(asyncio.Protocol):
    """One client connection: parse, hand requests to the app in order, write answers.

    Requests wait in ``_queue`` in the order they arrived (pipelining); the first one is
    being answered. It leaves the queue once the app has returned, its response is
    complete and the request has been read to its end.
    """

    def __init__(self, server: HTTP1Server) -> None:
        self.server = server
        self.app = server.app
        self._answer_now = server.answer_now
        self.limits = server.limits
        self.loop = server.loop
        self.transport: Any = None
        self.parser = httptools.HttpRequestParser(self)
        self.closed = False
        self.client = ""
        self.local = ""
        # the request being parsed
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._fields: dict[bytes, bytes] = {}  # lower-case name -> first value
        self._header_bytes = 0
        self._read_len = 0
        self._head_reads = -1  # reads fed since the head began (-1: not in a head)
        self._parsing: _Request | None = None
        self._queue: deque[_Request] = deque()
        self._pumping = False
        self._owner = _Step(self)
        self._disconnect: list[asyncio.Future[None]] = []
        self._write_paused = False
        self._drain: list[asyncio.Future[None]] = []
        self._read_paused = False
        self._unread = 0  # request body bytes buffered and not yet read by the app
        self._upgraded = False
        self._lingering = False
        self.deadline = 0.0  # server.now after which the sweeper acts; 0: none
        self.deadline_status = 0  # what to answer then: 408, or 0 to just close
        limits = self.limits  # read on every request: kept as plain attributes
        self._max_head, self._max_headers = limits.max_header_bytes, limits.max_headers
        self._header_timeout, self._idle_timeout = limits.header_timeout, limits.idle_timeout
        self._max_pipelined = limits.max_pipelined
        self._max_queued = 4 * limits.max_pipelined  # past this, reading ahead is abuse: refused

    # asyncio.Protocol --------------------------------------------------------------

    def connection_made(self, transport: Any) -> None:  # uvloop's are not asyncio.Transport
        self.transport = transport
        self.client = _address(transport.get_extra_info("peername"))
        self.local = _address(transport.get_extra_info("sockname"))
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        self.server.connections.add(self)
        self._idle()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.server.connections.discard(self)
        for fut in self._disconnect:
            if not fut.done():
                fut.set_result(None)
        self._disconnect.clear()
        for fut in self._drain:
            if not fut.done():
                fut.set_exception(ClientGone("client closed the connection"))
        self._drain.clear()
        for req in self._queue:
            req._wake()

    def data_received(self, data: bytes) -> None:
        if self._upgraded or self.closed or self._lingering:
            return  # (lingering: what a refused client still sends is read and dropped)
        try:
            self._read_len = len(data)
            self.parser.feed_data(data)
            if self._head_reads >= 0:
                # A header split over reads is buffered inside httptools until it ends, so
                # on_header cannot count it: count whole reads after the one the head began in.
                self._head_reads += 1
                if self._head_reads > 1:
                    self._header_bytes += len(data)
                    if self._header_bytes > self.limits.max_header_bytes:
                        raise BadRequest(431, "request header fields too large")
        except BadRequest as exc:
            self._refuse(exc.status, str(exc))
        except httptools.HttpParserUpgrade:
            # We speak no other protocol (h2c, websocket on the media port): the request
            # is answered as plain HTTP/1.1 and the connection ends after it.
            self._upgraded = True
            if self._queue:
                self._queue[-1].keep_alive = False
            else:
                self._close()
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if isinstance(cause, BadRequest):
                self._refuse(cause.status, str(cause))
            else:
                log.error("http1: request from %s not handled", self.client, exc_info=cause or exc)
                self._refuse(500, "internal error")
        except httptools.HttpParserError as exc:
            self._refuse(400, f"malformed request: {exc}")

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        for fut in self._drain:
            if not fut.done():
                fut.set_result(None)
        self._drain.clear()
        self._pump()

    # httptools callbacks -----------------------------------------------------------

    # (No on_message_begin: a request's head begins with its target, so on_url starts it.)

    def on_url(self, url: bytes) -> None:
        if self._head_reads < 0:
            self._url = url
            self._headers = []
            self._fields = {}
            self._header_bytes = len(url)
            self._head_reads = 0
            self.deadline = self.server.now + self._header_timeout
            self.deadline_status = 408
        else:
            self._url += url
            self._header_bytes += len(url)
        if self._header_bytes > self._max_head:
            raise BadRequest(414, "request-target too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        # Called per header: kept to the append. The limits are checked once the head is
        # complete (one read holds at most 256 KB; data_received bounds heads over reads).
        self._headers.append((name, value))
        self._fields.setdefault(name.lower(), value)  # where a name repeats, the first counts

    def on_headers_complete(self) -> None:
        self._head_reads = -1
        raw = self._headers
        if len(raw) > self._max_headers or (  # a head longer than this read cannot be: count only then
                self._read_len + self._header_bytes > self._max_head
                and self._header_bytes + sum(len(n) + len(v) for n, v in raw) > self._max_head):
            raise BadRequest(431, "request header fields too large")
        fields = self._fields
        headers = Headers(raw, fields)
        parser = self.parser
        keep_alive = parser.should_keep_alive()
        # llhttp takes 0.9, 1.0, 1.1 and 2.0, and keeps a connection alive with no Connection
        # header only for 1.1: the version string (built by httptools each time) is not needed.
        version = "1.1" if keep_alive and b"connection" not in fields else parser.get_http_version()
        if b"host" not in fields and version == "1.1":
            raise BadRequest(400, "HTTP/1.1 request without Host (RFC 9112 3.2)")
        length = fields.get(b"content-length")
        if length is not None:
            if not length.isdigit() or int(length) > self.limits.max_body:
                raise BadRequest(413, "request body too large")  # (llhttp refuses other forms)
            body_expected = length != b"0"
        else:
            body_expected = b"transfer-encoding" in fields
        queue = self._queue
        if len(queue) >= self._max_queued:
            raise BadRequest(429, "too many pipelined requests")
        path, query = split_target(self._url)
        method = parser.get_method()
        req = _Request(self, _METHODS.get(method) or method.decode("latin-1"), path, query, version,
                       headers, keep_alive and not self.server.closing)
        if body_expected:
            req.body = []
            req.expect_continue = fields.get(b"expect", b"").lower() == b"100-continue"
            self.deadline = self.server.now + self.limits.body_timeout
            self._parsing = req
        else:
            # No body: the request is complete with its head (on_message_complete, next,
            # has nothing left to do), so an answer given at once can let it go at once.
            req.complete = True
            self.deadline = 0.0
        queue.append(req)
        if len(queue) == 1:
            if not self._write_paused:
                self._run(req)
        elif len(queue) > self._max_pipelined:
            self._pause_reading()

    def on_body(self, body: bytes) -> None:
        req = self._parsing
        if req is None:
            return
        self.deadline = self.server.now + self.limits.body_timeout
        if req.body is None:
            return  # answered without reading it: discarded
        req.body.append(body)
        self._unread += len(body)
        if self._unread > self.limits.unread_body:
            self._pause_reading()
        req._wake()

    def on_message_complete(self) -> None:
        req = self._parsing
        self._parsing = None
        if req is None:
            return
        req.complete = True
        if req.waiter is not None:
            req._wake()
        self.deadline = 0.0
        if req.started and not req.running:
            self.settle(req)

    # answering, in order -----------------------------------------------------------

    def _pump(self) -> None:
        """Start the first queued request unless one is being answered (or writes wait)."""
        if self._pumping:
            return  # a request finished inside _run: the loop below goes on with the next
        self._pumping = True
        try:
            queue = self._queue
            while queue and not self._write_paused and not self.closed:
                req = queue[0]
                if req.started:
                    break
                self._run(req)
                if queue and queue[0] is req:
                    break  # still being answered
        finally:
            self._pumping = False
        if not self._queue:
            self._idle()
        if self._read_paused and len(self._queue) <= self.limits.max_pipelined \
                and self._unread <= self.limits.unread_body:
            self._resume_reading()

    def _run(self, req: _Request) -> None:
        loop = self.loop
        if _current_task(loop) is not None:
            # Reached from inside a task: the eager step has to be the loop's only current task.
            loop.call_soon(self._pump)
            return
        req.started = req.running = True
        answer_now = self._answer_now
        if answer_now is None:
            coro = self.app(req, req)
        else:
            try:
                coro = answer_now(req, req)
            except (KeyboardInterrupt, SystemExit):
                raise
            except BaseException as exc:  # noqa: BLE001 - as below
                self._app_done(req, exc)
                return
            if coro is None:  # answered (or parked) without a coroutine: most requests
                if req.parked:
                    return
                if req.state == _S_DONE and req.body is None:
                    req.running = False
                    if req.complete:
                        self.settle(req)
                    return
                self._app_done(req, None)
                return
        owner = self._owner  # the current task during the eager step; kept if the step waits
        ctx = contextvars.copy_context()
        _enter_task(loop, owner)
        try:
            yielded = ctx.run(coro.send, None)
        except StopIteration:
            _leave_task(loop, owner)
            if owner._cancels or owner._must_cancel:
                self._owner = _Step(self)  # a cancel asked for in that step must not reach the next
            if req.parked:
                return  # answered later; unpark() finishes it
            if req.state == _S_DONE and req.body is None:
                req.running = False  # answered at once (most requests): nothing to clean up
                if req.complete:
                    self.settle(req)
                return
            self._app_done(req, None)
            return
        except (KeyboardInterrupt, SystemExit):
            _leave_task(loop, owner)
            raise
        except BaseException as exc:  # noqa: BLE001 - the app's failure is this request's 500
            _leave_task(loop, owner)
            self._app_done(req, exc)
            return
        _leave_task(loop, owner)
        self._owner = _Step(self)  # that one now drives this request
        owner.req, owner.coro, owner.ctx = req, coro, ctx
        owner.wait_on(yielded)

    def _app_done(self, req: _Request, exc: BaseException | None) -> None:
        req.running = False
        state = req.state
        if state != _S_DONE:
            if exc is not None:
                log.error("http1: %s %s failed", req.method, req.path, exc_info=exc)
            if state == _S_NONE:
                if not self.closed:
                    req.keep_alive = False
                    try:
                        req.response_bytes(500, [("content-type", "text/plain; charset=utf-8"),
                                                 ("cache-control", "no-store")], b"internal server error\n")
                    except Exception:  # noqa: BLE001 - nothing more to tell the client
                        self.abort()
            elif req.pending is None:  # a stream the app has finished (or given up on)
                if exc is not None:
                    self.abort()  # a truncated chunked body must not look complete
                elif req.chunked:
                    self.write(b"0\r\n\r\n")
                req.state = _S_DONE
        elif exc is not None:
            log.error("http1: %s %s failed after its response", req.method, req.path, exc_info=exc)
        if req.body is not None:
            # What is left of the body is discarded as it arrives; a client that asked
            # Expect: 100-continue and was never told to go on may not send it: close after.
            if req.body:
                self._unread -= sum(len(c) for c in req.body)
            req.body = None
            if not req.complete and req.expect_continue:
                req.keep_alive = False
        self.settle(req)

    def settle(self, req: _Request) -> None:
        """Let ``req`` go if it is done in every way; then the next one may start."""
        queue = self._queue
        if req.running or req.state != _S_DONE or not queue or queue[0] is not req:
            return
        if not req.keep_alive:
            queue.popleft()
            self._close()
        elif not req.complete:
            self._resume_reading()  # to read (and discard) the rest of its body
        else:
            queue.popleft()
            if queue or self._read_paused:
                self._pump()
            elif self._parsing is None:
                self.deadline = self.server.now + self._idle_timeout
                self.deadline_status = 0

    def _idle(self) -> None:
        if self._parsing is None:
            self.deadline = self.server.now + self._idle_timeout
            self.deadline_status = 0

    # I/O helpers -------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if not self.closed:
            self.transport.write(data)

    async def drain(self) -> None:
        if self.closed:
            raise ClientGone("client closed the connection")
        if not self._write_paused:
            return
        fut = self.loop.create_future()
        self._drain.append(fut)
        await fut

    def disconnected(self) -> asyncio.Future[None]:
        fut = self.loop.create_future()
        if self.closed:
            fut.set_result(None)
        else:
            self._disconnect = [f for f in self._disconnect if not f.done()]
            self._disconnect.append(fut)
        return fut

    def body_read(self, n: int) -> None:
        self._unread -= n
        if self._read_paused and self._unread <= self.limits.unread_body \
                and len(self._queue) <= self.limits.max_pipelined:
            self._resume_reading()

    def _pause_reading(self) -> None:
        if not self._read_paused and not self.closed:
            self._read_paused = True
            self.transport.pause_reading()

    def _resume_reading(self) -> None:
        if self._read_paused and not self.closed:
            self._read_paused = False
            self.transport.resume_reading()

    def _refuse(self, status: int, reason: str) -> None:
        """Answer a request we could not parse or accept, then close (RFC 9112 9.6).

        The close lingers, as nginx's does: we stop sending (FIN) but keep reading and
        dropping for up to LINGER seconds, so a client still sending its request reads
        our answer instead of a reset.
        """
        log.debug("http1: %s from %s: %s", status, self.client, reason)
        self._parsing = None
        if self.closed or self._lingering:
            return
        if not all(r.state == _S_DONE for r in self._queue):  # in the middle of another answer
            self.abort()
            return
        body = f"{reason}\n".encode()
        head = render_head(status, [("content-type", "text/plain; charset=utf-8"),
                                    ("cache-control", "no-store")],
                           b"content-length: %d\r\nconnection: close\r\n" % len(body))
        self.write(head + body)
        if not self.transport.can_write_eof():
            self._close()
            return
        self.transport.write_eof()
        self._lingering = True
        self._queue.clear()
        self.deadline = self.server.now + LINGER
        self.deadline_status = 0

    def _close(self) -> None:
        """Close once what was written has been sent (transport.close flushes first)."""
        if not self.closed:
            self.transport.close()
            self.connection_lost(None)

    def abort(self) -> None:
        if not self.closed:
            self.transport.abort()
            self.connection_lost(None)

    def expire(self) -> None:
        """The sweeper found us past our deadline."""
        if self._lingering:
            self.abort()
            return
        if self.deadline_status == 0:
            self._close()  # keep-alive ran out
            return
        waiting = [r for r in self._queue if not r.complete]
        for req in waiting:  # a body that stopped arriving: the app waiting for it is told
            req.body_error = BadRequest(408, "request body not received in time")
            req._wake()
        if not waiting and self._queue:
            self.deadline = 0.0  # a request is being answered; nothing is overdue after all
            return
        self._refuse(408, "request not received in time")


def _address(addr: Any) -> str:
    if isinstance(addr, tuple) and len(addr) >= 2:
        host, port = addr[0], addr[1]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return ""


# -- the server --------------------------------------------------------------------------


class HTTP1Server:
    """A listening socket and its connections; ``start`` binds, ``close`` drains."""

    def __init__(self, app: App, *, limits: Limits | None = None) -> None:
        self.app = app
        # An app may also offer answer_now(scope, proto): it answers in our stack and returns
        # None, or returns the awaitable (unstarted) that finishes the answer. No coroutine,
        # context copy or task for a request answered at once (OriginApp.answer_now).
        self.answer_now: Callable[[Any, Any], Any] | None = getattr(app, "answer_now", None)
        self.limits = limits or Limits()
        self.loop = asyncio.get_running_loop()
        self.connections: set[_Connection] = set()
        self.closing = False
        self.now = self.loop.time()  # the sweeper's clock, a second coarse: deadlines only
        self._server: Any = None
        self._sweeper: asyncio.Task[None] | None = None
        self.host = ""
        self.port = 0

    async def start(self, host: str, port: int, *, backlog: int = 2048, reuse_port: bool = False) -> None:
        """Listen on ``host:port`` (0: any free port; ``self.port`` says which)."""
        self._server = await self.loop.create_server(
            lambda: _Connection(self), host, port, backlog=backlog, reuse_port=reuse_port or None,
            reuse_address=True,
        )
        bound = self._server.sockets[0].getsockname()
        self.host, self.port = bound[0], bound[1]
        self._sweeper = self.loop.create_task(self._sweep(), name=f"http1 sweeper :{self.port}")

    async def _sweep(self) -> None:
        """Enforce the deadlines (head, body, keep-alive) once a second: no timer per request."""
        while True:
            await asyncio.sleep(1.0)
            now = self.now = self.loop.time()
            for conn in [c for c in self.connections if c.deadline and c.deadline < now]:
                conn.expire()

    async def close(self, timeout: float = 5.0) -> None:
        """Stop accepting, let requests in flight finish (up to ``timeout``), then close."""
        self.closing = True
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections):
            if not conn._queue:
                conn._close()
            else:
                for req in conn._queue:
                    req.keep_alive = False
        deadline = self.loop.time() + timeout
        while self.connections and self.loop.time() < deadline:
            await asyncio.sleep(0.02)
        for conn in list(self.connections):
            conn.abort()
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._server is not None:
            await self._server.wait_closed()
