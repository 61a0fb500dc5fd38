"""`flowcast up` with telemetry (default) and without, and the `flowcast qoe` commands
against it: report over HTTP, report from the store with the origin stopped, erasure."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from .livestack import LiveProcess

pytestmark = pytest.mark.slow


def flowcast(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "flowcast.cli", *args], capture_output=True, text=True, timeout=120)


def beacon(sid: str, user: str, cdn: str) -> dict:
    t = int(time.time() * 1000) - 3000
    return {
        "session": {"session_id": sid, "user_id": user, "protocol": "ll-hls", "cdn": cdn, "consent": True},
        "events": [
            {"event_id": f"{sid}-0", "type": "session_start", "ts": t},
            {"event_id": f"{sid}-1", "type": "startup", "ts": t + 500, "startup_time_ms": 640},
            {"event_id": f"{sid}-2", "type": "heartbeat", "ts": t + 2500, "play_time_ms": 2000, "avg_bitrate_kbps": 2800},
        ],
    }


def test_report_and_erase_commands(tmp_path: Path) -> None:
    live = LiveProcess(tmp_path)
    try:
        live.wait_ready()
        for sid, user, cdn in (("c1", "alice", "cloudfront"), ("c2", "bob", "fastly")):
            r = httpx.post(live.url("/qoe/v1/events"), content=json.dumps(beacon(sid, user, cdn)), timeout=10)
            assert r.status_code == 202, r.text
        out = flowcast("qoe", "report", "--since", "1h", "--by", "cdn", "--url", live.base)
        assert out.returncode == 0, out.stderr
        lines = out.stdout.splitlines()
        assert lines[0].startswith("cdn\tsessions\tstartup p95 ms")
        assert any(line.startswith("cloudfront\t1\t640") for line in lines), out.stdout
        bad = flowcast("qoe", "report", "--by", "user_id", "--url", live.base)
        assert bad.returncode == 2 and "--by" in bad.stderr
        # alice's consent decision, as her player records it with the banner facts.
        grant = {"session_id": "c1", "action": "grant", "banner_version": "2026-11", "banner_hash": "0f" * 32,
                 "language": "pt-BR", "purposes": ["qoe_analytics"], "user_id": "alice"}
        assert httpx.post(live.url("/qoe/v1/consent"), json=grant, timeout=10).status_code == 201
        # Erasure by the raw id: hashed with the server's key (the dev key file here).
        out = flowcast("qoe", "erase", "--user", "alice", "--url", live.base, "--data-dir", str(tmp_path / "data"))
        assert out.returncode == 0 and "erased 1 session" in out.stdout, out.stdout + out.stderr
        assert httpx.get(live.url("/qoe/v1/sessions/c1"), timeout=10).status_code == 404
        assert httpx.get(live.url("/qoe/v1/sessions/c2"), timeout=10).status_code == 200
        # The consent proof outlives the erasure (docs/telemetry.md, LGPD Art. 8 par. 2, 16 I).
        out = flowcast("qoe", "consent", "--session", "c1", "--url", live.base)
        assert out.returncode == 0, out.stderr
        (line,) = out.stdout.splitlines()
        assert "\tgranted\tbanner 2026-11 sha256:" + "0f" * 32 + "\tpt-BR\tqoe_analytics\tuser " in line, line
        assert line.split("user ")[1] != "-"  # the pseudonymous hash, not the raw id
        assert "alice" not in line
        out = flowcast("qoe", "consent", "--session", "nobody", "--url", live.base)
        assert out.returncode != 0 and "404" in out.stderr
    finally:
        live.stop()
    # Stopped: the store itself answers (data survived the restart of nothing but the CLI).
    out = flowcast("qoe", "report", "--since", "1h", "--data-dir", str(tmp_path / "data"), "--json")
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert rows[0]["sessions"] == 1 and rows[0]["startup_p50_ms"] == 640


def test_telemetry_can_be_switched_off(tmp_path: Path) -> None:
    cfg = tmp_path / "flowcast.yml"
    cfg.write_text("telemetry:\n  enabled: false\n")
    live = LiveProcess(tmp_path, "--config", str(cfg))
    try:
        live.wait_ready()
        r = httpx.post(live.url("/qoe/v1/events"), content=b"[]", timeout=10)
        assert r.status_code == 405
        assert httpx.get(live.url("/qoe/v1/report"), timeout=10).status_code == 404
        assert not (tmp_path / "data" / "telemetry").exists()
    finally:
        live.stop()
