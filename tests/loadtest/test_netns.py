"""Kernel-path impairment in network namespaces (iptables statistic loss, tc tbf, NFQUEUE
delay through delayer.py): the delay measured by TCP itself (TCP_INFO and `ss -ti` inside
the namespace); a 5 %-loss namespace against a clean one at the same 4G RTT, at the same
time against a real `flowcast up`, compared from the raw per-viewer rows and from the
reports' own verdicts; setup and teardown, also after a failed setup and a dead delayer."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from flowcast.loadtest import PROFILES, LoadTestRefused, Ramp, guard, netns, run_loadtest
from tests.e2e.livestack import LiveProcess

pytestmark = pytest.mark.skipif(netns.available() is not None, reason=str(netns.available()))
needs_delay = pytest.mark.skipif(netns.delay_available() is not None, reason=str(netns.delay_available()))
RUN_S = 15.0  # the old 16 s, less the second the delayers and 4x the viewers cost
VIEWERS = 40  # per namespace: stalls are rare events, so fewer viewers make the lossy ratio noisy


def _names() -> list[str]:
    return subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()


def _links() -> str:
    return subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout


def _nat() -> str:
    return subprocess.run(["iptables", "-t", "nat", "-S"], capture_output=True, text=True).stdout


def _in_ns(ns: netns.Namespace, *cmd: str) -> str:
    return subprocess.run(["ip", "netns", "exec", ns.name, *cmd], capture_output=True, text=True, timeout=60).stdout


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"


@needs_delay
def test_namespace_setup_and_teardown() -> None:
    imp = netns.Impairment(loss=0.05, down_kbps=4000, up_kbps=2000, delay_ms=30.0, jitter_ms=5.0)
    ns = netns.Namespace(ports=(18555,), impairment=imp)
    with ns:
        assert ns.name in _names()
        assert f"{ns.host_if}@" in _links()
        assert f"--dport 18555 -j DNAT --to-destination 127.0.0.1:18555" in _nat()
        rules = _in_ns(ns, "iptables", "-S")
        assert rules.count("--mode random --probability 0.0499999") == 2, rules  # both directions (2^-32 steps)
        # loss first, then the queue, in both directions; no --queue-bypass (fail closed)
        assert f"-A INPUT -i {ns.ns_if} -j NFQUEUE --queue-num 0" in rules, rules
        assert f"-A OUTPUT -o {ns.ns_if} -j NFQUEUE --queue-num 1" in rules, rules
        assert rules.index("statistic") < rules.index("NFQUEUE") and "bypass" not in rules
        qd = subprocess.run(["tc", "qdisc", "show", "dev", ns.host_if], capture_output=True, text=True).stdout
        assert "tbf" in qd and "4Mbit" in qd, qd
        qd_ns = _in_ns(ns, "tc", "qdisc", "show", "dev", ns.ns_if)
        assert "tbf" in qd_ns and "2Mbit" in qd_ns, qd_ns
        assert "gso_max_segs 1 " in subprocess.run(["ip", "-d", "link", "show", ns.host_if], capture_output=True, text=True).stdout
        assert ns._delayer is not None
        pid = ns._delayer.pid
        assert ns.packets().delayer == "running"
        # `ip netns exec` execs the delayer: the process we hold is the one in the namespace
        assert os.readlink(f"/proc/{pid}/ns/net") == os.readlink(f"/proc/{_ns_pid(ns)}/ns/net")
        d = ns.describe()
        assert (d["delay_ms"], d["jitter_ms"], d["rtt_ms"]) == (30.0, 5.0, 60.0) and "NFQUEUE" in d["how"]
    assert _gone(pid), "the delayer outlived its namespace"
    assert ns.packets().delayer == "exited 0"
    assert ns.name not in _names()
    assert f"{ns.host_if}@" not in _links()
    assert "18555" not in _nat()


def _ns_pid(ns: netns.Namespace) -> int:
    """A process inside the namespace (to compare network namespaces by /proc/PID/ns/net)."""
    out = subprocess.run(["ip", "netns", "pids", ns.name], capture_output=True, text=True).stdout.split()
    assert out, f"no process in {ns.name}"
    return int(out[0])


@needs_delay
def test_teardown_after_a_failed_setup(monkeypatch: pytest.MonkeyPatch) -> None:
    real = netns._run

    def failing(*cmd: str, **kw: object):  # type: ignore[no-untyped-def]
        if cmd[:2] == ("tc", "qdisc"):
            raise netns.NetnsError("injected failure at the tbf step")
        return real(*cmd, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(netns, "_run", failing)
    ns = netns.Namespace(ports=(18556,), impairment=netns.Impairment(loss=0.01, down_kbps=1000, delay_ms=10.0))
    with pytest.raises(netns.NetnsError, match="injected"):
        ns.open()
    monkeypatch.undo()
    assert ns._delayer is not None and _gone(ns._delayer.pid), "the delayer outlived a failed setup"
    assert ns.name not in _names()
    assert f"{ns.host_if}@" not in _links()
    assert "18556" not in _nat()


# An echo server on 127.0.0.1 (its port on stdout), one thread per connection.
_ECHO = """
import socket, threading
srv = socket.create_server(("127.0.0.1", 0))
print(srv.getsockname()[1], flush=True)
def echo(c):
    with c:
        while data := c.recv(4096):
            c.sendall(data)
while True:
    threading.Thread(target=echo, args=(srv.accept()[0],), daemon=True).start()
"""
# Both ends of the measurement at nice -10, like the delayer: on a loaded machine a late
# echo delays the ACK riding on it, and TCP would count that scheduling delay as RTT.
NICE = ("nice", "-n", "-10")


# Runs inside the namespace: ping-pong over one TCP connection, then what TCP itself measured
# (TCP_INFO's tcpi_rtt / tcpi_rttvar, in microseconds at offset 68) and what `ss -ti` shows.
_PINGER = """
import json, socket, struct, subprocess, sys, time
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
s = socket.create_connection((host, port), timeout=10)
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
rtts = []
for _ in range(n):
    t = time.monotonic()
    s.sendall(b"x" * 64)
    got = 0
    while got < 64:
        got += len(s.recv(64 - got))
    rtts.append((time.monotonic() - t) * 1000)
srtt, rttvar = struct.unpack_from("II", s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104), 68)
ss = subprocess.run(["ss", "-tin", "dst", host], capture_output=True, text=True).stdout
print(json.dumps({"app_ms": rtts, "srtt_ms": srtt / 1000, "rttvar_ms": rttvar / 1000, "ss": ss}))
"""


@pytest.fixture()
def echo() -> Iterator[int]:
    proc = subprocess.Popen([*NICE, sys.executable, "-c", _ECHO], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        yield int(proc.stdout.readline())
    finally:
        proc.kill()
        proc.wait()


@needs_delay
@pytest.mark.parametrize(("delay_ms", "jitter_ms", "pings"), [(25.0, 0.0, 30), (85.0, 10.0, 20)])
def test_tcp_measures_the_configured_rtt(echo: int, delay_ms: float, jitter_ms: float, pings: int) -> None:
    """What TCP sees inside the namespace is the configured RTT (2 x delay_ms): the delay is
    on the kernel's path, on the same connection as loss and rates would be."""
    ns = netns.Namespace(ports=(echo,), impairment=netns.Impairment(delay_ms=delay_ms, jitter_ms=jitter_ms))
    with ns:
        out = _in_ns(ns, *NICE, sys.executable, "-c", _PINGER, ns.host_ip, str(echo), str(pings))
        applied = ns.packets()
    res = json.loads(out)
    rtt, spread = 2 * delay_ms, 2 * jitter_ms  # the RTT and how far jitter may move it either way
    app = sorted(res["app_ms"])
    ss = re.search(r"\brtt:([\d.]+)/([\d.]+)\b.*\bminrtt:([\d.]+)", res["ss"])
    print(f"RTT {rtt} +- {spread} ms: app median {app[len(app) // 2]:.2f} ms, srtt {res['srtt_ms']} ms, "
          f"rttvar {res['rttvar_ms']} ms, ss {ss and ss.group(0)}; {applied.lines}")
    assert ss is not None, res["ss"]
    srtt_ss, minrtt = float(ss.group(1)), float(ss.group(3))
    assert srtt_ss == pytest.approx(res["srtt_ms"], abs=0.01), res  # ss -ti and TCP_INFO: the same figure
    # never early (the lowest RTT TCP saw is the configured one, less jitter), and the
    # smoothed RTT is the configured one; a late verdict on a loaded machine only adds
    assert rtt - spread - 0.5 <= minrtt <= rtt + 3, res["ss"]
    assert rtt - spread - 1 <= res["srtt_ms"] <= rtt + spread + 8, res
    assert rtt - spread / 2 - 1 <= app[len(app) // 2] <= rtt + 8, app
    if jitter_ms:
        assert app[0] < rtt - 1 < rtt + 1 < app[-1], "jitter does not vary the RTT"
    else:
        assert app[int(0.8 * len(app))] - app[0] < 5, app  # a steady RTT, bar scheduling hiccups
    assert applied.delayed >= 2 * pings and applied.queue_dropped == 0, applied
    assert all(abs(v["mean_delay_ms"] - delay_ms) < 4 for v in applied.lines.values()), applied.lines


@needs_delay
def test_a_dead_delayer_stops_the_traffic_and_says_so(echo: int) -> None:
    """Fail closed: without its delayer the namespace passes nothing, rather than silently
    passing everything undelayed, and describe() reports the delayer's exit."""
    ns = netns.Namespace(ports=(echo,), impairment=netns.Impairment(delay_ms=5.0))
    with ns:
        assert ns._delayer is not None
        ns._delayer.send_signal(signal.SIGKILL)
        ns._delayer.wait(5)
        probe = ("import socket,sys\ntry:\n socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=1.5)\n"
                 " print('connected')\nexcept OSError as e:\n print('failed', e)")
        out = _in_ns(ns, sys.executable, "-c", probe, ns.host_ip, str(echo))
        assert out.startswith("failed"), out
        assert ns.describe()["applied"]["delayer"] == "exited -9"


def test_guard_allows_loopback_and_our_namespaces_only() -> None:
    assert guard.check_viewer_host("127.0.0.1") == "127.0.0.1"
    assert guard.check_viewer_host("localhost") == "127.0.0.1"
    assert guard.check_viewer_host("10.231.4.1") == "10.231.4.1"
    for host in ("10.0.0.1", "10.232.0.1", "192.168.1.10", "8.8.8.8", "example.com", "::1", "127.0.0.2"):
        with pytest.raises(LoadTestRefused, match="only 127.0.0.1 and flowcast's own namespaces"):
            guard.check_viewer_host(host)
    with pytest.raises(LoadTestRefused):
        netns.Impairment(loss=1.5)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveProcess]:
    tmp = tmp_path_factory.mktemp("netns")
    cfg = tmp / "one-rung.yaml"
    cfg.write_text(
        "ladder:\n  rungs:\n    - {name: 360p, width: 640, height: 360, video_bitrate_kbps: 600, profile: main, level: '3.0'}\n"
        "telemetry:\n  enabled: false\n"
    )
    proc = LiveProcess(tmp, "--config", str(cfg))
    try:
        proc.wait_ready(timeout=60.0)
        time.sleep(3.0)
        yield proc
    finally:
        proc.stop()


@pytest.mark.slow
@needs_delay
def test_lossy_namespace_stalls_more_than_a_clean_one_at_the_same_rtt(live: LiveProcess, tmp_path: Path) -> None:
    """VIEWERS viewers through the 4G profile (170 ms RTT, +-10 ms jitter each way, all on the
    kernel path) with no loss, and as many through the same with 5 % packet loss, at the same
    time. At that RTT TCP cannot hide the loss: a retransmission costs an RTT, a lost tail
    packet a probe or retransmission timeout (200 ms or more), a lost request as much, so
    parts arrive late and the lossy viewers stall; the clean ones, with the same delay, do not."""
    reports: dict[str, object] = {}
    four_g = netns.impairment_for(PROFILES["4g"], viewers=VIEWERS)
    spaces = {
        "clean": netns.Namespace(ports=(live.port,), impairment=four_g),
        "loss5": netns.Namespace(ports=(live.port,), impairment=replace(four_g, loss=0.05)),
    }

    def one(name: str) -> None:
        reports[name] = run_loadtest(
            live.url("/live/live/master.m3u8"), VIEWERS, RUN_S, "4g", "ll-hls", tmp_path / name,
            ramp=Ramp(up_s=2.0, down_s=1.0), netns=spaces[name],
        )

    try:
        spaces["clean"].open()
        spaces["loss5"].open()
        threads = [threading.Thread(target=one, args=(n,)) for n in spaces]
        for t in threads:
            t.start()
        for t in threads:
            t.join(RUN_S + 60)
    finally:
        for s in spaces.values():
            s.close()
    assert not any(s.name in _names() for s in spaces.values()), "namespaces left behind"
    assert set(reports) == {"clean", "loss5"}, "a run did not finish"
    data = {n: json.loads(r.json_path.read_text()) for n, r in reports.items()}
    rows = {n: d["viewers"] for n, d in data.items()}
    meta = data["loss5"]["run"]["netns"]
    assert meta["loss"] == 0.05 and meta["rtt_ms"] == 170.0 and meta["host_ip"].startswith("10.231.")
    # what the kernel path did, as each report recorded it at the end of its run
    counts = {n: netns.Applied(**d["run"]["netns"]["applied"]) for n, d in data.items()}
    assert data["clean"]["generator"]["relay_link"]["name"] == "loopback", "delay left in the relay too"
    assert all(len(v) == VIEWERS for v in rows.values())
    assert all(r["startup_time_ms"] is not None for r in rows["clean"]), "the clean namespace must play"
    assert all(r["bytes_received"] > 0 for r in rows["loss5"]), "the lossy namespace must still reach the origin"

    def rebuffer_ratio(rs: list[dict]) -> float:
        reb = sum(r["rebuffer_ms"] for r in rs)
        return reb / (reb + sum(r["play_time_ms"] for r in rs) or 1.0)

    ratio = {n: rebuffer_ratio(rs) for n, rs in rows.items()}
    stalls = {n: sum(r["rebuffer_count"] for r in rs) for n, rs in rows.items()}
    startup = {n: sorted(r["startup_time_ms"] or 1e9 for r in rs)[len(rs) // 2] for n, rs in rows.items()}
    verdict = {n: {v.criterion: v.label for v in r.verdicts} for n, r in reports.items()}
    applied = {n: a.as_dict() for n, a in counts.items()}
    p95 = {n: (d["summary"]["startup_p95_ms"], d["summary"]["latency_p95_ms"]) for n, d in data.items()}
    print(f"rebuffer ratio {ratio}, stalls {stalls}, median startup ms {startup}, (startup, latency) p95 {p95}, "
          f"verdicts {verdict}, applied {applied}")
    # What the kernel path did: the asked share dropped in the lossy namespace only (one
    # packet per skb, so this is a share of packets), and every packet of both delayed.
    for name, a in counts.items():
        assert a.delayer == "running" and a.queue_dropped == 0, a
        assert a.delayed >= 0.95 * a.queued > 1000, a  # segmented GSO would make delayed > queued
        for line in a.lines.values():
            assert 82.0 < line["mean_delay_ms"] < 90.0, a.lines  # 85 ms: +-10 ms jitter averages out
    dropped, packets = counts["loss5"].dropped, counts["loss5"].packets
    assert packets > 1000 and 0.03 < dropped / packets < 0.08, counts
    assert counts["clean"].dropped == 0, counts
    # The QoE cost, from the raw rows: the lossy viewers stall more and longer.
    assert ratio["loss5"] > ratio["clean"] and stalls["loss5"] > stalls["clean"], (ratio, stalls)
    # ...and the reports' own verdicts say the same: clean passes the rebuffer criterion,
    # the lossy run fails it, and each summary is what the rows give.
    for name in reports:
        assert data[name]["summary"]["rebuffer_ratio"] == pytest.approx(ratio[name]), name
    assert verdict["clean"]["rebuffer ratio"] == "PASS", verdict
    assert verdict["loss5"]["rebuffer ratio"] == "FAIL", verdict


def test_profiles_map_to_kernel_settings_and_relay_delay() -> None:
    from flowcast.loadtest.profiles import PROFILES

    wifi = PROFILES["wifi-congested"]
    imp = netns.impairment_for(wifi, viewers=10)
    assert (imp.loss, imp.down_kbps, imp.up_kbps) == (0.02, 40_000, 20_000)  # a cell of 10 users
    assert (imp.delay_ms, imp.jitter_ms, imp.rtt_ms) == (30.0, 40.0, 60.0)  # RTT/2 each way
    rest = netns.relay_part(wifi, imp)  # the relay keeps only the connection resets
    assert (rest.rtt_ms, rest.jitter_ms, rest.down_kbps, rest.packet_loss, rest.connection_drop) == (0, 0, None, 0, 0.01)
    assert rest.relayed
    # without kernel delay (no NetfilterQueue) the relay keeps delay and jitter
    no_delay = netns.impairment_for(wifi, viewers=10, kernel_delay=False)
    assert (no_delay.delay_ms, no_delay.jitter_ms) == (0.0, 0.0)
    rest = netns.relay_part(wifi, no_delay)
    assert (rest.rtt_ms, rest.jitter_ms, rest.down_kbps, rest.packet_loss) == (60.0, 40.0, None, 0.0)
    # nothing left for the relay at all: no relay
    assert netns.relay_part(PROFILES["4g"], netns.impairment_for(PROFILES["4g"])).name == "loopback"
    assert netns.relay_part(PROFILES["loopback"], netns.Impairment()).name == "loopback"
    assert netns.impairment_for(PROFILES["4g"]).down_kbps == 9_000
    with pytest.raises(LoadTestRefused):
        netns.Impairment(delay_ms=-1.0)
