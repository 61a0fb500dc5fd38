"""CPU and memory of a process tree from /proc (Linux), sampled by the run's parent.

CPU% = (utime + stime) delta / wall delta / clock tick (100% = one core busy). The flowcast
tree is split into the origin (the `flowcast up` process and its non-FFmpeg children) and the
encoder (its `ffmpeg` children), so origin cost is not hidden by encoder cost.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _stat(pid: int) -> tuple[str, int, int, int] | None:
    """(comm, ppid, utime+stime ticks, rss bytes) or None if the process is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read().decode("latin-1")
    except OSError:
        return None
    comm = raw[raw.index("(") + 1 : raw.rindex(")")]
    rest = raw[raw.rindex(")") + 2 :].split()
    # fields after comm: state(0) ppid(1) ... utime(11) stime(12) ... rss(21)
    return comm, int(rest[1]), int(rest[11]) + int(rest[12]), int(rest[21]) * _PAGE


def _children_map() -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = _stat(int(name))
            if st is not None:
                out.setdefault(st[1], []).append(int(name))
    return out


def tree(pid: int) -> list[int]:
    kids = _children_map()
    seen, todo = [], [pid]
    while todo:
        p = todo.pop()
        seen.append(p)
        todo.extend(kids.get(p, []))
    return seen


@dataclass
class Series:
    t: list[float] = field(default_factory=list)  # seconds since the run's start
    cpu_pct: list[float] = field(default_factory=list)
    rss_mb: list[float] = field(default_factory=list)


@dataclass
class TreeSampler:
    """Samples groups of processes: name -> a function returning the pids of that group."""

    t0: float  # wall clock of the run's start
    groups: dict[str, object]
    series: dict[str, Series] = field(default_factory=dict)
    _last: dict[str, tuple[float, int]] = field(default_factory=dict)

    def sample(self) -> None:
        now = time.time()
        for name, pids_fn in self.groups.items():
            pids = pids_fn()  # type: ignore[operator]
            ticks = rss = 0
            for p in pids:
                st = _stat(p)
                if st is not None:
                    ticks += st[2]
                    rss += st[3]
            s = self.series.setdefault(name, Series())
            last = self._last.get(name)
            self._last[name] = (now, ticks)
            if last is None or now <= last[0]:
                continue
            cpu = max(0, ticks - last[1]) / _TICK / (now - last[0]) * 100.0
            s.t.append(round(now - self.t0, 2))
            s.cpu_pct.append(round(cpu, 1))
            s.rss_mb.append(round(rss / 1e6, 1))


def flowcast_groups(pid: int) -> dict[str, object]:
    def origin() -> list[int]:
        return [p for p in tree(pid) if (_stat(p) or ("",))[0] != "ffmpeg"]

    def encoder() -> list[int]:
        return [p for p in tree(pid) if (_stat(p) or ("",))[0] == "ffmpeg"]

    return {"origin": origin, "encoder": encoder}
