"""The origin under test for ``benchmarks.origin``: one process, pinned to one core.

    python -m benchmarks.origin_server --core 0 --port 18080 --mode static
    python -m benchmarks.origin_server --core 0 --port 18080 --mode fanout

``static``: the store holds a ~2 KB live media playlist and a 30 KB part (the same bytes
that nginx serves from files, see :func:`write_fixture_tree`); prints ``ready`` and serves
until stdin closes.

``fanout``: the store holds a live LL-HLS playlist (0.2 s parts, 10 parts per 2 s
segment); prints ``ready``, then on a stdin line ``go <n>`` publishes ``n`` new parts
(a new playlist rendering each) every 200 ms from a task in the origin's own loop, as the
packager does, printing ``pub <index> <time.time()>`` for each, then ``done``. The
receipt side is in ``benchmarks.origin_viewers``; both use ``time.time()`` on the same
machine, so publish -> served is a plain difference.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import sys
import time
from pathlib import Path

STREAM = "bench/v"
PLAYLIST_PATH = f"{STREAM}/index.m3u8"
PART_PATH = f"{STREAM}/part.m4s"
PARTS_PER_SEGMENT = 10
PART_TARGET = 0.2
TARGET_DURATION = 2.0
WINDOW_SEGMENTS = 8  # complete segments listed (parts for the last two), ~2 KB in all
PART_BYTES = 30 * 1024


def position(index: int) -> tuple[int, int]:
    """Linear part index -> (msn, part)."""
    return divmod(index, PARTS_PER_SEGMENT)


def render_playlist(index: int) -> bytes:
    """An LL-HLS media playlist whose newest part is ``index`` (synthetic, ~2 KB).

    The preload hint names the next part as ``p<msn>.<part>.m4s``: viewers read their
    next blocking request off it.
    """
    msn, part = position(index)
    first = max(0, msn - WINDOW_SEGMENTS)
    lines = [
        "#EXTM3U",
        "#EXT-X-VERSION:9",
        f"#EXT-X-TARGETDURATION:{int(TARGET_DURATION)}",
        f"#EXT-X-PART-INF:PART-TARGET={PART_TARGET:.5f}",
        "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=0.60000,CAN-SKIP-UNTIL=12.00000",
        f"#EXT-X-MEDIA-SEQUENCE:{first}",
        '#EXT-X-MAP:URI="init.mp4"',
    ]
    for seg in range(first, msn + 1):
        last_part = PARTS_PER_SEGMENT - 1 if seg < msn else part
        if seg >= msn - 1:  # parts only for the last two segments (6.2.2 SHOULD)
            for p in range(last_part + 1):
                indep = ",INDEPENDENT=YES" if p == 0 else ""
                lines.append(f'#EXT-X-PART:DURATION={PART_TARGET:.5f},URI="p{seg}.{p}.m4s"{indep}')
        if seg < msn:
            pdt = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(1_790_000_000 + seg * TARGET_DURATION))
            lines.append(f"#EXT-X-PROGRAM-DATE-TIME:{pdt}.000Z")
            lines.append(f"#EXTINF:{TARGET_DURATION:.5f},")
            lines.append(f"s{seg}.m4s")
    nmsn, npart = position(index + 1)
    lines.append(f'#EXT-X-PRELOAD-HINT:TYPE=PART,URI="p{nmsn}.{npart}.m4s"')
    for other in ("480p", "240p"):
        lines.append(f'#EXT-X-RENDITION-REPORT:URI="../{other}/index.m3u8",LAST-MSN={msn},LAST-PART={part}')
    return ("\n".join(lines) + "\n").encode()


def static_playlist() -> bytes:
    """The fixed ~2 KB playlist of the requests/s comparison (last part of a segment)."""
    return render_playlist(40 * PARTS_PER_SEGMENT + PARTS_PER_SEGMENT - 1)


def static_part() -> bytes:
    # Deterministic, incompressible-looking bytes; the same in both servers.
    import random

    return random.Random(7).randbytes(PART_BYTES)


def write_fixture_tree(root: Path) -> dict[str, int]:
    """Write the static objects under ``root/live/...`` for nginx; returns path -> size."""
    out = {}
    for rel, data in ((PLAYLIST_PATH, static_playlist()), (PART_PATH, static_part())):
        target = root / "live" / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        out[f"/live/{rel}"] = len(data)
    return out


def _publish(store, index: int) -> None:  # noqa: ANN001 - MediaStore, imported late
    msn, part = position(index)
    store.put_playlist(
        PLAYLIST_PATH,
        full=render_playlist(index),
        delta=None,
        msn=msn,
        part=part,
        target_duration=TARGET_DURATION,
        part_target=PART_TARGET,
        ended=False,
    )


def recording_app_class(served: dict[tuple[int, int], list[float]]):  # noqa: ANN201
    """OriginApp that notes, per playlist position, how many held reloads that publish
    released and when it wrote the last of their answers: publish -> last held answer handed
    to the kernel, on the origin's side, free of the viewers' own time to read it (they share
    a core). A reload that arrives after its part was published is answered at once and is
    not counted here (the viewers' own figure has it). Both ways of holding are noted: parked
    (our server: the answer is written by the store's callback) and awaited (granian)."""
    from flowcast.origin.app import OriginApp

    class RecordingOriginApp(OriginApp):
        def note(self, key: str) -> None:
            pl = self.store.playlist(key)
            if pl is not None:
                entry = served.get((pl.msn, pl.part))
                if entry is None:
                    served[(pl.msn, pl.part)] = [1, time.time()]
                else:
                    entry[0] += 1
                    entry[1] = time.time()

        async def _playlist_held(self, scope, proto, key, pl, msn, part, skip, head):  # noqa: ANN001, ANN202
            await super()._playlist_held(scope, proto, key, pl, msn, part, skip, head)
            self.note(key)

        def _playlist_parked_answer(self, parked, newest, exc):  # noqa: ANN001, ANN202
            super()._playlist_parked_answer(parked, newest, exc)
            self.note(PLAYLIST_PATH)  # the one playlist the viewers wait on

    return RecordingOriginApp


async def _run(args: argparse.Namespace) -> None:
    from flowcast.origin.app import OriginApp
    from flowcast.origin.metrics import OriginMetrics
    from flowcast.origin.server import serve, tune_gc
    from flowcast.origin.store import MediaStore

    static = Path(args.tmp) / "web"
    static.mkdir(parents=True, exist_ok=True)
    store = MediaStore()
    metrics = OriginMetrics()
    served: dict[tuple[int, int], list[float]] = {}
    cls = recording_app_class(served) if args.mode == "fanout" else OriginApp
    app = cls(store, static_dir=static, vendor_dirs={}, metrics=metrics)
    index = 40 * PARTS_PER_SEGMENT  # start mid-stream: the window is full
    if args.mode == "static":
        msn, part = position(40 * PARTS_PER_SEGMENT + PARTS_PER_SEGMENT - 1)
        store.put_playlist(
            PLAYLIST_PATH,
            full=static_playlist(),
            delta=None,
            msn=msn,
            part=part,
            target_duration=TARGET_DURATION,
            part_target=PART_TARGET,
            ended=False,
        )
        store.put(PART_PATH, static_part(), "part")
    else:
        _publish(store, index)

    handle = await serve(app, "127.0.0.1", args.port, backlog=args.backlog, server=args.server,
                         reuse_port=args.workers > 1)
    pool = None
    if args.workers > 1:
        # origin.workers: the other processes share the port and serve from replicas.
        from flowcast.config import FlowcastConfig
        from flowcast.origin.workers import WorkerPool, worker_hello

        cfg = FlowcastConfig.model_validate({"origin": {"port": args.port}, "telemetry": {"enabled": False}})
        pool = WorkerPool(args.workers - 1, store, app, worker_hello(cfg.model_dump_json(), None, None))
        await pool.start()
        for k, pid in enumerate(pool.pids):
            core = args.worker_cores[k % len(args.worker_cores)]
            for tid in os.listdir(f"/proc/{pid}/task"):  # every thread (granian's Rust ones too)
                os.sched_setaffinity(int(tid), {core})
    if args.gc == "tuned":
        tune_gc()  # as flowcast up does once started
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    print(f"ready {os.getpid()}", flush=True)
    try:
        while True:
            line = (await reader.readline()).decode().split()
            if not line or line[0] == "quit":
                break
            if line[0] == "go" and args.mode == "fanout":
                count = int(line[1])
                period = float(line[2]) if len(line) > 2 else PART_TARGET
                # Absolute schedule (no drift); a late tick publishes at once.
                start = loop.time() + period
                for k in range(count):
                    delay = start + k * period - loop.time()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    index += 1
                    t = time.time()
                    _publish(store, index)
                    print(f"pub {index} {t:.6f} {loop.time() - (start + k * period):.6f}", flush=True)
                await asyncio.sleep(1.0)  # the last part's answers
                for (msn, part), (count, last) in sorted(served.items()):
                    print(f"served {msn * PARTS_PER_SEGMENT + part} {count} {last:.6f}", flush=True)
                served.clear()
                print("done", flush=True)
    finally:
        if pool is not None:
            await pool.stop()
        await handle.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--core", type=int, default=0)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--mode", choices=("static", "fanout"), default="static")
    parser.add_argument("--backlog", type=int, default=4096)
    parser.add_argument("--tmp", default="/tmp")
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="uvloop")
    parser.add_argument("--gc", choices=("tuned", "default"), default="tuned",
                        help="tuned: origin.server.tune_gc() after start-up, as flowcast up does")
    parser.add_argument("--server", choices=("flowcast", "granian"), default="flowcast",
                        help="the HTTP/1.1 server hosting the app: ours (origin/http1.py) or granian's")
    parser.add_argument("--workers", type=int, default=1, help="origin processes sharing the port (origin.workers)")
    parser.add_argument("--worker-cores", type=lambda v: [int(c) for c in v.split(",")], default=[1],
                        help="cores for the worker processes (round robin)")
    args = parser.parse_args()
    # Pin before granian starts its runtime threads: they inherit the main thread's mask.
    os.sched_setaffinity(0, {args.core})
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if args.loop == "uvloop":
        import uvloop

        uvloop.run(_run(args))
    else:
        asyncio.run(_run(args))
    # granian's runtime threads can panic ("cannot unwind") if they are still around
    # while the interpreter finalizes; the server has stopped, so leave at once.
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
