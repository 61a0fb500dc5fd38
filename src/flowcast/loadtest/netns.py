"""Kernel network impairment for viewers: a network namespace per run, joined to the host by
a veth pair, with packet loss and bandwidth limits applied by the kernel (the kernel here
has no netem, so delay and jitter still come from the userspace relay, relay.py).

    host namespace                                   fcns<i> (viewers' worker processes)
    127.0.0.1:<origin port>  <-DNAT-  10.231.<i>.1 ==veth== 10.231.<i>.2
                                      tbf (down)            tbf (up), iptables statistic DROP

- loss: `iptables -m statistic --mode random --probability P -j DROP` on the namespace's
  INPUT (data towards the viewers) and OUTPUT (requests and ACKs), so both directions lose
  the profile's share of packets;
- bandwidth: `tc qdisc ... tbf` on each end's egress: the namespace's veth for the uplink,
  the host's veth for the downlink (a qdisc shapes egress only; shaping the downlink inside
  the namespace would need an ifb device);
- the origin keeps listening on 127.0.0.1: the host side DNATs the origin's ports from the
  veth address to loopback (`route_localnet` on that veth only).

Everything is torn down by `Namespace.close()` (also on a failed setup, and from `with`),
rule by rule, ignoring what is already gone. Needs root, iproute2 and iptables
(scripts/system-deps.sh test). Addresses come from guard.NETNS_SUBNET, refused when the
host already uses them for anything of its own.
"""

from __future__ import annotations

import ctypes
import ipaddress
import os
import shutil
import subprocess
from dataclasses import dataclass, field, replace
from typing import Any

from flowcast.loadtest.guard import NETNS_SUBNET, LoadTestRefused
from flowcast.loadtest.profiles import PROFILES, NetworkProfile

PREFIX = "fcns"
CLONE_NEWNET = 0x40000000
TBF_BURST = "32kbit"
TBF_LATENCY = "400ms"  # queue bound: packets waiting longer are dropped, as in a real bottleneck


class NetnsError(RuntimeError):
    """A namespace could not be set up (not root, tools missing, a command failed)."""


@dataclass(frozen=True, slots=True)
class Impairment:
    """What the kernel applies: packet loss share (both directions) and link rates."""

    loss: float = 0.0
    down_kbps: int | None = None
    up_kbps: int | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.loss < 1.0:
            raise LoadTestRefused(f"netns loss must be within [0, 1), got {self.loss}")
        for name in ("down_kbps", "up_kbps"):
            v = getattr(self, name)
            if v is not None and not 8 <= v <= 10_000_000:
                raise LoadTestRefused(f"netns {name} must be within 8..10000000 kbit/s, got {v}")


def impairment_for(profile: NetworkProfile, viewers: int = 1) -> Impairment:
    """A profile's loss and rates, applied by the kernel instead of the relay. All viewers of
    a run share the namespace's one veth, so its rates are the profile's times `viewers`: a
    cell of that many users at the profile's rate each, sharing one queue (unlike the relay,
    which gives each viewer a link of its own)."""
    n = max(1, viewers)
    return Impairment(
        loss=profile.packet_loss,
        down_kbps=profile.down_kbps * n if profile.down_kbps else None,
        up_kbps=profile.up_kbps * n if profile.up_kbps else None,
    )


def relay_part(profile: NetworkProfile) -> NetworkProfile:
    """What stays in the userspace relay when the namespace applies loss and rates: delay,
    jitter and connection resets (no relay at all when none of them is left)."""
    if not (profile.rtt_ms or profile.jitter_ms or profile.connection_drop):
        return PROFILES["loopback"]
    return replace(profile, down_kbps=None, up_kbps=None, packet_loss=0.0)


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


@dataclass
class Namespace:
    """One namespace with its veth pair, DNAT to the origin `ports`, and `impairment`."""

    ports: tuple[int, ...]
    impairment: Impairment = field(default_factory=Impairment)
    index: int = -1
    _undo: list[tuple[tuple[str, ...], str | None]] = field(default_factory=list, repr=False)

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
        return {
            "name": self.name,
            "host_ip": self.host_ip,
            "ns_ip": self.ns_ip,
            "loss": self.impairment.loss,
            "down_kbps": self.impairment.down_kbps,
            "up_kbps": self.impairment.up_kbps,
            "how": "iptables statistic DROP in the namespace (INPUT+OUTPUT); tc tbf on each veth egress",
        }

    def packets(self) -> tuple[int, int]:
        """(packets the loss rules dropped, packets through the namespace's veth): what the
        kernel did, as opposed to what was asked. Call it before close()."""
        dropped = 0
        for chain in ("INPUT", "OUTPUT"):
            out = _run("iptables", "-L", chain, "-v", "-x", "-n", netns=self.name, check=False).stdout
            for line in out.splitlines():
                fields = line.split()
                if "statistic" in line and len(fields) > 2 and fields[2] == "DROP" and fields[0].isdigit():
                    dropped += int(fields[0])
        seen = 0
        for counter in ("rx_packets", "tx_packets"):
            path = f"/sys/class/net/{self.ns_if}/statistics/{counter}"
            out = _run("cat", path, netns=self.name, check=False).stdout.strip()
            seen += int(out) if out.isdigit() else 0
        return dropped, seen + dropped

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
        self._do(("ip", "netns", "add", n), ("ip", "netns", "del", n))
        self._do(("ip", "link", "add", h, "type", "veth", "peer", "name", i), ("ip", "link", "del", h))
        self._do(("ip", "link", "set", i, "netns", n), None)
        self._do(("ip", "addr", "add", f"{self.host_ip}/30", "dev", h), None)
        self._do(("ip", "link", "set", h, "up"), None)
        self._do(("ip", "addr", "add", f"{self.ns_ip}/30", "dev", i), None, netns=n)
        self._do(("ip", "link", "set", i, "up"), None, netns=n)
        self._do(("ip", "link", "set", "lo", "up"), None, netns=n)
        # Reach the loopback-bound origin: DNAT veth:port -> 127.0.0.1:port, which the kernel
        # routes only with route_localnet on the receiving interface (this veth alone).
        self._do(("sysctl", "-q", "-w", f"net.ipv4.conf.{h}.route_localnet=1"), None)
        for port in self.ports:
            rule = ("PREROUTING", "-i", h, "-p", "tcp", "-d", self.host_ip, "--dport", str(port),
                    "-j", "DNAT", "--to-destination", f"127.0.0.1:{port}")
            self._do(("iptables", "-t", "nat", "-A", *rule), ("iptables", "-t", "nat", "-D", *rule))
        imp = self.impairment
        if imp.loss > 0:
            for chain in ("INPUT", "OUTPUT"):
                self._do(
                    ("iptables", "-A", chain, "-o" if chain == "OUTPUT" else "-i", i, "-m", "statistic",
                     "--mode", "random", "--probability", f"{imp.loss:.6f}", "-j", "DROP"),
                    None,
                    netns=n,
                )
        if imp.down_kbps is not None:
            self._do(("tc", "qdisc", "add", "dev", h, "root", "tbf", "rate", f"{imp.down_kbps}kbit",
                      "burst", TBF_BURST, "latency", TBF_LATENCY), None)
        if imp.up_kbps is not None:
            self._do(("tc", "qdisc", "add", "dev", i, "root", "tbf", "rate", f"{imp.up_kbps}kbit",
                      "burst", TBF_BURST, "latency", TBF_LATENCY), None, netns=n)

    def close(self) -> None:
        """Undo in reverse order; deleting the namespace and the veth takes their rules and
        qdiscs with them. Idempotent, and never raises for what is already gone."""
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
