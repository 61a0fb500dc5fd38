"""The origin's HTTP/1.1 server (origin/http1.py) over real sockets: framing, pipelining,
limits and timeouts, bad clients, and the eager first step of the app's coroutine.

A small RSGI app stands in for the origin where the point is the server itself; the
origin's own behaviour over this server is tests/origin/test_origin_http.py.
"""

from __future__ import annotations

import asyncio
import contextvars
import re
from collections.abc import Awaitable, Callable
from email.utils import parsedate_to_datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowcast.origin.http1 import HTTP1Server, Limits, render_head, split_target
from origin_http import read_chunk, read_head

# -- a test app ----------------------------------------------------------------------------

seen: contextvars.ContextVar[str] = contextvars.ContextVar("seen", default="unset")


class App:
    """Routes by path: what each route does is what the tests need the app to do."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.disconnected = asyncio.Event()
        self.calls: list[str] = []
        self.parked: list[Callable[[], None]] = []  # how to answer each parked request

    async def __call__(self, scope: Any, proto: Any) -> None:
        path = scope.path
        self.calls.append(path)
        headers = [("content-type", "text/plain")]
        if path == "/hello":
            proto.response_bytes(200, headers, b"hello\n")
        elif path == "/echo":
            body = await proto()
            proto.response_bytes(200, headers, body)
        elif path == "/ignore-body":
            proto.response_bytes(200, headers, b"not read\n")
        elif path == "/held":
            await self.release.wait()
            proto.response_bytes(200, headers, b"released\n")
        elif path == "/stream":
            transport = proto.response_stream(200, headers)
            for chunk in (b"one,", b"two,", b"three"):
                await transport.send_bytes(chunk)
                await asyncio.sleep(0.01)
        elif path == "/parked":
            proto.park()  # answered later, from outside any coroutine (origin: a publish)

            def answer() -> None:
                proto.response_bytes(200, headers, b"unparked\n")
                proto.unpark()

            self.parked.append(answer)
        elif path == "/parked-boom":
            proto.park()

            def fail() -> None:
                proto.unpark(RuntimeError("the parked answer failed"))

            self.parked.append(fail)
        elif path == "/boom":
            raise RuntimeError("the app failed")
        elif path == "/split":
            proto.response_bytes(200, [("x-evil", "a\r\nset-cookie: stolen=1")], b"no\n")
        elif path == "/timeout":
            try:
                async with asyncio.timeout(0.05):  # entered in the eager first step
                    await asyncio.Event().wait()
            except TimeoutError:
                proto.response_bytes(504, headers, b"timed out\n")
        elif path == "/context":
            before = seen.get()
            seen.set("set by a request")
            await asyncio.sleep(0)
            proto.response_bytes(200, headers, before.encode())
        elif path == "/wait-disconnect":
            await proto.client_disconnect()
            self.disconnected.set()
        elif path == "/scope":
            text = f"{scope.method} {scope.path} {scope.query_string} {scope.http_version} {scope.headers.get('x-a')}"
            proto.response_bytes(200, headers, text.encode())
        else:
            proto.response_bytes(404, headers, b"not found\n")


class NowApp(App):
    """An app that answers some requests in the server's stack (``answer_now``)."""

    def answer_now(self, scope: Any, proto: Any) -> Awaitable[None] | None:
        path = scope.path
        headers = [("content-type", "text/plain")]
        if path == "/now":
            proto.response_bytes(200, headers, b"now\n")
            return None
        if path == "/now-boom":
            raise RuntimeError("answer_now failed")
        if path == "/now-wait":
            return self._released(proto)  # unstarted: the server drives it
        return self(scope, proto)  # the rest: the coroutine, as for any RSGI app

    async def _released(self, proto: Any) -> None:
        await self.release.wait()
        proto.response_bytes(200, [("content-type", "text/plain")], b"waited\n")


def serve(scenario: Callable[[HTTP1Server, App], Awaitable[None]], limits: Limits | None = None,
          app_class: type[App] = App) -> None:
    async def main() -> None:
        app = app_class()
        server = HTTP1Server(app, limits=limits)
        await server.start("127.0.0.1", 0)
        try:
            await asyncio.wait_for(scenario(server, app), 20)
        finally:
            await server.close(1.0)

    asyncio.run(main())


async def connect(server: HTTP1Server) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", server.port)


async def response(reader: asyncio.StreamReader, *, head: bool = False) -> tuple[int, dict[str, str], bytes]:
    """One response: status, headers (last value wins), body (content-length or chunked;
    none for a HEAD request's)."""
    status, headers = await read_head(reader)
    if head or status in (100, 204, 304):
        return status, headers, b""
    if headers.get("transfer-encoding") == "chunked":
        body = b""
        while chunk := await read_chunk(reader):
            body += chunk
        return status, headers, body
    return status, headers, await reader.readexactly(int(headers.get("content-length", "0")))


async def closed(reader: asyncio.StreamReader, timeout: float = 3.0) -> bool:
    try:
        return await asyncio.wait_for(reader.read(1), timeout) == b""
    except (TimeoutError, ConnectionError):
        return False


GET = b"GET %s HTTP/1.1\r\nHost: t\r\n\r\n"


# -- framing -----------------------------------------------------------------------------


def test_keep_alive_serves_many_requests_on_one_connection_with_a_date() -> None:
    async def scenario(server: HTTP1Server, app: App) -> None:
        reader, writer = await connect(server)
        for _ in range(3):
            writer.write(GET % b"/hello")
            status, headers, body = await response(reader)
            assert (status, body) == (200, b"hello\n")
            assert headers["content-length"] == "6" and "connection" not in headers
            assert parsedate_to_datetime(headers["date"]).tzinfo is not None  # RFC 9110 5.6.7
        writer.close()

    serve(scenario)


def test_pipelined_requests_are_answered_in_order_behind_a_held_one() -> None:
    async def scenario(server: HTTP1Server, app: App) -> None:
        reader, writer = await connect(server)
        writer.write(GET % b"/held" + GET % b"/hello" + GET % b"/hello")
        await asyncio.sleep(0.2)
        assert app.calls == ["/held"]  # the next ones wait for their turn
        app.release.set()
        got = [await response(reader) for _ in range(3)]
        assert [b for _, _, b in got] == [b"released\n", b"hello\n", b"hello\n"]
        writer.close()

    serve(scenario)


def test_parked_requests_are_answered_from_a_callback_in_order() -> None:
    async def scenario(server: HTTP1Server, app: App) -> None:
        reader, writer = await connect(server)
        writer.write(GET % b"/parked" + GET % b"/hello")
        other_reader, other_writer = await connect(server)
        other_writer.write(GET % b"/parked-boom" + GET % b"/hello")
        await asyncio.sleep(0.2)
        assert app.calls == ["/parked", "/parked-boom"]  # returned unanswered; the next wait
        assert len(app.parked) == 2
        for answer in app.parked:
            asyncio.get_running_loop().call_soon(answer)  # the way the origin's store calls back
        assert [b for _, _, b in [await response(reader) for _ in range(2)]] == [b"unparked\n", b"hello\n"]
        status, headers, _ = await response(other_reader)
        assert status == 500 and headers.get("connection") == "close"  # failed unanswered: 500
        assert await closed(other_reader)
        writer.close()
        other_writer.close()

    serve(scenario)


def test_http10_closes_unless_asked_to_keep_alive() -> None:
    async def scenario(server: HTTP1Server, app: App) -> None:
        reader, writer = await connect(server)
        writer.write(b"GET /hello HTTP/1.0\r\n\r\n")  # no Host: fine in 1.0
        status, headers, _ = await response(reader)
        assert status == 200 and headers["connection"] == "close"
        assert await closed(reader)
        reader, writer = await connect(server)
        writer.write(b"GET /hello HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        status, headers, _ = await response(reader)
        assert headers["connection"] == "keep-alive"
        writer.write(b"GET /stream HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        head = await reader.readuntil(b"\r\n\r\n")
        assert b"transfer-encoding" not in head.lower()  # no chunked coding in 1.0: the body ends the connection
        assert await reader.read() == b"one,two,three"

    serve(scenario)


def test_streamed_response_is_chunked_and_head_gets_no_body() -> None:
    async def scenario(server: HTTP1Server, app: App) -> None:
        reader, writer = await connect(server)
        writer.write(GET % b"/stream")
        status, headers, body = await response(reader)
        assert headers["transfer-encoding"] == "chunked" and body == b"one,two,three"
        writer.write(b"HEAD /hello HTTP/1.1\r\nHost: t\r\n\r\n" + GET % b"/hello")
        status, headers, body = await response(reader, head=True)
        assert headers["content-length"] == "6"
        # The HEAD response had no body: the next bytes are the next response's status line.
        assert (await reader.readuntil(b"\r\n")).startswith(b"HTTP/1.1 200")
        writer.close()

    serve(scenario)


def test_request_body_by_length_and_chunked_and_expect_continue() -> None:
    async def scenario(server: HTTP1Server, app: App) -> None:
        reader, writer = await connect(server)
        writer.write(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello")
        assert (await response(reader))[2] == b"hello"
        writer.write(b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
        assert (await response(reader))[2] == b"abcde"
        writer.write(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
        status, _, _ = await response(reader)
        assert status == 100  # told to go on before sending the body (RFC 9110 10.1.1)
        writer.write(b"body")
        assert (await response(reader))[2] == b"body"
        writer.close()

    serve(scenario)


def test_an_unread_body_is_skipped_and_an_unsent_continue_ends_the_connection() -> None:
    async def scenario(server: HTTP1Server, app: App) -> None:
        reader, writer = await connect(server)
        writer.write(b"POST /ignore-body HTTP/1.1\r\nHost: t\r\nContent-Length: 7\r\n\r\nignored" + GET % b"/hello")
        assert (await response(reader))[2] == b"not read\n"
        assert (await response(reader))[2] == b"hello\n"  # the body was not taken for a request
        writer.write(b"POST /ignore-body HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
        status, headers, _ = await response(reader)
        assert status == 200 and headers["connection"] == "close"
        assert await closed(reader)

    serve(scenario)


def test_scope_is_what_rsgi_apps_read() -> None:
    async def scenario(server: HTTP1Server, app: App) -> None:
        reader, writer = await connect(server)
        writer.write(b"GET http://example.org/sc%6Fpe?q=%20x HTTP/1.1\r\nHost: t\r\nX-A: 1\r\nx-a: 2\r\n\r\n")
        # absolute-form reduced to its path, which is percent-decoded; the query is left raw
        assert (await response(reader))[2] == b"GET /scope q=%20x 1.1 1"
        # the version however the connection is kept alive (the server only asks the parser
        # for it when a Connection header is there or the connection is not kept alive)
        for line, version in ((b"HTTP/1.1\r\nHost: t\r\nConnection: keep-alive", b"1.1"),
                              (b"HTTP/1.0\r\nConnection: keep-alive", b"1.0"),
                              (b"HTTP/1.0", b"1.0")):
            reader, writer = await connect(server)
            writer.write(b"GET /scope " + line + b"\r\n\r\n")
            assert (await response(reader))[2] == b"GET /scope  " + version + b" None"
            writer.close()

    serve(scenario)


# -- bad requests, limits, timeouts ----------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"GET /hello HTTP/1.1\r\n\r\n", 400),  # HTTP/1.1 without Host (RFC 9112 3.2)
        (b"BLAH\r\n\r\n", 400),
        (b"GET /hello HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        (b"GET /hello HTTP/1.1\r\nHost: t\r\nX: " + b"a" * 40_000 + b"\r\n\r\n", 431),
        (b"GET /" + b"a" * 40_000 + b" HTTP/1.1\r\nHost: t\r\n\r\n", 414),
        (b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 99999999999\r\n\r\n", 413),
    ],
    ids=["no-host", "garbage", "smuggling", "big-header", "long-target", "big-body"],
)
def test_bad_requests_get_their_status_and_the_connection_closes(raw: bytes, status: int) -> None:
    async def scenario(server: HTTP1Server, app: App) -> None:
        reader, writer = await connect(server)
        writer.write(raw)
        got, headers, _ = await response(reader)
        assert got == status and headers["connection"] == "close"
        assert await closed(reader)
        assert "/echo" not in app.calls and "/hello" not in app.calls
        reader, writer = await connect(server)  # and the server is fine
        writer.write(GET % b"/hello")
        assert (await response(reader))[0] == 200
        writer.close()

    serve(scenario)


def test_a_header_split_over_many_reads_is_still_bounded() -> None:
    async def scenario(server: HTTP1Server, app: App) -> None:
        reader, writer = await connect(server)
        writer.write(b"GET /hello HTTP/1.1\r\nHost: t\r\nX-Long: ")
        for _ in range(60):  # 60 x 1 KB of one header value, each its own read
            writer.write(b"b" * 1024)
            await writer.drain()
            await asyncio.sleep(0.005)
        status, _, _ = await response(reader)
        assert status == 431

    serve(scenario)


def test_slow_head_and_idle_connections_are_timed_out() -> None:
    async def scenario(server: HTTP1Server, app: App) -> None:
        slow_r, slow_w = await connect(server)
        slow_w.write(b"GET /hello HTTP/1.1\r\nHost: t\r\n")  # and never the blank line
        idle_r, idle_w = await connect(server)
        idle_w.write(GET % b"/hello")
        assert (await response(idle_r))[0] == 200
        status, _, _ = await asyncio.wait_for(response(slow_r), 5)
        assert status == 408
        assert await closed(idle_r, 5)  # keep-alive ran out, nothing sent

    serve(scenario, Limits(header_timeout=1.0, idle_timeout=2.0))


def test_pipelining_flood_is_cut_off_and_others_are_served() -> None:
    async def scenario(server: HTTP1Server, app: App) -> None:
        reader, writer = await connect(server)
        writer.write(GET % b"/held" + (GET % b"/hello") * 500)
        assert await closed(reader)
        other_r, other_w = await connect(server)
        other_w.write(GET % b"/hello")
        assert (await response(other_r))[0] == 200
        assert app.calls.count("/hello") == 1  # none of the flood's were run

    serve(scenario, Limits(max_pipelined=4))


def test_upgrade_is_answered_as_http11_then_closed() -> None:
    async def scenario(server: HTTP1Server, app: App) -> None:
        reader, writer = await connect(server)
        writer.write(b"GET /hello HTTP/1.1\r\nHost: t\r\nConnection: Upgrade, HTTP2-Settings\r\n"
                     b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\nPRI * HTTP/2.0\r\n")
        status, _, body = await response(reader)
        assert (status, body) == (200, b"hello\n")
        assert await closed(reader)

    serve(scenario)


# -- the app misbehaving --------------------------------------------------------------------


def test_app_failure_is_a_500_and_a_split_header_never_leaves() -> None:
    async def scenario(server: HTTP1Server, app: App) -> None:
        for path in (b"/boom", b"/split"):
            reader, writer = await connect(server)
            writer.write(GET % path)
            status, headers, _ = await response(reader)
            assert status == 500 and headers["connection"] == "close"
            assert "set-cookie" not in headers and "x-evil" not in headers
            assert await closed(reader)

    serve(scenario)


def test_eager_first_step_supports_timeouts_and_keeps_contexts_apart() -> None:
    async def scenario(server: HTTP1Server, app: App) -> None:
        reader, writer = await connect(server)
        writer.write(GET % b"/timeout")
        assert (await response(reader))[0] == 504  # the timeout entered in the eager step fired
        for _ in range(2):
            writer.write(GET % b"/context")
            assert (await response(reader))[2] == b"unset"  # nothing leaks from one request to the next
        writer.close()

    serve(scenario)


def test_answer_now_answers_in_order_beside_coroutines_and_its_failure_is_a_500() -> None:
    async def scenario(server: HTTP1Server, app: App) -> None:
        reader, writer = await connect(server)
        writer.write(GET % b"/now" + GET % b"/now-wait" + GET % b"/now" + GET % b"/hello")
        assert (await response(reader))[2] == b"now\n"
        await asyncio.sleep(0.1)
        assert app.calls == []  # nothing reached __call__: the rest wait behind /now-wait
        app.release.set()
        assert [(await response(reader))[2] for _ in range(3)] == [b"waited\n", b"now\n", b"hello\n"]
        assert app.calls == ["/hello"]
        writer.write(GET % b"/now-boom")
        status, headers, _ = await response(reader)
        assert status == 500 and headers["connection"] == "close"
        assert await closed(reader)

    serve(scenario, app_class=NowApp)


def test_client_disconnect_wakes_a_waiting_app() -> None:
    async def scenario(server: HTTP1Server, app: App) -> None:
        reader, writer = await connect(server)
        writer.write(GET % b"/wait-disconnect")
        await asyncio.sleep(0.1)
        writer.close()
        await asyncio.wait_for(app.disconnected.wait(), 3)

    serve(scenario)


# -- sans-I/O pieces ------------------------------------------------------------------------


def test_render_head_refuses_cr_lf_and_bad_status() -> None:
    head = render_head(200, [("a", "1"), ("b", "2")], b"content-length: 0\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\na: 1\r\nb: 2\r\ncontent-length: 0\r\ndate: ")
    assert head.endswith(b" GMT\r\n\r\n")
    with pytest.raises(ValueError):
        render_head(200, [("a", "1\nb: 2")])
    with pytest.raises(ValueError):
        render_head(200, [("a\r", "1")])
    with pytest.raises(ValueError):
        render_head(2000, [])
    assert render_head(299, []).startswith(b"HTTP/1.1 299 \r\n")


def test_split_target_forms() -> None:
    assert split_target(b"/live/a%2Fb/x.m3u8?_HLS_msn=3&t=%20") == ("/live/a/b/x.m3u8", "_HLS_msn=3&t=%20")
    assert split_target(b"https://cdn.example/p?q#frag") == ("/p", "q")
    assert split_target(b"http://cdn.example") == ("/", "")
    assert split_target(b"*") == ("*", "")
    with pytest.raises(Exception, match="neither origin-form"):
        split_target(b"ftp://x/y")


class _Sink:
    """A transport that keeps what is written, for feeding a connection bytes directly."""

    def __init__(self) -> None:
        self.out = bytearray()
        self.closed = False

    def write(self, data: bytes) -> None:
        self.out += data

    def writelines(self, parts: Any) -> None:
        for p in parts:
            self.out += p

    def close(self) -> None:
        self.closed = True

    abort = close

    def can_write_eof(self) -> bool:
        return False

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 1) if name in ("peername", "sockname") else None


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600), st.integers(min_value=1, max_value=64))
def test_any_bytes_get_an_answer_or_a_close_never_an_escape(data: bytes, step: int) -> None:
    from flowcast.origin.http1 import _Connection

    async def main() -> None:
        app = App()
        server = HTTP1Server(app)
        conn = _Connection(server)
        sink = _Sink()
        conn.connection_made(sink)
        for i in range(0, len(data), step):  # in pieces, as reads would deliver them
            conn.data_received(data[i:i + step])
        await asyncio.sleep(0)
        statuses = [int(m) for m in re.findall(rb"HTTP/1\.1 (\d{3}) ", bytes(sink.out))]
        assert all(s in (200, 400, 404, 413, 414, 429, 431, 500) for s in statuses)

    asyncio.run(main())
