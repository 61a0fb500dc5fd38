"""Kernel impairment in network namespaces (iptables statistic loss, tc tbf) against a real
`flowcast up`: a 5 %-loss namespace run against a clean namespace run at the same time,
compared from the raw per-viewer rows; setup and teardown, also after a failed setup."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from flowcast.loadtest import LoadTestRefused, Ramp, guard, netns, run_loadtest  # noqa: F401
from tests.e2e.livestack import LiveProcess

pytestmark = pytest.mark.skipif(netns.available() is not None, reason=str(netns.available()))
RUN_S = 16.0


def _names() -> list[str]:
    return subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()


def _links() -> str:
    return subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout


def _nat() -> str:
    return subprocess.run(["iptables", "-t", "nat", "-S"], capture_output=True, text=True).stdout


def test_namespace_setup_and_teardown() -> None:
    ns = netns.Namespace(ports=(18555,), impairment=netns.Impairment(loss=0.05, down_kbps=4000, up_kbps=2000))
    with ns:
        assert ns.name in _names()
        assert f"{ns.host_if}@" in _links()
        assert f"--dport 18555 -j DNAT --to-destination 127.0.0.1:18555" in _nat()
        rules = subprocess.run(["ip", "netns", "exec", ns.name, "iptables", "-S"], capture_output=True, text=True).stdout
        assert rules.count("--mode random --probability 0.0499999") == 2, rules  # both directions (2^-32 steps)
        qd = subprocess.run(["tc", "qdisc", "show", "dev", ns.host_if], capture_output=True, text=True).stdout
        assert "tbf" in qd and "4Mbit" in qd, qd
        qd_ns = subprocess.run(["ip", "netns", "exec", ns.name, "tc", "qdisc", "show", "dev", ns.ns_if],
                               capture_output=True, text=True).stdout
        assert "tbf" in qd_ns and "2Mbit" in qd_ns, qd_ns
    assert ns.name not in _names()
    assert f"{ns.host_if}@" not in _links()
    assert "18555" not in _nat()


def test_teardown_after_a_failed_setup(monkeypatch: pytest.MonkeyPatch) -> None:
    real = netns._run

    def failing(*cmd: str, **kw: object):  # type: ignore[no-untyped-def]
        if cmd[:2] == ("tc", "qdisc"):
            raise netns.NetnsError("injected failure at the tbf step")
        return real(*cmd, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(netns, "_run", failing)
    ns = netns.Namespace(ports=(18556,), impairment=netns.Impairment(loss=0.01, down_kbps=1000))
    with pytest.raises(netns.NetnsError, match="injected"):
        ns.open()
    monkeypatch.undo()
    assert ns.name not in _names()
    assert f"{ns.host_if}@" not in _links()
    assert "18556" not in _nat()


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
def test_lossy_namespace_drops_its_share_and_viewers_play(live: LiveProcess, tmp_path: Path) -> None:
    reports: dict[str, object] = {}
    spaces = {
        "clean": netns.Namespace(ports=(live.port,)),
        "loss5": netns.Namespace(ports=(live.port,), impairment=netns.Impairment(loss=0.05)),
    }

    def one(name: str) -> None:
        reports[name] = run_loadtest(
            live.url("/live/live/master.m3u8"), 10, RUN_S, "loopback", "ll-hls", tmp_path / name,
            ramp=Ramp(up_s=2.0, down_s=1.0), netns=spaces[name],
        )

    counts: dict[str, tuple[int, int]] = {}
    try:
        spaces["clean"].open()
        spaces["loss5"].open()
        threads = [threading.Thread(target=one, args=(n,)) for n in spaces]
        for t in threads:
            t.start()
        for t in threads:
            t.join(RUN_S + 60)
        counts = {n: s.packets() for n, s in spaces.items()}
    finally:
        for s in spaces.values():
            s.close()
    assert not any(s.name in _names() for s in spaces.values()), "namespaces left behind"
    assert set(reports) == {"clean", "loss5"}, "a run did not finish"
    rows = {n: json.loads(r.json_path.read_text())["viewers"] for n, r in reports.items()}
    meta = json.loads(reports["loss5"].json_path.read_text())["run"]["netns"]
    assert meta["loss"] == 0.05 and meta["host_ip"].startswith("10.231.")
    assert all(len(v) == 10 for v in rows.values())
    assert all(r["startup_time_ms"] is not None for r in rows["clean"]), "the clean namespace must play"
    assert all(r["bytes_received"] > 0 for r in rows["loss5"]), "the lossy namespace must still reach the origin"

    def rebuffer_ratio(rs: list[dict]) -> float:
        reb = sum(r["rebuffer_ms"] for r in rs)
        return reb / (reb + sum(r["play_time_ms"] for r in rs) or 1.0)

    def median(xs: list[float]) -> float:
        return sorted(xs)[len(xs) // 2]

    tput = {n: median([r["throughput_kbps"] or 0.0 for r in rs]) for n, rs in rows.items()}
    ratio = {n: rebuffer_ratio(rs) for n, rs in rows.items()}
    print(f"rebuffer ratio {ratio}, median throughput kbps {tput}, (dropped, packets) {counts}")
    # The kernel dropped the asked share of the lossy namespace's packets, none of the clean
    # one's, and every lossy viewer still played. Whether that also shows as stalls or lower
    # throughput is left to the numbers: at a veth's ~0.05 ms RTT, TCP recovers most losses
    # in microseconds (one loaded CI run saw neither), and this kernel has no netem to add
    # delay to the same TCP path; the relay-modelled lossy profiles show the QoE cost.
    dropped, packets = counts["loss5"]
    assert packets > 1000 and 0.03 < dropped / packets < 0.08, counts
    assert counts["clean"][0] == 0, counts
    assert all(r["startup_time_ms"] is not None for r in rows["loss5"]), "the lossy namespace must play"


def test_profiles_map_to_kernel_settings_and_relay_delay() -> None:
    from flowcast.loadtest.profiles import PROFILES

    wifi = PROFILES["wifi-congested"]
    imp = netns.impairment_for(wifi, viewers=10)
    assert (imp.loss, imp.down_kbps, imp.up_kbps) == (0.02, 40_000, 20_000)  # a cell of 10 users
    rest = netns.relay_part(wifi)
    assert (rest.rtt_ms, rest.jitter_ms, rest.down_kbps, rest.packet_loss) == (60.0, 40.0, None, 0.0)
    assert netns.relay_part(PROFILES["loopback"]).name == "loopback"
    assert netns.impairment_for(PROFILES["4g"]).down_kbps == 9_000
