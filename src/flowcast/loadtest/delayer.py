"""Kernel-path delay and jitter for a load-test namespace (this kernel has no netem): a process
inside the namespace that takes the packets iptables NFQUEUE hands it, holds each one's
verdict until its direction's `DelayLine` says it may leave, then accepts it. The packets
stay in the kernel and keep their TCP flow, so the namespace's loss rules, its rates and
this delay all act on the same connections, as on a real access link.

    python -m flowcast.loadtest.delayer --line down:0:85:10 --line up:1:85:10 --stats PATH

- one NFQUEUE queue per direction, metadata only (COPY_META: the payload never crosses into
  Python), held in a deque per direction: a FIFO schedule has non-decreasing due times, so
  the deque's head is always the next packet due and no timer wheel or heap is needed;
- PyPI NetfilterQueue (libnetfilter_queue) does the netlink work: a `Packet` keeps its id
  and queue after the callback returns, so `accept()` can come later. It has no batch
  verdict (NFQNL_MSG_VERDICT_BATCH), so each packet costs one recv and one sendto: about
  12 us of CPU a packet measured here, a few per cent of a core at the 1,000-3,000 packets
  a second a namespace test run moves (a single bulk TCP flow reached ~170 Mbit/s, with
  verdicts then a few ms late). The stats file reports how late verdicts were, so a delayer
  that cannot keep up shows as lateness rather than as a quietly different RTT;
- the rules have no --queue-bypass: with the delayer gone the kernel drops what the rules
  queue (fail closed), so a dead delayer stops the namespace's traffic and the run's
  viewers fail, instead of silently playing with no delay. `Namespace.describe()` also
  says whether the delayer was still alive.

Stats (JSON, rewritten every STATS_EVERY_S, on SIGUSR1 and at exit; its first write means
"bound"):
per direction packets, mean applied one-way delay, mean and max lateness, late > 5 ms,
most packets held at once.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import signal
import socket
import sys
import time
import warnings
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any

from flowcast.loadtest.delayline import DelayLine

STATS_EVERY_S = 0.5
MAX_HELD = 16_384  # per queue; past it the kernel drops (counted in nfnetlink_queue)
LATE_MS = 5.0
NICE = -10  # the delayer's share is small (~12 us of CPU a packet), its timing is its job
SOCK_RCVBUF = 8 * 1024 * 1024  # a burst of metadata messages must not overflow (ENOBUFS drops)


class DelayerError(RuntimeError):
    """The delayer could not bind its queues (NetfilterQueue missing, not root, queue taken)."""


@dataclass(frozen=True, slots=True)
class LineSpec:
    """One direction: its name, NFQUEUE number, one-way delay and jitter in milliseconds."""

    name: str
    queue: int
    delay_ms: float
    jitter_ms: float

    @staticmethod
    def parse(text: str) -> LineSpec:
        try:
            name, queue, delay, jitter = text.split(":")
            spec = LineSpec(name, int(queue), float(delay), float(jitter))
        except ValueError:
            raise DelayerError(f"--line wants NAME:QUEUE:DELAY_MS:JITTER_MS, got {text!r}") from None
        if not (0 <= spec.queue < 65536 and spec.delay_ms >= 0 and spec.jitter_ms >= 0):
            raise DelayerError(f"--line {text!r}: queue 0..65535, delay and jitter >= 0")
        return spec


@dataclass
class LineStats:
    packets: int = 0
    delay_sum_s: float = 0.0
    late_sum_s: float = 0.0
    late_max_s: float = 0.0
    late_over: int = 0
    max_held: int = 0

    def as_dict(self) -> dict[str, Any]:
        n = max(1, self.packets)
        return {
            "packets": self.packets,
            "mean_delay_ms": round(self.delay_sum_s / n * 1000, 3),
            "mean_late_ms": round(self.late_sum_s / n * 1000, 3),
            "max_late_ms": round(self.late_max_s * 1000, 3),
            f"late_over_{LATE_MS:g}ms": self.late_over,
            "max_held": self.max_held,
        }


@dataclass
class _Line:
    spec: LineSpec
    schedule: DelayLine
    held: deque[tuple[float, float, Any]] = field(default_factory=deque)  # (due, arrival, packet)
    stats: LineStats = field(default_factory=LineStats)

    def take(self, packet: Any) -> None:
        """NetfilterQueue callback: note when the packet may leave; the verdict waits."""
        now = time.monotonic()
        self.held.append((self.schedule.release_at(now), now, packet))
        if len(self.held) > self.stats.max_held:
            self.stats.max_held = len(self.held)

    def release(self, now: float) -> None:
        held, st = self.held, self.stats
        while held and held[0][0] <= now:
            due, arrival, packet = held.popleft()
            packet.accept()
            late = now - due
            st.packets += 1
            st.delay_sum_s += now - arrival
            st.late_sum_s += late
            if late > st.late_max_s:
                st.late_max_s = late
            if late * 1000 > LATE_MS:
                st.late_over += 1


def _write_stats(path: str, lines: list[_Line], running: bool) -> None:
    data = {
        "pid": os.getpid(),
        "running": running,
        "updated": time.time(),
        "lines": {ln.spec.name: {**asdict(ln.spec), **ln.stats.as_dict()} for ln in lines},
    }
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(data, f)
    os.replace(tmp, path)


def run(specs: list[LineSpec], stats_path: str, seed: int = 1) -> None:
    """Bind one queue per spec and delay their packets until SIGTERM or SIGINT."""
    try:
        from netfilterqueue import COPY_META, NetfilterQueue  # noqa: PLC0415 - Linux, root, namespace runs only
    except ImportError as exc:
        raise DelayerError(f"NetfilterQueue is not installed ({exc}); pip install NetfilterQueue") from None
    lines = [_Line(s, DelayLine(s.delay_ms / 1000, s.jitter_ms / 1000, seed=seed * 1009 + s.queue)) for s in specs]
    queues = []
    for ln in lines:
        q = NetfilterQueue()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # "rcvbuf limit is now ...": checked below
            try:
                q.bind(ln.spec.queue, ln.take, max_len=MAX_HELD, mode=COPY_META, range=0, sock_len=SOCK_RCVBUF)
            except OSError as exc:
                raise DelayerError(f"binding NFQUEUE {ln.spec.queue}: {exc}") from None
        queues.append(q)

    wake_r, wake_w = socket.socketpair()
    wake_r.setblocking(False)
    wake_w.setblocking(False)
    signal.set_wakeup_fd(wake_w.fileno())
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1):
        signal.signal(sig, lambda *_: None)  # the wakeup fd says which: stop, or write stats now
    by_fd = {q.get_fd(): q for q in queues}
    fds = [*by_fd, wake_r.fileno()]

    try:  # a late verdict is extra delay: go ahead of the busy loops sharing the machine
        os.setpriority(os.PRIO_PROCESS, 0, NICE)
    except OSError:
        pass  # not permitted: run at the inherited priority, lateness shows in the stats
    _write_stats(stats_path, lines, running=True)  # = bound and delaying
    next_stats = time.monotonic() + STATS_EVERY_S
    try:
        while True:
            now = time.monotonic()
            dues = [ln.held[0][0] for ln in lines if ln.held]
            timeout = min([next_stats, *dues]) - now
            # select, not epoll or poll: its timeout is in microseconds, theirs in milliseconds
            # (rounded up: up to 1 ms late a packet). Three descriptors, so its O(n) is nothing.
            readable, _, _ = select.select(fds, [], [], max(0.0, timeout))
            signals = b""
            for fd in readable:
                if fd == wake_r.fileno():
                    signals = wake_r.recv(64)
                else:
                    by_fd[fd].run(block=False)
            now = time.monotonic()
            for ln in lines:
                ln.release(now)
            if signal.SIGTERM in signals or signal.SIGINT in signals:
                break
            if now >= next_stats or signal.SIGUSR1 in signals:
                _write_stats(stats_path, lines, running=True)
                next_stats = now + STATS_EVERY_S
    finally:
        for ln in lines:  # let what is held go on (uncounted): the namespace may outlive us
            while ln.held:
                ln.held.popleft()[2].accept()
        for q in queues:
            q.unbind()
        _write_stats(stats_path, lines, running=False)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m flowcast.loadtest.delayer", description=__doc__.split("\n\n")[0])
    ap.add_argument("--line", action="append", required=True, help="NAME:QUEUE:DELAY_MS:JITTER_MS (repeatable)")
    ap.add_argument("--stats", required=True, help="JSON stats file (written once bound, then every 0.5 s)")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    try:
        run([LineSpec.parse(t) for t in args.line], args.stats, seed=args.seed)
    except DelayerError as exc:
        print(f"delayer: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
