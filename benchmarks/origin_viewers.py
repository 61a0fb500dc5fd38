"""LL-HLS blocking-reload viewers for ``benchmarks.origin``: many per process, cheap.

    python -m benchmarks.origin_viewers --port 18080 --clients 1700 --core 1 --out r.bin

Each viewer is one HTTP/1.1 keep-alive connection (a bare ``asyncio.Protocol``, no HTTP
library): it fetches the playlist once, then asks for the part named by the playlist's
EXT-X-PRELOAD-HINT with ``?_HLS_msn=M&_HLS_part=N`` (6.2.5.2) and, as soon as the
response is complete, stamps ``time.time()`` and asks for the next one. Request bytes
are formatted once per part index and shared by every connection of the process.

Prints ``ready`` once every viewer holds a blocking request; on a stdin line ``stop``
writes its receipts (``array('d')`` triples: viewer, part index served, receipt time) to
``--out`` and prints ``stats <errors> <timeouts> <cpu seconds>``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import sys
import time
from array import array

import uvloop

from benchmarks.origin_server import PARTS_PER_SEGMENT, PLAYLIST_PATH

_HINT = b'PRELOAD-HINT:TYPE=PART,URI="p'


class _Shared:
    def __init__(self, host: str, port: int) -> None:
        self.host = f"{host}:{port}".encode()
        self.requests: dict[int, bytes] = {}
        self.receipts = array("d")
        self.errors = 0
        self.timeouts = 0
        self.waiting = 0  # viewers with a blocking request out
        self.all_waiting = asyncio.Event()
        self.clients = 0

    def request(self, index: int) -> bytes:
        req = self.requests.get(index)
        if req is None:
            msn, part = divmod(index, PARTS_PER_SEGMENT)
            req = self.requests[index] = (
                f"GET /live/{PLAYLIST_PATH}?_HLS_msn={msn}&_HLS_part={part} HTTP/1.1\r\n".encode()
                + b"Host: " + self.host + b"\r\nUser-Agent: flowcast-bench\r\n\r\n"
            )
        return req


class Viewer(asyncio.Protocol):
    __slots__ = ("shared", "vid", "transport", "buf", "need", "blocking", "status")

    def __init__(self, shared: _Shared, vid: int) -> None:
        self.shared = shared
        self.vid = vid
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.need = -1  # total bytes of the current response once its header is parsed
        self.status = 0
        self.blocking = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.write(  # type: ignore[attr-defined]
            f"GET /live/{PLAYLIST_PATH} HTTP/1.1\r\n".encode() + b"Host: " + self.shared.host + b"\r\n\r\n"
        )

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        while True:
            if self.need < 0:
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    break
                head = buf[:end].lower()
                self.status = int(head[9:12])
                length = 0
                i = head.find(b"content-length:")
                if i >= 0:
                    eol = head.find(b"\r\n", i)
                    length = int(head[i + 15 : eol if eol >= 0 else len(head)])
                self.need = end + 4 + length
            if len(buf) < self.need:
                break
            body, buf = buf[: self.need], buf[self.need :]
            self.need = -1
            self._response(body)
        self.buf = buf

    def _response(self, resp: bytes) -> None:
        shared = self.shared
        now = time.time()
        if self.blocking:
            self.blocking = False
            shared.waiting -= 1
        if self.status != 200:
            if self.status == 503:
                shared.timeouts += 1
            else:
                shared.errors += 1
            self.transport.close()  # type: ignore[union-attr]
            return
        i = resp.rfind(_HINT)
        j = resp.find(b'"', i + len(_HINT))
        msn, _, part = resp[i + len(_HINT) : j - 4].partition(b".")
        nxt = int(msn) * PARTS_PER_SEGMENT + int(part)
        shared.receipts.extend((self.vid, nxt - 1, now))
        self.transport.write(shared.request(nxt))  # type: ignore[union-attr]
        self.blocking = True
        shared.waiting += 1
        if shared.waiting == shared.clients:
            shared.all_waiting.set()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.blocking:
            self.shared.waiting -= 1
            self.shared.errors += 1


async def _run(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    shared = _Shared(args.host, args.port)
    shared.clients = args.clients
    viewers = []
    # Connect in batches so the origin's accept backlog never overflows.
    for start in range(0, args.clients, args.batch):
        batch = range(start, min(args.clients, start + args.batch))
        done = await asyncio.gather(
            *(loop.create_connection(lambda v=args.base + k: Viewer(shared, v), args.host, args.port) for k in batch),
            return_exceptions=True,
        )
        for res in done:
            if isinstance(res, BaseException):
                shared.errors += 1
            else:
                viewers.append(res[0])
    try:
        async with asyncio.timeout(args.ready_timeout):
            await shared.all_waiting.wait()
    except TimeoutError:
        pass
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    print(f"ready {len(viewers)} {shared.waiting} {shared.errors}", flush=True)
    cpu0 = time.process_time()
    while True:
        line = (await reader.readline()).decode().strip()
        if not line or line == "stop":
            break
    cpu = time.process_time() - cpu0
    with open(args.out, "wb") as fh:
        shared.receipts.tofile(fh)
    for transport in viewers:
        transport.close()
    print(f"stats {shared.errors} {shared.timeouts} {cpu:.3f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--clients", type=int, required=True)
    parser.add_argument("--base", type=int, default=0, help="id of this process's first viewer")
    parser.add_argument("--batch", type=int, default=250)
    parser.add_argument("--core", default="1", help="the core to run on, or 'all'")
    parser.add_argument("--ready-timeout", type=float, default=30.0)
    parser.add_argument("--out", required=True)
    parser.add_argument("--sched", choices=("normal", "idle"), default="normal",
                        help="idle: SCHED_IDLE, so an origin process sharing this core runs first")
    args = parser.parse_args()
    if args.core != "all":
        os.sched_setaffinity(0, {int(args.core)})
    if args.sched == "idle":
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    uvloop.run(_run(args))  # the viewers' own cost per response shows in every figure: keep it low


if __name__ == "__main__":
    main()
