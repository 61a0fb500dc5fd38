"""The origin's capacity on one core, side by side with nginx, in one run.

    python -m benchmarks.origin                 # (a) and (b), prints markdown tables
    python -m benchmarks.origin --reps 5 --profile  # + py-spy of the origin at the largest fan-out
    python -m benchmarks.origin --workers 1,2 --scale-workers 1,2   # + origin.workers

(a) Requests/s for a ~2 KB live playlist and a 30 KB part. Our origin (one process,
``benchmarks.origin_server``: store filled once) hosted by each of ``--servers``: our own
HTTP/1.1 server (``flowcast``, origin/http1.py, what ``flowcast up`` serves plain HTTP
with) and granian (what it serves TLS and HTTP/2 with); and Debian's nginx (one worker,
``open_file_cache``, no access log, keep-alive, the same bytes from a temp dir and the
same CORS/cache headers added). All pinned to ``--server-core``; ``wrk`` pinned to the
other core drives each in turn, ``--reps`` times, interleaved; medians and the ratio
origin/nginx are reported, in requests/s and in requests per CPU-second of the server
process tree (/proc): on a shared machine the server rarely gets its whole core, and the
second ratio is the one a dedicated core would show.

(b) LL-HLS blocking-reload fan-out: N viewers (``benchmarks.origin_viewers``, spread
over ``--viewer-procs`` processes on the other core) each hold
``?_HLS_msn=M&_HLS_part=N`` for the next part; a task in the origin's loop publishes a
new part every 200 ms. Per publish: publish (``time.time()`` in the origin, just before
``put_playlist``) to the last viewer's complete response (``time.time()`` in the viewer);
p50/p99 over the publishes, and the share of viewers served every part, for each of
``--fanout-servers``; and the origin's CPU per response, which contention on the shared
core does not inflate the way it inflates wall-clock figures.

``--loop`` picks the origin's event loop (``uvloop``, as ``flowcast up`` runs, or the stdlib
``asyncio``). ``--workers 1,2`` runs (b) with that many origin processes (``origin.workers``:
the main one on ``--server-core``, workers on ``--worker-cores``). (c) ``--scale-workers
1,2``: requests/s for the playlist with 1 and 2 origin processes, wrk on both cores, so the
whole machine is under load and the gain of a second process shows.

Every load loop is bounded (wrk ``-d``, a fixed number of publishes, timeouts on every
wait) and only 127.0.0.1 is used. The load average is printed next to every figure: the
machine is shared.
"""

from __future__ import annotations

import argparse
import os
import platform
import queue
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from array import array
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.origin_server import PART_PATH, PLAYLIST_PATH, write_fixture_tree  # noqa: E402
from flowcast.origin.app import _CORS  # noqa: E402 - the exact headers the origin sends
from flowcast.origin.cache import CachePolicy  # noqa: E402

PY = sys.executable
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def loadavg() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def pin(core: int | None):  # noqa: ANN201 - a preexec_fn
    """Pin to one core; None: every core of the machine."""
    cores = {core} if core is not None else set(range(os.cpu_count() or 1))
    return lambda: os.sched_setaffinity(0, cores)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of ``pid`` and its children (nginx: master + worker)."""
    total = cpu_seconds(pid)
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        children = []
    return total + sum(cpu_seconds(int(c)) for c in children)


def cpu_pressure() -> str:
    """``some avg10`` of /proc/pressure/cpu: % of time runnable tasks waited for a CPU."""
    try:
        return Path("/proc/pressure/cpu").read_text().split()[1].split("=")[1] + "%"
    except (OSError, IndexError):
        return "?"


# -- the two servers --------------------------------------------------------------------


class Origin:
    """``benchmarks.origin_server`` as a child process, driven over its stdin/stdout."""

    def __init__(self, mode: str, core: int, tmp: Path, server: str = "flowcast", workers: int = 1,
                 worker_cores: str = "1", loop: str = "uvloop") -> None:
        self.port = free_port()
        self.workers = workers
        self.proc = subprocess.Popen(
            [PY, "-m", "benchmarks.origin_server", "--mode", mode, "--core", str(core), "--port", str(self.port),
             "--tmp", str(tmp), "--server", server, "--workers", str(workers), "--worker-cores", worker_cores,
             "--loop", loop],
            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            env={**os.environ, "PYTHONPATH": f"{ROOT / 'src'}:{ROOT}"},
        )
        # A reader thread: select() on a buffered pipe misses lines already buffered.
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        line = self.readline(30)
        if not line.startswith("ready"):
            raise RuntimeError(f"origin did not start: {line!r}")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _read(self) -> None:
        for line in self.proc.stdout:  # type: ignore[union-attr]
            self.lines.put(line.strip())
        self.lines.put("eof")

    def readline(self, timeout: float) -> str:
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError("origin did not answer") from None

    def send(self, line: str) -> None:
        self.proc.stdin.write(line + "\n")  # type: ignore[union-attr]
        self.proc.stdin.flush()  # type: ignore[union-attr]

    def stop(self) -> None:
        try:
            self.send("quit")
            self.proc.wait(10)
        except Exception:  # noqa: BLE001
            self.proc.kill()
            self.proc.wait(5)


NGINX_CONF = """\
worker_processes 1;
worker_cpu_affinity {mask};
daemon off;
master_process on;
pid {tmp}/nginx.pid;
{user}
events {{ worker_connections 8192; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_timeout 65s;
    keepalive_requests 1000000;
    open_file_cache max=1000 inactive=60s;
    open_file_cache_valid 60s;
    open_file_cache_errors on;
    etag on;
    client_body_temp_path {tmp}/client_body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    types {{ application/vnd.apple.mpegurl m3u8; video/iso.segment m4s; }}
    server {{
        listen 127.0.0.1:{port};
        root {tmp}/www;
        location ~ \\.m3u8$ {{
            add_header Cache-Control "{cc_playlist}";
            add_header Vary "Accept-Encoding";
{cors}
        }}
        location ~ \\.m4s$ {{
            add_header Cache-Control "{cc_part}";
{cors}
        }}
    }}
}}
"""


class Nginx:
    """Debian's nginx: one worker pinned to ``core``, serving the fixture tree."""

    def __init__(self, core: int, tmp: Path) -> None:
        self.port = free_port()
        self.tmp = tmp
        www = tmp / "www"
        write_fixture_tree(www)
        for d in [tmp, *www.rglob("*")]:
            d.chmod(0o755 if d.is_dir() else 0o644)
        cache = CachePolicy()
        cors = "\n".join(f'            add_header {k} "{v}";' for k, v in _CORS)
        conf = NGINX_CONF.format(
            mask=bin(1 << core)[2:],
            tmp=tmp,
            port=self.port,
            user="user root;" if os.geteuid() == 0 else "",
            cc_playlist=cache.playlist(2.0, blocking=False, ended=False),
            cc_part=cache.media(_part_kind(), held=False, target_duration=2.0),
            cors=cors,
        )
        (tmp / "nginx.conf").write_text(conf)
        self.proc = subprocess.Popen(
            [NGINX, "-p", str(tmp), "-c", str(tmp / "nginx.conf"), "-e", str(tmp / "error.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=pin(core),
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                urllib.request.urlopen(f"{self.url}/live/{PLAYLIST_PATH}", timeout=1).read()
                break
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("nginx did not start: " + (tmp / "error.log").read_text()) from None
                time.sleep(0.05)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.proc.terminate()  # SIGTERM: fast shutdown of master and worker
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


def _part_kind():  # noqa: ANN202
    from flowcast.origin.store import ResourceKind

    return ResourceKind.PART


def version(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
    except OSError:
        return "?"
    return (out.stdout + out.stderr).strip().splitlines()[0] if (out.stdout + out.stderr).strip() else "?"


# -- (a) requests/s ---------------------------------------------------------------------


def wrk(url: str, core: int, threads: int, conns: int, seconds: float, pid: int | None = None
        ) -> tuple[float, int, float]:
    """(requests/s, non-2xx responses, requests per server CPU second)."""
    cpu0 = tree_cpu_seconds(pid) if pid else 0.0
    out = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{conns}", f"-d{seconds:g}s", "--timeout", "5s", url],
        capture_output=True, text=True, timeout=seconds + 30, preexec_fn=pin(core),
    ).stdout
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if m is None:
        raise RuntimeError(f"wrk output not understood:\n{out}")
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errs = re.search(r"Socket errors:.*", out)
    if errs:
        print(f"  wrk: {errs.group(0)}", file=sys.stderr)
    rps = float(m.group(1))
    cpu = tree_cpu_seconds(pid) - cpu0 if pid else 0.0
    per_cpu = rps * seconds / cpu if cpu > 0 else 0.0
    return rps, int(bad.group(1)) if bad else 0, per_cpu


def requests_per_second(args: argparse.Namespace, tmp: Path) -> list[dict]:
    origins = {name: Origin("static", args.server_core, tmp / f"origin-{name}", name, loop=args.loop)
               for name in args.servers}
    nginx = Nginx(args.server_core, tmp / "nginx")
    origin = origins[args.servers[0]]
    rows = []
    try:
        servers = {**origins, "nginx": nginx}
        objects = {"playlist": f"/live/{PLAYLIST_PATH}", "part": f"/live/{PART_PATH}"}
        sizes = {
            name: len(urllib.request.urlopen(f"{origin.url}{path}", timeout=5).read())
            for name, path in objects.items()
        }
        for name, path in objects.items():
            n_size = len(urllib.request.urlopen(f"{nginx.url}{path}", timeout=5).read())
            assert n_size == sizes[name], (name, n_size, sizes[name])
        for obj, path in objects.items():
            results: dict[str, list[float]] = defaultdict(list)
            per_cpu: dict[str, list[float]] = defaultdict(list)
            loads: list[str] = []
            for srv in servers.values():  # warm-up, not counted
                wrk(srv.url + path, args.client_core, args.wrk_threads, args.wrk_conns, 2)
            for rep in range(args.reps):
                for label, srv in servers.items():
                    la = loadavg()
                    rps, bad, rpc = wrk(srv.url + path, args.client_core, args.wrk_threads, args.wrk_conns,
                                        args.wrk_seconds, srv.proc.pid)
                    results[label].append(rps)
                    per_cpu[label].append(rpc)
                    loads.append(la)
                    print(f"  (a) {obj:8} rep {rep + 1} {label:8} {rps:9.0f} req/s {rpc:9.0f} req/CPU-s "
                          f"non-2xx {bad}  load {la} cpu-psi {cpu_pressure()}", file=sys.stderr, flush=True)
            n = statistics.median(results["nginx"])
            for name in origins:
                f = statistics.median(results[name])
                rows.append({
                    "object": obj, "bytes": sizes[obj], "server": name, "flowcast": f, "nginx": n, "ratio": f / n,
                    "cpu_f": statistics.median(per_cpu[name]), "cpu_n": statistics.median(per_cpu["nginx"]),
                    "runs_f": results[name], "runs_n": results["nginx"], "load": f"{loads[0]} .. {loads[-1]}",
                })
    finally:
        for o in origins.values():
            o.stop()
        nginx.stop()
    return rows


def scale_out(args: argparse.Namespace, tmp: Path) -> list[dict]:
    """(c) origin.workers: requests/s for the playlist with 1 and 2 origin processes (main on
    core 0, the worker on core 1) and wrk on both cores, the whole machine under load."""
    rows = []
    counts = [int(w) for w in args.scale_workers.split(",")]
    origins = {w: Origin("static", args.server_core, tmp / f"scale{w}", args.servers[0], w, str(args.client_core),
                         args.loop) for w in counts}
    try:
        path = f"/live/{PLAYLIST_PATH}"
        results: dict[int, list[float]] = defaultdict(list)
        loads: list[str] = []
        for o in origins.values():
            wrk(o.url + path, None, 2, args.wrk_conns * 2, 2)  # warm-up
        for rep in range(args.reps):
            for w, o in origins.items():
                la = loadavg()
                rps, bad, _ = wrk(o.url + path, None, 2, args.wrk_conns * 2, args.wrk_seconds, o.proc.pid)
                results[w].append(rps)
                loads.append(la)
                print(f"  (c) {w} process(es) rep {rep + 1}: {rps:9.0f} req/s non-2xx {bad} load {la}",
                      file=sys.stderr, flush=True)
        base = statistics.median(results[counts[0]])
        for w in counts:
            med = statistics.median(results[w])
            rows.append({"workers": w, "rps": med, "gain": med / base, "runs": results[w],
                         "load": f"{loads[0]} .. {loads[-1]}"})
    finally:
        for o in origins.values():
            o.stop()
    return rows


# -- (b) blocking-reload fan-out -----------------------------------------------------------


def _waiting(url: str) -> float:
    text = urllib.request.urlopen(f"{url}/metrics", timeout=5).read().decode()
    m = re.search(r'flowcast_origin_waiting_requests\{resource="playlist"\} ([\d.e+]+)', text)
    return float(m.group(1)) if m else 0.0


def fanout(args: argparse.Namespace, tmp: Path, viewers: int, server: str, profile: bool = False) -> dict:
    (tmp / f"fan{viewers}").mkdir(parents=True, exist_ok=True)
    origin = Origin("fanout", args.server_core, tmp / f"fan{viewers}", server, args.workers, args.worker_cores,
                    args.loop)
    procs: list[subprocess.Popen] = []
    outs = []
    spy = None
    try:
        per = -(-viewers // args.viewer_procs)
        for k in range(args.viewer_procs):
            n = min(per, viewers - k * per)
            if n <= 0:
                break
            out = tmp / f"fan{viewers}" / f"viewers{k}.bin"
            outs.append(out)
            procs.append(subprocess.Popen(
                [PY, "-m", "benchmarks.origin_viewers", "--port", str(origin.port), "--clients", str(n),
                 "--base", str(k * per), "--core", args.viewer_cores or str(args.client_core), "--out", str(out),
                 "--sched", args.viewer_sched],
                cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            ))
        for p in procs:
            line = p.stdout.readline().split()  # type: ignore[union-attr]
            if not line or line[0] != "ready":
                raise RuntimeError(f"viewer process failed: {line}")
        deadline = time.monotonic() + 30
        # /metrics is the main process's: with workers it sees its own share of the viewers.
        expect = viewers if args.workers == 1 else viewers // (2 * args.workers)
        while (held := _waiting(origin.url)) < expect:
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {held:.0f} of {viewers} viewers held a blocking request")
            time.sleep(0.1)
        if args.workers > 1:
            time.sleep(2.0)
        total = args.warmup + args.publishes
        if profile:
            spy = subprocess.Popen(
                [str(Path(PY).parent / "py-spy"), "record", "-p", str(origin.proc.pid), "-d",
                 f"{int(total * 0.2) + 1}", "-r", "200", "-f", "raw", "-o", str(tmp / "profile.txt")],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=pin(args.client_core),
            )
            time.sleep(1.0)
        la = loadavg()
        psi = cpu_pressure()
        cpu0 = tree_cpu_seconds(origin.proc.pid)
        t0 = time.monotonic()
        origin.send(f"go {total}")
        pubs: dict[int, float] = {}
        lates = []
        written: dict[int, tuple[int, float]] = {}  # index -> (held answers, last written), main process
        while True:
            line = origin.readline(total * 0.2 + 30).split()
            if line[0] == "done":
                break
            if line[0] == "served":
                written[int(line[1])] = (int(line[2]), float(line[3]))
                continue
            pubs[int(line[1])] = float(line[2])
            lates.append(float(line[3]))
        # (the origin waited 1 s for the last part's answers before "done")
        wall = time.monotonic() - t0
        origin_cpu = tree_cpu_seconds(origin.proc.pid) - cpu0
        errors = timeouts = 0
        viewer_cpu = 0.0
        for p in procs:
            p.stdin.write("stop\n")  # type: ignore[union-attr]
            p.stdin.flush()  # type: ignore[union-attr]
        for p in procs:
            stats = p.stdout.readline().split()  # type: ignore[union-attr]
            errors += int(stats[1])
            timeouts += int(stats[2])
            viewer_cpu += float(stats[3])
            p.wait(30)
        if spy is not None:
            spy.wait(60)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(5)
        if spy is not None and spy.poll() is None:
            spy.kill()
        origin.stop()

    receipts: dict[int, list[tuple[int, float]]] = defaultdict(list)
    for out in outs:
        a = array("d")
        a.frombytes(out.read_bytes())
        for i in range(0, len(a), 3):
            receipts[int(a[i + 1])].append((int(a[i]), a[i + 2]))
    responses = sum(len(v) for v in receipts.values())
    measured = sorted(pubs)[args.warmup:]
    # Origin side (main process): publish -> its last held answer written to the kernel.
    origin_ms = [(written[i][1] - pubs[i]) * 1000 for i in sorted(pubs)[args.warmup:] if i in written]
    last_ms, med_ms, share = [], [], []
    served_all: set[int] | None = None
    per_publish = []
    for idx in measured:
        got = receipts.get(idx, [])
        ids = {v for v, _ in got}
        per_publish.append((idx, len(ids), max((t - pubs[idx]) * 1000 for _, t in got) if got else None))
        served_all = ids if served_all is None else served_all & ids
        share.append(len(ids) / viewers)
        if got:
            lat = [(t - pubs[idx]) * 1000 for _, t in got]
            last_ms.append(max(lat))
            med_ms.append(statistics.median(lat))
    return {
        "viewers": viewers,
        "publishes": len(measured),
        "last_p50": percentile(last_ms, 0.5),
        "last_p99": percentile(last_ms, 0.99),
        "last_max": max(last_ms),
        "origin_p50": percentile(origin_ms, 0.5) if origin_ms else float("nan"),
        "origin_p99": percentile(origin_ms, 0.99) if origin_ms else float("nan"),
        "median_viewer_p50": percentile(med_ms, 0.5),
        "every_part": len(served_all or ()) / viewers,
        "pairs_served": sum(share) / len(share),
        "min_share": min(share),
        "errors": errors,
        "timeouts": timeouts,
        "origin_cpu": origin_cpu / wall,
        "us_per_response": origin_cpu / max(responses, 1) * 1e6,
        "psi": psi,
        "viewer_cpu": viewer_cpu / wall,
        "publish_late_ms": max(lates) * 1000,
        "per_publish": per_publish,
        "unserved_publishes": sum(1 for _, n, _ in per_publish if n == 0),
        "load": la,
    }


def summarize_profile(path: Path, top: int = 18) -> str:
    """Self and inclusive sample shares of py-spy's raw (collapsed) output."""
    selfc: dict[str, int] = defaultdict(int)
    incl: dict[str, int] = defaultdict(int)
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        total += n
        frames = [re.sub(r" \(/.*?/(site-packages|src|lib/python3\.\d+)/", " (", f) for f in stack.split(";")]
        selfc[frames[-1]] += n
        for f in set(frames):
            incl[f] += n
    lines = [f"py-spy samples: {total} (origin process, all threads)", "", "self time:"]
    lines += [f"  {c / total:6.1%}  {f}" for f, c in sorted(selfc.items(), key=lambda x: -x[1])[:top]]
    lines += ["", "inclusive time:"]
    lines += [f"  {c / total:6.1%}  {f}" for f, c in sorted(incl.items(), key=lambda x: -x[1])[:top]]
    return "\n".join(lines)


# -- report ---------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server-core", type=int, default=0)
    parser.add_argument("--client-core", type=int, default=1)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--wrk-seconds", type=float, default=10)
    parser.add_argument("--wrk-threads", type=int, default=1)
    parser.add_argument("--wrk-conns", type=int, default=64)
    parser.add_argument("--viewers", default="1000,2000,5000")
    parser.add_argument("--viewer-procs", type=int, default=3)
    parser.add_argument("--publishes", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--servers", default="flowcast,granian",
                        help="HTTP servers hosting the origin app, compared side by side: flowcast (origin/http1.py, "
                             "what flowcast up runs for plain HTTP) and granian (what it runs for TLS); (b) and (c) "
                             "run the first unless --fanout-servers says otherwise")
    parser.add_argument("--fanout-servers", default=None, help="comma list for (b); default: the first of --servers")
    parser.add_argument("--viewer-sched", choices=("normal", "idle"), default="normal",
                        help="idle: viewer processes run SCHED_IDLE: they only get CPU the origin processes "
                             "leave, so the load generator never takes time from the origin it measures")
    parser.add_argument("--viewer-cores", default=None,
                        help="'all': viewers may run on every core (with --viewer-sched idle: on whatever "
                             "the origin leaves); default: --client-core")
    parser.add_argument("--fanout-reps", type=int, default=2)
    parser.add_argument("--workers", default="1", help="origin processes, e.g. 1,2 (origin.workers)")
    parser.add_argument("--worker-cores", default="1", help="cores for the worker processes")
    parser.add_argument("--skip-rps", action="store_true")
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop",
                        help="the origin's event loop (flowcast up runs on uvloop)")
    parser.add_argument("--scale-workers", default="", help="(c): e.g. 1,2 - requests/s by origin processes")
    parser.add_argument("--skip-fanout", action="store_true")
    parser.add_argument("--profile", action="store_true", help="py-spy the origin in an extra run at the largest N")
    parser.add_argument("--profile-out", default="/tmp/flowcast-origin-profile.txt",
                        help="where to keep py-spy's raw (collapsed) stacks")
    args = parser.parse_args()
    args.servers = args.servers.split(",")
    for name in args.servers:
        if name not in ("flowcast", "granian"):
            parser.error(f"unknown server {name}")
    apps = args.fanout_servers.split(",") if args.fanout_servers else args.servers[:1]
    worker_counts = [int(w) for w in args.workers.split(",")]
    args.workers = worker_counts[0]
    os.sched_setaffinity(0, {args.client_core})

    import granian

    print(f"machine: {platform.machine()} {os.cpu_count()} cores, {platform.platform()}, Python {platform.python_version()}")
    print(f"versions: {version([NGINX, '-v'])}, granian {granian.__version__}, {version(['wrk', '-v'])}")
    print(f"origin servers: {','.join(args.servers)} on {args.loop}; server core {args.server_core}, "
          f"client core {args.client_core}; "
          f"load average at start {loadavg()}\n")
    with tempfile.TemporaryDirectory(prefix="flowcast-origin-bench-") as d:
        tmp = Path(d)
        for sub in ("origin", "nginx"):
            (tmp / sub).mkdir()
        if not args.skip_rps:
            rows = requests_per_second(args, tmp)
            print(f"wrk -t{args.wrk_threads} -c{args.wrk_conns} -d{args.wrk_seconds:g}s, {args.reps} runs each "
                  "(median), server on one core\n")
            print("| object | bytes | server | origin req/s | nginx req/s | origin/nginx | req per server CPU-s "
                  "origin / nginx (ratio) | runs origin | runs nginx | load avg (first .. last run) |")
            print("|---|---|---|---|---|---|---|---|---|---|")
            for r in rows:
                runs_f = " ".join(f"{x:.0f}" for x in r["runs_f"])
                runs_n = " ".join(f"{x:.0f}" for x in r["runs_n"])
                print(f"| {r['object']} | {r['bytes']} | {r['server']} | {r['flowcast']:.0f} | {r['nginx']:.0f} "
                      f"| {r['ratio']:.2f} "
                      f"| {r['cpu_f']:.0f} / {r['cpu_n']:.0f} ({r['cpu_f'] / r['cpu_n']:.2f}) "
                      f"| {runs_f} | {runs_n} | {r['load']} |")
            print()
        if args.scale_workers:
            rows = scale_out(args, tmp)
            print(f"(c) origin.workers: playlist requests/s, wrk -t2 -c{args.wrk_conns * 2} -d{args.wrk_seconds:g}s on "
                  f"both cores, {args.reps} runs each (median); main process on core {args.server_core}, "
                  f"worker on core {args.client_core}\n")
            print("| origin processes | req/s | gain | runs | load avg (first .. last run) |")
            print("|---|---|---|---|---|")
            for r in rows:
                runs = " ".join(f"{x:.0f}" for x in r["runs"])
                print(f"| {r['workers']} | {r['rps']:.0f} | {r['gain']:.2f}x | {runs} | {r['load']} |")
            print()
        if not args.skip_fanout:
            results = []
            for rep in range(args.fanout_reps):
                for n in (int(x) for x in args.viewers.split(",")):
                    for app in apps:
                        for w in worker_counts:
                            args.workers = w
                            res = fanout(args, tmp / f"{app}{w}w{rep}", n, app)
                            res["server"], res["workers"] = app, w
                            results.append(res)
                            print(f"  (b) {app} x{w} {n} viewers: origin wrote the last p50 {res['origin_p50']:.0f} "
                                  f"p99 {res['origin_p99']:.0f} ms; viewers had it p50 {res['last_p50']:.0f} ms "
                                  f"p99 {res['last_p99']:.0f} ms, every part {res['every_part']:.1%}, "
                                  f"{res['us_per_response']:.0f} us/response, origin cpu {res['origin_cpu']:.0%}, "
                                  f"load {res['load']}", file=sys.stderr, flush=True)
            results.sort(key=lambda r: (apps.index(r["server"]), r["workers"], r["viewers"]))
            print(f"blocking reload, a part every 200 ms, {args.publishes} publishes measured after "
                  f"{args.warmup} warm-up, viewers in {args.viewer_procs} processes, {args.fanout_reps} runs "
                  "per row (one line each); last-served percentiles over the publishes that at least one viewer got "
                  "(a part published while the loop was still serving the previous one, i.e. late and back to back "
                  "with the next, is got by nobody: 'parts nobody got')\n")
            print("| origin | viewers | publish -> origin wrote the last answer p50 ms | p99 ms "
                  "| publish -> last viewer had it p50 ms | p99 ms | max ms | median viewer p50 ms "
                  "| viewers served every part | (viewer, part) pairs served | parts nobody got | errors/503 | origin CPU (share of wall) | origin CPU µs per response "
                  "| projected ms on a dedicated core (viewers x µs) | viewer CPU | load avg | CPU PSI some avg10 |")
            print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
            for r in results:
                print(f"| {r['server']}, {r['workers']} process{'es' if r['workers'] > 1 else ''} | {r['viewers']} "
                      f"| {r['origin_p50']:.0f} | {r['origin_p99']:.0f} "
                      f"| {r['last_p50']:.0f} | {r['last_p99']:.0f} | {r['last_max']:.0f} "
                      f"| {r['median_viewer_p50']:.0f} | {r['every_part']:.1%} | {r['pairs_served']:.1%} "
                      f"| {r['unserved_publishes']} "
                      f"| {r['errors']}/{r['timeouts']} | {r['origin_cpu']:.0%} | {r['us_per_response']:.0f} "
                      f"| {r['viewers'] * r['us_per_response'] / 1000:.0f} | {r['viewer_cpu']:.0%} | {r['load']} | {r['psi']} |")
            print()
        if args.profile:
            n = max(int(x) for x in args.viewers.split(","))
            (tmp / "prof").mkdir()
            res = fanout(args, tmp / "prof", n, apps[-1], profile=True)
            print(f"profiled run ({apps[-1]}, {n} viewers, under py-spy): last served p50 "
                  f"{res['last_p50']:.0f} ms, {res['us_per_response']:.0f} µs/response\n")
            prof = tmp / "prof" / "profile.txt"
            if prof.exists():
                summary = summarize_profile(prof)
                print("```\n" + summary + "\n```")
                keep = Path(args.profile_out)
                shutil.copy(prof, keep)
                print(f"\n(raw py-spy stacks kept in {keep})")
    print(f"\nload average at end {loadavg()}")


if __name__ == "__main__":
    main()
