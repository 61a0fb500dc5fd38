"""The acceptance report: per-viewer rows -> summary, verdicts, JSON, PNG charts and HTML.

Maths as in flowcast.telemetry: rebuffer ratio = rebuffer_ms / (play_time_ms + rebuffer_ms)
summed over sessions; quantiles are exact, the element at floor(level x n) of the sorted
values (ClickHouse quantileExact, what telemetry.qoe reports), so a report and a QoE
dashboard over the same sessions agree.

Criteria (reference/schema.md, "Acceptance criteria"): startup p95 <= 2.0 s; rebuffer ratio
<= 0.5 %; LL-HLS latency p95 < 3 s (applied to LL-DASH too, the same near-live mode; not
applicable to plain HLS); zero critical player errors (a session that ended with an
error_code; errors a viewer retried past are counted apart as recovered).
"""

from __future__ import annotations

import html
import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

STARTUP_P95_MAX_MS = 2000.0
REBUFFER_RATIO_MAX = 0.005
LATENCY_P95_MAX_MS = 3000.0
LOW_LATENCY = ("ll-hls", "ll-dash")


def quantile(values: list[float], level: float) -> float | None:
    """quantileExact: the element at floor(level x n) of the sorted values."""
    if not values:
        return None
    s = sorted(values)
    return float(s[min(len(s) - 1, int(level * len(s)))])


def rebuffer_ratio(rebuffer_ms: float, play_time_ms: float) -> float | None:
    total = play_time_ms + rebuffer_ms
    return rebuffer_ms / total if total > 0 else None


@dataclass(frozen=True)
class Verdict:
    criterion: str
    threshold: str
    measured: str
    passed: bool | None  # None: not applicable

    @property
    def label(self) -> str:
        return {True: "PASS", False: "FAIL", None: "n/a"}[self.passed]


@dataclass
class Report:
    out_dir: Path
    json_path: Path
    html_path: Path
    charts: dict[str, Path]
    summary: dict[str, Any]
    verdicts: list[Verdict]
    viewers: list[dict[str, Any]] = field(repr=False)

    @property
    def passed(self) -> bool:
        return all(v.passed is not False for v in self.verdicts)


def summarise(viewers: list[dict[str, Any]]) -> dict[str, Any]:
    startups = [v["startup_time_ms"] for v in viewers if v["startup_time_ms"] is not None]
    lat = [x for v in viewers for x in v["latency_ms"]]
    reb = sum(v["rebuffer_ms"] for v in viewers)
    play = sum(v["play_time_ms"] for v in viewers)
    errors = Counter(v["error_code"] for v in viewers if v["error_code"])
    bitrate_play = sum(v["avg_bitrate_kbps"] * v["play_time_ms"] for v in viewers)
    return {
        "sessions": len(viewers),
        "started_sessions": len(startups),
        "startup_p50_ms": quantile(startups, 0.5),
        "startup_p95_ms": quantile(startups, 0.95),
        "startup_p99_ms": quantile(startups, 0.99),
        "rebuffer_count": sum(v["rebuffer_count"] for v in viewers),
        "rebuffer_ms": round(reb, 1),
        "play_time_ms": round(play, 1),
        "rebuffer_ratio": rebuffer_ratio(reb, play),
        "sessions_with_stalls": sum(1 for v in viewers if v["rebuffer_count"]),
        "avg_bitrate_kbps": round(bitrate_play / play, 1) if play else None,
        "latency_samples": len(lat),
        "latency_p50_ms": quantile(lat, 0.5),
        "latency_p95_ms": quantile(lat, 0.95),
        "critical_errors": sum(errors.values()),
        "error_codes": dict(errors),
        "recovered_errors": sum(v["recovered_errors"] for v in viewers),
        "requests": sum(v["requests"] for v in viewers),
        "bytes_received": sum(v["bytes_received"] for v in viewers),
        "bitrate_switches": sum(v["bitrate_switches"] for v in viewers),
    }


def verdicts(summary: dict[str, Any], protocol: str) -> list[Verdict]:
    def ms(x: float | None) -> str:
        return "no data" if x is None else f"{x:.0f} ms"

    s = summary
    out = [
        Verdict(
            "startup time p95",
            f"<= {STARTUP_P95_MAX_MS:.0f} ms",
            ms(s["startup_p95_ms"]),
            s["startup_p95_ms"] is not None and s["startup_p95_ms"] <= STARTUP_P95_MAX_MS,
        ),
        Verdict(
            "rebuffer ratio",
            f"<= {REBUFFER_RATIO_MAX:.1%}",
            "no data" if s["rebuffer_ratio"] is None else f"{s['rebuffer_ratio']:.3%}",
            s["rebuffer_ratio"] is not None and s["rebuffer_ratio"] <= REBUFFER_RATIO_MAX,
        ),
        Verdict(
            f"{protocol} latency p95",
            f"< {LATENCY_P95_MAX_MS:.0f} ms" if protocol in LOW_LATENCY else "(near-live only)",
            ms(s["latency_p95_ms"]),
            (s["latency_p95_ms"] is not None and s["latency_p95_ms"] < LATENCY_P95_MAX_MS)
            if protocol in LOW_LATENCY
            else None,
        ),
        Verdict(
            "critical player errors",
            "0",
            f"{s['critical_errors']} ({s['recovered_errors']} recovered)",
            s["critical_errors"] == 0,
        ),
    ]
    return out


def _series(buckets: dict[int, int], seconds: int) -> list[int]:
    return [int(buckets.get(i, 0)) for i in range(seconds)]


def active_series(viewers: list[dict[str, Any]], start_wall: float, seconds: int) -> list[int]:
    out = []
    for i in range(seconds):
        t = start_wall + i + 0.5
        out.append(sum(1 for v in viewers if v["start_ts"] <= t < v["end_ts"]))
    return out


def _charts(out: Path, data: dict[str, Any]) -> dict[str, Path]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pinned: matplotlib==3.11.2
        raise RuntimeError("PNG charts need matplotlib (pip install matplotlib==3.11.2)") from exc
    s = data["summary"]
    viewers = data["viewers"]
    ts = data["timeseries"]
    charts: dict[str, Path] = {}

    def save(fig: Any, name: str) -> None:
        p = out / f"{name}.png"
        fig.tight_layout()
        fig.savefig(p, dpi=80)
        plt.close(fig)
        charts[name] = p

    def cdf(ax: Any, values: list[float], label: str, marks: dict[str, float | None], limit: float | None) -> None:
        if values:
            xs = sorted(values)
            ax.plot(xs, [(i + 1) / len(xs) for i in range(len(xs))], label=label)
        for name, x in marks.items():
            if x is not None:
                ax.axvline(x, linestyle="--", linewidth=1, color="gray")
                ax.text(x, 0.05, f" {name} {x:.0f}", rotation=90, fontsize=8)
        if limit is not None:
            ax.axvline(limit, color="red", linewidth=1.5, label=f"limit {limit:.0f} ms")
        ax.set_ylabel("share of samples")
        ax.legend(loc="lower right", fontsize=8)

    fig, ax = plt.subplots(figsize=(6, 3.2))
    cdf(ax, [v["startup_time_ms"] for v in viewers if v["startup_time_ms"] is not None], "startup time",
        {"p50": s["startup_p50_ms"], "p95": s["startup_p95_ms"]}, STARTUP_P95_MAX_MS)
    ax.set_xlabel("startup time (ms)")
    ax.set_title("Startup time (CDF)")
    save(fig, "startup")

    fig, ax = plt.subplots(figsize=(6, 3.2))
    cdf(ax, [x for v in viewers for x in v["latency_ms"]], "latency",
        {"p50": s["latency_p50_ms"], "p95": s["latency_p95_ms"]},
        LATENCY_P95_MAX_MS if data["run"]["protocol"] in LOW_LATENCY else None)
    ax.set_xlabel("latency = now - PROGRAM-DATE-TIME / ProducerReferenceTime of the playhead (ms)")
    ax.set_title("Live latency (CDF)")
    save(fig, "latency")

    fig, ax = plt.subplots(figsize=(6, 3.2))
    ratios = sorted(
        (rebuffer_ratio(v["rebuffer_ms"], v["play_time_ms"]) or 0.0) * 100 for v in viewers
    )
    ax.bar(range(len(ratios)), ratios, width=1.0)
    ax.axhline(REBUFFER_RATIO_MAX * 100, color="red", label="limit 0.5 %")
    agg = s["rebuffer_ratio"]
    ax.set_title(f"Rebuffer ratio per session (all: {0 if agg is None else agg * 100:.3f} %)")
    ax.set_xlabel("sessions, sorted")
    ax.set_ylabel("rebuffer ratio (%)")
    ax.legend(fontsize=8)
    save(fig, "rebuffer")

    fig, ax = plt.subplots(figsize=(6, 3.2))
    codes = dict(s["error_codes"])
    codes["(recovered, retried)"] = s["recovered_errors"]
    ax.bar(list(codes), list(codes.values()), color=["red"] * (len(codes) - 1) + ["orange"])
    ax.set_title(f"Errors: {s['critical_errors']} critical sessions")
    ax.set_ylabel("count")
    ax.tick_params(axis="x", labelsize=8)
    save(fig, "errors")

    fig, ax = plt.subplots(figsize=(6, 3.2))
    x = list(range(len(ts["requests_per_s"])))
    ax.plot(x, ts["requests_per_s"], label="requests/s")
    ax.set_xlabel("s since start")
    ax.set_ylabel("requests/s")
    ax2 = ax.twinx()
    ax2.plot(x, [b * 8 / 1e6 for b in ts["bytes_per_s"]], color="green", label="Mbit/s")
    ax2.plot(x, ts["active_viewers"], color="gray", linestyle=":", label="active viewers")
    ax2.set_ylabel("Mbit/s | viewers")
    ax.legend(loc="upper left", fontsize=8)
    ax2.legend(loc="upper right", fontsize=8)
    ax.set_title("Load over time")
    save(fig, "throughput")

    fig, ax = plt.subplots(figsize=(6, 3.2))
    for name, ser in data["processes"].items():
        ax.plot(ser["t"], ser["cpu_pct"], label=f"{name} CPU %")
    ax.set_xlabel("s since start")
    ax.set_ylabel("CPU % (100 = one core)")
    ax2 = ax.twinx()
    for name, ser in data["processes"].items():
        ax2.plot(ser["t"], ser["rss_mb"], linestyle=":", label=f"{name} RSS MB")
    ax2.set_ylabel("RSS (MB)")
    ax.legend(loc="upper left", fontsize=7)
    ax2.legend(loc="upper right", fontsize=7)
    ax.set_title("Origin, encoder and generator processes (/proc)")
    save(fig, "processes")
    return charts


def _html(data: dict[str, Any], vs: list[Verdict], charts: dict[str, Path]) -> str:
    run, s = data["run"], data["summary"]
    rows = "".join(
        f"<tr class='{v.label.lower().replace('/', '')}'><td>{html.escape(v.criterion)}</td><td>{html.escape(v.threshold)}</td>"
        f"<td>{html.escape(v.measured)}</td><td><b>{v.label}</b></td></tr>"
        for v in vs
    )
    summ = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(json.dumps(val))}</td></tr>" for k, val in s.items())
    runrows = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(json.dumps(val))}</td></tr>" for k, val in run.items())
    imgs = "".join(f"<figure><img src='{p.name}' alt='{n}'><figcaption>{n}</figcaption></figure>" for n, p in charts.items())
    overall = "PASS" if data.get("passed", True) else "FAIL"
    drills = ""
    if data.get("drills"):
        drows = "".join(
            f"<tr class='{d['verdict'].lower().replace('/', '')}'><td>{html.escape(d['name'])}</td>"
            f"<td>{html.escape(d['expectation'])}</td><td>{html.escape(json.dumps(d['measured']))}</td>"
            f"<td><b>{d['verdict']}</b></td></tr>"
            for d in data["drills"]
        )
        drills = (
            "<h2>Drills</h2><table><tr><th>drill</th><th>what should happen</th><th>measured</th>"
            f"<th>verdict</th></tr>{drows}</table>"
        )
    gen = data.get("generator", {})
    warn = ""
    if gen.get("saturated"):
        warn = (
            f"<p style='color:#b00'><b>Generator saturated:</b> worker event-loop lag p95 "
            f"{gen['loop_lag_p95_ms']:.0f} ms (max {gen['loop_lag_max_ms']:.0f} ms). Startup, stalls and latency "
            f"include load-generator delay; treat them as pessimistic, and see the processes chart.</p>"
        )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>flowcast load test: {overall}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1100px}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left}}tr.pass td:last-child{{color:green}}
tr.fail td:last-child{{color:#b00}}figure{{display:inline-block;margin:0.5em}}</style></head><body>
<h1>flowcast load test: {overall}</h1>
<p>{run['viewers']} viewers, {run['protocol']}, network profile <code>{html.escape(run['profile'])}</code>,
{run['duration_s']} s against <code>{html.escape(run['target_url'])}</code>.</p>{warn}
<h2>Acceptance criteria (reference/schema.md)</h2>
<table><tr><th>criterion</th><th>threshold</th><th>measured</th><th>verdict</th></tr>{rows}</table>
{drills}
<h2>Charts</h2>{imgs}
<h2>Summary</h2><table>{summ}</table>
<h2>Run</h2><table>{runrows}</table>
<p>Per-viewer rows (schema.md field names) are in <code>report.json</code>.</p>
</body></html>
"""


def write_report(out_dir: Path, data: dict[str, Any]) -> Report:
    out_dir.mkdir(parents=True, exist_ok=True)
    vs = verdicts(data["summary"], data["run"]["protocol"])
    data["verdicts"] = [asdict(v) | {"verdict": v.label} for v in vs]
    data["passed"] = all(v.passed is not False for v in vs) and all(
        d["verdict"] != "FAIL" for d in data.get("drills", [])
    )
    charts = _charts(out_dir, data)
    data["charts"] = {k: p.name for k, p in charts.items()}
    json_path = out_dir / "report.json"
    json_path.write_text(json.dumps(data, indent=1))
    html_path = out_dir / "report.html"
    html_path.write_text(_html(data, vs, charts))
    return Report(out_dir, json_path, html_path, charts, data["summary"], vs, data["viewers"])
