"""The SLOs of slo.py as Prometheus series, alert rules and a Grafana dashboard.

Sans-I/O: `sli_increments` turns an accepted collector batch into (good, total) increments
per SLO (the same SLI definitions as qoe.sli_counts, so Prometheus and the store agree);
the origin adds them to two counters, `flowcast_qoe_sli_good_total{slo}` and
`flowcast_qoe_sli_total{slo}`. `alert_rules` writes the multiwindow, multi-burn-rate rules
(standards.md section 6) over those counters; `grafana_dashboard` the same panels as the
built-in /dashboard.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

import yaml

from flowcast.telemetry.collector import Batch
from flowcast.telemetry.slo import DEFAULT_RULES, DEFAULT_SLOS, BurnRateRule, Slo, _dur

GOOD: Final = "flowcast_qoe_sli_good_total"
TOTAL: Final = "flowcast_qoe_sli_total"


def sli_increments(slos: Iterable[Slo], batch: Batch) -> dict[str, tuple[float, float]]:
    """(good, total) to add per SLO name for one batch of consented events.

    playback_success counts at session level: a session_start is one more total, the
    first error event of a session in the batch one bad (good is total minus bad, which
    may go negative within one batch; only the ratio over a window is meaningful).
    """
    out: dict[str, tuple[float, float]] = {}
    for slo in slos:
        good = total = 0.0
        if slo.sli == "startup":
            for e in batch.events:
                if e.type == "startup":
                    total += 1
                    good += e.startup_time_ms <= (slo.threshold_ms or 0)
        elif slo.sli == "latency":
            for e in batch.events:
                if e.type == "latency" and e.protocol == slo.protocol:
                    total += 1
                    good += e.latency_ms < (slo.threshold_ms or 0)
        elif slo.sli == "rebuffer":
            for e in batch.events:
                if e.type in ("heartbeat", "session_end"):
                    good += e.play_time_ms
                    total += e.play_time_ms
                elif e.type == "stall":
                    total += e.rebuffer_ms
        else:  # playback_success
            starts = {e.session_id for e in batch.events if e.type == "session_start"}
            bad = {
                e.session_id
                for e in batch.events
                if e.type == "error" or (e.type == "session_end" and e.error_code)
            }
            total, good = float(len(starts)), float(len(starts) - len(bad))
        if total or good:
            out[slo.name] = (good, total)
    return out


def _error_ratio(slo: str, window_s: int) -> str:
    w = _dur(window_s)
    return (
        f'(1 - (sum(increase({GOOD}{{slo="{slo}"}}[{w}])) / sum(increase({TOTAL}{{slo="{slo}"}}[{w}]))))'
    )


def alert_rules(
    slos: Iterable[Slo] = DEFAULT_SLOS, rules: Iterable[BurnRateRule] = DEFAULT_RULES
) -> dict[str, Any]:
    """Prometheus rule groups: error-ratio recording rules per window, and one alert per SLO
    and burn-rate pair that fires when both windows burn faster than burn_rate x budget."""
    rules = tuple(rules)
    windows = sorted({w for r in rules for w in (r.long_window_s, r.short_window_s)})
    groups = []
    for slo in slos:
        recording = [
            {
                "record": f"flowcast:qoe_sli_error_ratio:{_dur(w)}",
                "expr": _error_ratio(slo.name, w),
                "labels": {"slo": slo.name},
            }
            for w in windows
        ]
        alerts = []
        for r in rules:
            threshold = round(r.burn_rate * slo.error_budget, 10)
            lw, sw = _dur(r.long_window_s), _dur(r.short_window_s)
            alerts.append(
                {
                    "alert": f"FlowcastSloBurn_{_ident(slo.name)}_{lw}_{sw}",
                    "expr": (
                        f'flowcast:qoe_sli_error_ratio:{lw}{{slo="{slo.name}"}} > {threshold:g} and '
                        f'flowcast:qoe_sli_error_ratio:{sw}{{slo="{slo.name}"}} > {threshold:g}'
                    ),
                    "labels": {"severity": r.severity, "slo": slo.name},
                    "annotations": {
                        "summary": f"SLO {slo.name} burning its 30-day error budget at > {r.burn_rate:g}x",
                        "description": (
                            f"Error ratio over {lw} and {sw} above {r.burn_rate:g} x (1 - {slo.objective:g}); "
                            f"{'page now' if r.severity == 'page' else 'open a ticket'}."
                        ),
                    },
                }
            )
        groups.append({"name": f"flowcast-slo-{_ident(slo.name)}", "rules": recording + alerts})
    groups.append(COST_RULES)
    return {"groups": groups}


# The cost anomaly detector runs in the origin (telemetry/cost.py, trailing baseline) and
# exports its state; the rule turns it into an Alertmanager ticket beside the log/webhook.
COST_RULES: Final = {
    "name": "flowcast-cost",
    "rules": [
        {
            "alert": "FlowcastCostPerViewerMinuteAnomaly",
            "expr": "max(flowcast_cost_anomaly) == 1",
            "labels": {"severity": "ticket"},
            "annotations": {
                "summary": "Cost per viewer-minute above its anomaly factor x trailing baseline",
                "description": (
                    "flowcast_cost_per_viewer_minute_usd is above telemetry.anomaly_factor x "
                    "flowcast_cost_per_viewer_minute_baseline_usd; check egress per viewer (bitrate, "
                    "cache hit ratio, CDN region mix)."
                ),
            },
        }
    ],
}


def alert_rules_yaml(slos: Iterable[Slo] = DEFAULT_SLOS, rules: Iterable[BurnRateRule] = DEFAULT_RULES) -> str:
    return yaml.safe_dump(alert_rules(slos, rules), sort_keys=False, width=200)


def _ident(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name)


# Panels shared by the Grafana dashboard and /dashboard (dashboard.js draws the same series
# from /qoe/v1/timeseries).
PANELS: Final = (
    ("Startup time p95 (ms)", 'histogram_quantile(0.95, sum by (le) (rate(flowcast_qoe_startup_ms_bucket[5m])))'),
    ("Rebuffer ratio", f'1 - sum(rate({GOOD}{{slo="rebuffer_ratio_0.5pct"}}[5m])) / sum(rate({TOTAL}{{slo="rebuffer_ratio_0.5pct"}}[5m]))'),
    ("Stalls per minute", "sum(rate(flowcast_qoe_stalls_total[5m])) * 60"),
    ("Latency p95 (ms)", 'histogram_quantile(0.95, sum by (le) (rate(flowcast_qoe_latency_ms_bucket[5m])))'),
    ("Average bitrate (kbps)", "sum(rate(flowcast_qoe_bitrate_kbps_sum[5m])) / sum(rate(flowcast_qoe_bitrate_kbps_count[5m]))"),
    ("Origin requests per second", "sum by (resource) (rate(flowcast_origin_requests_total[1m]))"),
    ("Part publish lag p95 (s)", "histogram_quantile(0.95, sum by (le) (rate(flowcast_part_publish_lag_seconds_bucket[5m])))"),
)


# Grafana only (the built-in /dashboard shows QoE, not money).
COST_PANELS: Final = (
    ("Cost per viewer-minute (USD)", "flowcast_cost_per_viewer_minute_usd"),
    ("Cost per transcode hour (USD)", "flowcast_cost_per_transcode_hour_usd"),
)


def grafana_dashboard(slos: Iterable[Slo] = DEFAULT_SLOS) -> dict[str, Any]:
    """A Grafana dashboard (schemaVersion 39) over a Prometheus data source variable."""
    panels = []
    for i, (title, expr) in enumerate(PANELS + COST_PANELS):
        panels.append(
            {
                "id": i + 1,
                "type": "timeseries",
                "title": title,
                "datasource": {"type": "prometheus", "uid": "${datasource}"},
                "gridPos": {"h": 8, "w": 12, "x": (i % 2) * 12, "y": (i // 2) * 8},
                "targets": [{"refId": "A", "expr": expr, "datasource": {"type": "prometheus", "uid": "${datasource}"}}],
            }
        )
    base = len(panels)
    for j, slo in enumerate(slos):
        panels.append(
            {
                "id": base + j + 1,
                "type": "timeseries",
                "title": f"SLO {slo.name}: error ratio vs budget",
                "datasource": {"type": "prometheus", "uid": "${datasource}"},
                "gridPos": {"h": 6, "w": 8, "x": (j % 3) * 8, "y": 100 + (j // 3) * 6},
                "targets": [
                    {"refId": "A", "expr": f'flowcast:qoe_sli_error_ratio:1h{{slo="{slo.name}"}}', "legendFormat": "1h"},
                    {"refId": "B", "expr": f'flowcast:qoe_sli_error_ratio:5m{{slo="{slo.name}"}}', "legendFormat": "5m"},
                    {"refId": "C", "expr": f"vector({slo.error_budget:g})", "legendFormat": "budget"},
                ],
            }
        )
    return {
        "uid": "flowcast-qoe",
        "title": "flowcast QoE and SLOs",
        "schemaVersion": 39,
        "time": {"from": "now-1h", "to": "now"},
        "refresh": "10s",
        "templating": {
            "list": [{"name": "datasource", "type": "datasource", "query": "prometheus", "label": "Prometheus"}]
        },
        "panels": panels,
    }
