"""Kernel network impairment for viewers: a network namespace per run, joined to the host by
a veth pair, with packet loss, bandwidth limits, delay and jitter all applied on the
kernel's path, so they act on the viewers' own TCP connections together (the kernel here
has no netem; without NetfilterQueue the delay falls back to the userspace relay).

    host namespace                                   fcns<i> (viewers' worker processes)
    127.0.0.1:<origin port>  <-DNAT-  10.231.<i>.1 ==veth== 10.231.<i>.2
                                      tbf (down)            tbf (up), iptables statistic DROP,
                                                            NFQUEUE -> delayer.py (both ways)

- loss: `iptables -m statistic --mode random --probability P -j DROP` on the namespace's
  INPUT (data towards the viewers) and OUTPUT (requests and ACKs), so both directions lose
  the profile's share of packets;
- delay and jitter: after the loss rules, INPUT and OUTPUT `-j NFQUEUE` to a delayer
  process in the namespace (delayer.py) that holds each packet for `delay_ms` +- `jitter_ms`
  in its direction, so the RTT is 2 x delay_ms. Both directions rather than the whole RTT
  on one: a request reaches the origin half an RTT after it leaves, as on a real link,
  which LL-HLS blocking reloads and the latency figures depend on, and ACKs see jitter
  too. No --queue-bypass: a dead delayer stops the traffic instead of removing the delay;
- bandwidth: `tc qdisc ... tbf` on each end's egress: the namespace's veth for the uplink,
  the host's veth for the downlink (a qdisc shapes egress only; shaping the downlink inside
  the namespace would need an ifb device);
- one packet per skb (gso_max_segs 1 on both veth ends): otherwise the host's TCP hands the
  veth 64 KB GSO super-packets and a loss rule drops some forty packets at once, so "5 %
  of packets" would really be 5 % of bursts;
- the origin keeps listening on 127.0.0.1: the host side DNATs the origin's ports from the
  veth address to loopback (`route_localnet` on that veth only).

Everything is torn down by `Namespace.close()` (also on a failed setup, and from `with`):
the delayer first (SIGTERM, then SIGKILL), then rule by rule, ignoring what is already gone.
`describe()` and `packets()` report what was applied: the kernel's drop and queue counters
and the delayer's own figures (one-way delay applied, how late its verdicts were, whether
it is still running). Needs root, iproute2 and iptables (scripts/system-deps.sh test), and
for delay the NetfilterQueue package of the [test] extra. Addresses come from
guard.NETNS_SUBNET, refused when the host already uses them for anything of its own.
"""

from __future__ import annotations

import ctypes
import importlib.util
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from flowcast.loadtest.delayer import STATS_EVERY_S
from flowcast.loadtest.guard import NETNS_SUBNET, LoadTestRefused
from flowcast.loadtest.profiles import PROFILES, NetworkProfile

PREFIX = "fcns"
CLONE_NEWNET = 0x40000000
TBF_BURST = "32kbit"
TBF_LATENCY = "400ms"  # queue bound: packets waiting longer are dropped, as in a real bottleneck
DOWN_QUEUE, UP_QUEUE = 0, 1  # NFQUEUE numbers; queues are per namespace, so every run has 0 and 1
DELAYER_READY_S = 15.0
DELAYER_STOP_S = 3.0


class NetnsError(RuntimeError):
    """A namespace could not be set up (not root, tools missing, a command failed)."""


@dataclass(frozen=True, slots=True)
class Impairment:
    """What the kernel path applies: packet loss share and one-way delay +- jitter (each in
    both directions, so the RTT is 2 x delay_ms), and link rates."""

    loss: float = 0.0
    down_kbps: int | None = None
    up_kbps: int | None = None
    delay_ms: float = 0.0
    jitter_ms: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.loss < 1.0:
            raise LoadTestRefused(f"netns loss must be within [0, 1), got {self.loss}")
        for name in ("down_kbps", "up_kbps"):
            v = getattr(self, name)
            if v is not None and not 8 <= v <= 10_000_000:
                raise LoadTestRefused(f"netns {name} must be within 8..10000000 kbit/s, got {v}")
        for name in ("delay_ms", "jitter_ms"):
            v = getattr(self, name)
            if not 0.0 <= v <= 5_000.0:
                raise LoadTestRefused(f"netns {name} must be within 0..5000 ms, got {v}")

    @property
    def delayed(self) -> bool:
        return self.delay_ms > 0 or self.jitter_ms > 0

    @property
    def rtt_ms(self) -> float:
        return 2 * self.delay_ms


def delay_available() -> str | None:
    """None when the namespace can delay packets itself (NetfilterQueue importable), else why
    not; the CLI then leaves delay and jitter to the relay."""
    if importlib.util.find_spec("netfilterqueue") is None:
        return "NetfilterQueue is not installed (pip install -e '.[test]'; it builds against libnetfilter-queue-dev)"
    return None


def impairment_for(profile: NetworkProfile, viewers: int = 1, *, kernel_delay: bool = True) -> Impairment:
    """A profile's loss, rates and (with `kernel_delay`) RTT and jitter, applied on the
    kernel's path instead of the relay. All viewers of a run share the namespace's one veth,
    so its rates are the profile's times `viewers`: a cell of that many users at the
    profile's rate each, sharing one queue (unlike the relay, which gives each viewer a link
    of its own). Jitter is +- jitter_ms on each one-way delay, as the relay draws it."""
    n = max(1, viewers)
    return Impairment(
        loss=profile.packet_loss,
        down_kbps=profile.down_kbps * n if profile.down_kbps else None,
        up_kbps=profile.up_kbps * n if profile.up_kbps else None,
        delay_ms=profile.rtt_ms / 2 if kernel_delay else 0.0,
        jitter_ms=profile.jitter_ms if kernel_delay else 0.0,
    )


def relay_part(profile: NetworkProfile, applied: Impairment) -> NetworkProfile:
    """What stays in the userspace relay when the namespace applies `applied`: loss and
    rates are the namespace's; delay and jitter too when it delays at all; connection resets
    always stay (no relay at all when nothing is left)."""
    rest = replace(profile, down_kbps=None, up_kbps=None, packet_loss=0.0)
    if applied.delayed:
        rest = replace(rest, rtt_ms=0.0, jitter_ms=0.0)
    if not (rest.rtt_ms or rest.jitter_ms or rest.connection_drop):
        return PROFILES["loopback"]
    return rest


def _run(*cmd: str, netns: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    full = (["ip", "netns", "exec", netns] if netns else []) + list(cmd)
    proc = subprocess.run(full, capture_output=True, text=True, timeout=20, check=False)
    if check and proc.returncode != 0:
        raise NetnsError(f"{' '.join(full)}: {proc.stderr.strip() or f'exit {proc.returncode}'}")
    return proc


def available() -> str | None:
    """None when namespace runs can work here, else why not."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "tc", "iptables"):
        if shutil.which(tool) is None:
            return f"{tool} is missing (scripts/system-deps.sh test installs iproute2 and iptables)"
    return None


def _taken_indexes() -> set[int]:
    out = _run("ip", "netns", "list", check=False).stdout
    taken = set()
    for line in out.splitlines():
        name = line.split()[0] if line.split() else ""
        if name.startswith(PREFIX) and name[len(PREFIX):].isdigit():
            taken.add(int(name[len(PREFIX):]))
    return taken


def _subnet_used_by_others() -> list[str]:
    """Interfaces outside our naming that hold an address in NETNS_SUBNET."""
    out = _run("ip", "-o", "-4", "addr", "show", check=False).stdout
    others = []
    for line in out.splitlines():
        f = line.split()
        if len(f) >= 4 and f[2] == "inet":
            ifname = f[1].split("@")[0]
            if ipaddress.ip_interface(f[3]).ip in NETNS_SUBNET and not ifname.startswith(PREFIX):
                others.append(ifname)
    return others


@dataclass(frozen=True, slots=True)
class Applied:
    """What the kernel and the delayer did, as opposed to what was asked."""

    dropped: int  # packets the loss rules dropped
    packets: int  # packets through the namespace's veth, both directions, plus `dropped`
    queued: int  # packets the NFQUEUE rules handed to the delayer
    delayed: int  # packets the delayer held and then accepted
    queue_dropped: int  # dropped at the queue (full, or the delayer's socket overflowed)
    delayer: str  # "none", "running", or "exited <code>" (its rules then drop: fail closed)
    lines: dict[str, dict[str, Any]] = field(default_factory=dict)  # per direction: delay applied, lateness

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Namespace:
    """One namespace with its veth pair, DNAT to the origin `ports`, and `impairment`."""

    ports: tuple[int, ...]
    impairment: Impairment = field(default_factory=Impairment)
    index: int = -1
    seed: int = 1
    _undo: list[tuple[tuple[str, ...], str | None]] = field(default_factory=list, repr=False)
    _delayer: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _workdir: str | None = field(default=None, repr=False)
    _final: dict[str, Any] | None = field(default=None, repr=False)  # the delayer's last stats

    @property
    def name(self) -> str:
        return f"{PREFIX}{self.index}"

    @property
    def host_if(self) -> str:
        return f"{PREFIX}{self.index}h"

    @property
    def ns_if(self) -> str:
        return f"{PREFIX}{self.index}n"

    @property
    def host_ip(self) -> str:
        return str(NETNS_SUBNET.network_address + 256 * self.index + 1)

    @property
    def ns_ip(self) -> str:
        return str(NETNS_SUBNET.network_address + 256 * self.index + 2)

    def describe(self) -> dict[str, Any]:
        """What was asked and (while open, or after a close that stopped a delayer) what was
        applied: the report's `run.netns`."""
        imp = self.impairment
        how = "iptables statistic DROP in the namespace (INPUT+OUTPUT); tc tbf on each veth egress"
        if imp.delayed:
            how += "; NFQUEUE (INPUT+OUTPUT, fail closed) to flowcast.loadtest.delayer: delay_ms +- jitter_ms each way"
        return {
            "name": self.name,
            "host_ip": self.host_ip,
            "ns_ip": self.ns_ip,
            "loss": imp.loss,
            "down_kbps": imp.down_kbps,
            "up_kbps": imp.up_kbps,
            "delay_ms": imp.delay_ms,
            "jitter_ms": imp.jitter_ms,
            "rtt_ms": imp.rtt_ms,
            "how": how,
            "applied": self.packets().as_dict(),
        }

    def packets(self) -> Applied:
        """What the kernel and the delayer did. The kernel's counters go with the namespace:
        call it before close() (the delayer's own figures are kept past it)."""
        stats = self._delayer_stats()  # first: the kernel's counters are then at least as recent
        script = (
            "iptables -L INPUT -v -x -n; iptables -L OUTPUT -v -x -n; echo @@; "
            f"cat /sys/class/net/{self.ns_if}/statistics/rx_packets /sys/class/net/{self.ns_if}/statistics/tx_packets; "
            "echo @@; cat /proc/net/netfilter/nfnetlink_queue"
        )
        out = _run("sh", "-c", script, netns=self.name, check=False).stdout  # one exec, not six
        rules, dev, queues = (out.split("@@\n") + ["", "", ""])[:3]
        dropped = queued = 0
        for line in rules.splitlines():
            fields = line.split()
            if len(fields) > 2 and fields[0].isdigit():
                if "statistic" in line and fields[2] == "DROP":
                    dropped += int(fields[0])
                elif fields[2] == "NFQUEUE":
                    queued += int(fields[0])
        seen = sum(int(x) for x in dev.split() if x.isdigit())
        queue_dropped = 0
        for line in queues.splitlines():  # queue portid waiting mode range queue_dropped user_dropped id 1
            f = line.split()
            if len(f) >= 7 and f[5].isdigit() and f[6].isdigit():
                queue_dropped += int(f[5]) + int(f[6])
        lines = stats.get("lines", {}) if stats else {}
        return Applied(
            dropped=dropped,
            packets=seen + dropped,
            queued=queued,
            delayed=sum(int(v.get("packets", 0)) for v in lines.values()),
            queue_dropped=queue_dropped,
            delayer=self._delayer_state(),
            lines=lines,
        )

    def _delayer_state(self) -> str:
        if self._delayer is None:
            return "none"
        code = self._delayer.poll()
        return "running" if code is None else f"exited {code}"

    def _delayer_stats(self) -> dict[str, Any] | None:
        """The delayer's figures: its last ones once stopped, else the first it writes after
        this call (SIGUSR1 asks for them now), so they cover the kernel's counters read with them."""
        if self._final is not None:
            return self._final
        if self._workdir is None:
            return None
        asked = time.time()
        if self._delayer is not None and self._delayer.poll() is None:
            self._delayer.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + 2 * STATS_EVERY_S
        stats = None
        while True:
            try:
                with open(os.path.join(self._workdir, "delayer.json")) as f:
                    stats = dict(json.load(f))
            except (OSError, ValueError):
                pass
            running = self._delayer is not None and self._delayer.poll() is None
            if not running or time.monotonic() > deadline or (stats and stats.get("updated", 0) >= asked):
                return stats
            time.sleep(0.005)

    def __enter__(self) -> Namespace:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> None:
        why = available()
        if why is not None:
            raise NetnsError(why)
        if not self.ports or not all(0 < p < 65536 for p in self.ports):
            raise LoadTestRefused(f"netns: origin ports must be 1..65535, got {self.ports}")
        others = _subnet_used_by_others()
        if others:
            raise NetnsError(f"{NETNS_SUBNET} is already used on this host by {', '.join(others)}; not ours to touch")
        if self.index < 0:
            taken = _taken_indexes()
            self.index = next(i for i in range(256) if i not in taken)
        try:
            self._setup()
        except BaseException:
            self.close()
            raise

    def _do(self, cmd: tuple[str, ...], undo: tuple[str, ...] | None, netns: str | None = None) -> None:
        _run(*cmd, netns=netns)
        if undo is not None:
            self._undo.append((undo, netns))

    def _setup(self) -> None:
        n, h, i = self.name, self.host_if, self.ns_if
        imp = self.impairment
        self._do(("ip", "netns", "add", n), ("ip", "netns", "del", n))
        if imp.delayed:
            self._start_delayer()  # its start-up (~0.3 s of imports) overlaps the rest of the set-up
        self._do(("ip", "link", "add", h, "type", "veth", "peer", "name", i), ("ip", "link", "del", h))
        self._do(("ip", "link", "set", i, "netns", n), None)
        self._do(("ip", "addr", "add", f"{self.host_ip}/30", "dev", h), None)
        self._do(("ip", "link", "set", h, "gso_max_segs", "1", "up"), None)  # one packet per skb
        self._do(("ip", "addr", "add", f"{self.ns_ip}/30", "dev", i), None, netns=n)
        self._do(("ip", "link", "set", i, "gso_max_segs", "1", "up"), None, netns=n)
        self._do(("ip", "link", "set", "lo", "up"), None, netns=n)
        # Reach the loopback-bound origin: DNAT veth:port -> 127.0.0.1:port, which the kernel
        # routes only with route_localnet on the receiving interface (this veth alone).
        self._do(("sysctl", "-q", "-w", f"net.ipv4.conf.{h}.route_localnet=1"), None)
        for port in self.ports:
            rule = ("PREROUTING", "-i", h, "-p", "tcp", "-d", self.host_ip, "--dport", str(port),
                    "-j", "DNAT", "--to-destination", f"127.0.0.1:{port}")
            self._do(("iptables", "-t", "nat", "-A", *rule), ("iptables", "-t", "nat", "-D", *rule))
        if imp.loss > 0:
            for chain in ("INPUT", "OUTPUT"):
                self._do(
                    ("iptables", "-A", chain, "-o" if chain == "OUTPUT" else "-i", i, "-m", "statistic",
                     "--mode", "random", "--probability", f"{imp.loss:.6f}", "-j", "DROP"),
                    None,
                    netns=n,
                )
        if imp.delayed:
            self._wait_for_delayer()  # bound before the rules: they have no bypass
            for chain, flag, queue in (("INPUT", "-i", DOWN_QUEUE), ("OUTPUT", "-o", UP_QUEUE)):
                self._do(("iptables", "-A", chain, flag, i, "-j", "NFQUEUE", "--queue-num", str(queue)), None, netns=n)
        if imp.down_kbps is not None:
            self._do(("tc", "qdisc", "add", "dev", h, "root", "tbf", "rate", f"{imp.down_kbps}kbit",
                      "burst", TBF_BURST, "latency", TBF_LATENCY), None)
        if imp.up_kbps is not None:
            self._do(("tc", "qdisc", "add", "dev", i, "root", "tbf", "rate", f"{imp.up_kbps}kbit",
                      "burst", TBF_BURST, "latency", TBF_LATENCY), None, netns=n)

    def _start_delayer(self) -> None:
        """Start delayer.py inside the namespace; its output goes to a log file, read when it
        fails."""
        imp = self.impairment
        self._workdir = tempfile.mkdtemp(prefix=f"flowcast-{self.name}-")
        stats = os.path.join(self._workdir, "delayer.json")
        log_path = os.path.join(self._workdir, "delayer.log")
        cmd = ["ip", "netns", "exec", self.name, sys.executable, "-m", "flowcast.loadtest.delayer",
               "--stats", stats, "--seed", str(self.seed)]
        for name, queue in (("down", DOWN_QUEUE), ("up", UP_QUEUE)):
            cmd += ["--line", f"{name}:{queue}:{imp.delay_ms:g}:{imp.jitter_ms:g}"]
        with open(log_path, "wb") as log:
            self._delayer = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)

    def _wait_for_delayer(self) -> None:
        """Until the delayer has bound its queues (its first stats file)."""
        assert self._delayer is not None and self._workdir is not None
        stats = os.path.join(self._workdir, "delayer.json")
        log_path = os.path.join(self._workdir, "delayer.log")
        deadline = time.monotonic() + DELAYER_READY_S
        while not os.path.exists(stats):
            if self._delayer.poll() is not None or time.monotonic() > deadline:
                with open(log_path, errors="replace") as f:
                    why = f.read().strip()[-2000:]
                raise NetnsError(f"the delayer did not start ({self._delayer_state()}): {why or 'no output'}")
            time.sleep(0.02)

    def _stop_delayer(self) -> None:
        proc = self._delayer
        if proc is not None and self._final is None:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(DELAYER_STOP_S)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(DELAYER_STOP_S)
            final = self._delayer_stats()
            self._final = final if final is not None else {}
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    def close(self) -> None:
        """Stop the delayer, then undo in reverse order; deleting the namespace and the veth
        takes their rules and qdiscs with them. Idempotent, and never raises for what is
        already gone."""
        self._stop_delayer()  # keeps its exit code and last figures for describe()
        while self._undo:
            cmd, netns = self._undo.pop()
            try:
                _run(*cmd, netns=netns, check=False)
            except (OSError, subprocess.SubprocessError):
                pass

    def exists(self) -> bool:
        return self.name in _run("ip", "netns", "list", check=False).stdout.split()


def enter(name: str) -> None:
    """Move the calling process (a single-threaded load-test worker) into namespace `name`."""
    if not name.startswith(PREFIX):
        raise NetnsError(f"refusing to enter {name!r}: not a flowcast namespace")
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise NetnsError(f"setns({name}): {os.strerror(err)}")
    finally:
        os.close(fd)
