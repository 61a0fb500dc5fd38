"""Prometheus alert rules from the SLOs (checked by promtool), the Grafana dashboard JSON,
and the SLI increments that feed the rules' counters."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from flowcast.telemetry.collector import Batch
from flowcast.telemetry.prom import GOOD, PANELS, TOTAL, alert_rules, alert_rules_yaml, grafana_dashboard, sli_increments
from flowcast.telemetry.schema import PlayerEvent
from flowcast.telemetry.slo import DEFAULT_RULES, DEFAULT_SLOS

PROMTOOL = shutil.which("promtool")


def test_rules_cover_every_slo_and_burn_rate_pair() -> None:
    doc = alert_rules()
    slo_groups = [g for g in doc["groups"] if g["name"].startswith("flowcast-slo-")]
    assert len(slo_groups) == len(DEFAULT_SLOS)
    alerts = [r for g in slo_groups for r in g["rules"] if "alert" in r]
    assert len(alerts) == len(DEFAULT_SLOS) * len(DEFAULT_RULES)
    (cost,) = [g for g in doc["groups"] if g["name"] == "flowcast-cost"]
    assert cost["rules"][0]["expr"] == "max(flowcast_cost_anomaly) == 1"  # the origin's gauge
    page = next(a for a in alerts if a["alert"] == "FlowcastSloBurn_startup_p95_2s_1h_5m")
    # standards.md section 6: 14.4 x (1 - 0.95) on both the 1 h and the 5 m window.
    assert page["expr"] == (
        'flowcast:qoe_sli_error_ratio:1h{slo="startup_p95_2s"} > 0.72 and '
        'flowcast:qoe_sli_error_ratio:5m{slo="startup_p95_2s"} > 0.72'
    )
    assert page["labels"]["severity"] == "page"
    records = [r["expr"] for g in slo_groups for r in g["rules"] if "record" in r]
    assert all(GOOD in e and TOTAL in e for e in records)
    assert {a["labels"]["severity"] for a in alerts} == {"page", "ticket"}


@pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (Debian package `prometheus`)")
def test_promtool_accepts_the_rules(tmp_path: Path) -> None:
    path = tmp_path / "rules.yml"
    path.write_text(alert_rules_yaml())
    out = subprocess.run([PROMTOOL, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout


def test_cli_prints_the_rules(capsys: pytest.CaptureFixture[str]) -> None:
    from flowcast.cli import main

    assert main(["qoe", "rules"]) == 0
    assert yaml.safe_load(capsys.readouterr().out) == alert_rules()


def test_grafana_dashboard_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from flowcast.cli import main

    assert main(["qoe", "grafana"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc == json.loads(json.dumps(grafana_dashboard()))
    exprs = [t["expr"] for p in doc["panels"] for t in p["targets"]]
    for _title, expr in PANELS:
        assert expr in exprs
    assert "flowcast_cost_per_viewer_minute_usd" in exprs
    for slo in DEFAULT_SLOS:
        assert f'flowcast:qoe_sli_error_ratio:1h{{slo="{slo.name}"}}' in exprs
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids))
    assert all(p["datasource"]["type"] == "prometheus" for p in doc["panels"])


def _ev(i: int, type_: str, **kw) -> PlayerEvent:
    return PlayerEvent(event_id=f"e{i}", type=type_, ts=1.0, session_id=kw.pop("sid", "s1"), user_id="",
                       protocol=kw.pop("protocol", "ll-hls"), **kw)


def test_sli_increments_match_the_slo_definitions() -> None:
    events = [
        _ev(0, "session_start"),
        _ev(1, "session_start", sid="s2"),
        _ev(2, "startup", startup_time_ms=900.0),
        _ev(3, "startup", startup_time_ms=2500.0),
        _ev(4, "latency", latency_ms=1000.0),
        _ev(5, "latency", latency_ms=4000.0),
        _ev(6, "latency", latency_ms=100.0, protocol="webrtc"),
        _ev(7, "stall", rebuffer_ms=500.0),
        _ev(8, "heartbeat", play_time_ms=9500.0),
        _ev(9, "error", error_code="hls:fatal", sid="s2"),
    ]
    inc = sli_increments(DEFAULT_SLOS, Batch(events, [], [], len(events)))
    assert inc["startup_p95_2s"] == (1.0, 2.0)
    assert inc["ll_hls_latency_p95_3s"] == (1.0, 2.0)
    assert inc["webrtc_latency_p95_500ms"] == (1.0, 1.0)
    assert inc["rebuffer_ratio_0.5pct"] == (9500.0, 10000.0)
    assert inc["playback_success_99.5pct"] == (1.0, 2.0)
