from __future__ import annotations

import time
from pathlib import Path

import pytest

from flowcast.telemetry.collector import Collector, CollectorConfig
from flowcast.telemetry.qoe import GROUP_FIELDS, plan, qoe_aggregates, sli_counts
from flowcast.telemetry.slo import DEFAULT_SLOS
from flowcast.telemetry.store import EmbeddedStore

from . import synth
from .conftest import TEST_KEY

N_EVENTS = 100_000
NOW = time.time()
T0_MS = int((NOW - 6 * 3600) * 1000)
SPAN_MS = 5 * 3600 * 1000


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory):
    """100,000 events through the collector (batches of 100) into chDB."""
    sess = synth.sessions(N_EVENTS, T0_MS, SPAN_MS)
    collector = Collector(CollectorConfig(hmac_key=TEST_KEY, rate_events_per_s=0))
    store = EmbeddedStore(Path(tmp_path_factory.mktemp("qoe")) / "chdb")
    events, sessions = [], []
    for b in synth.batches(sess):
        batch = collector.collect(b, now=NOW)
        events.extend(batch.events)
        sessions.extend(batch.sessions)
    for i in range(0, len(events), 20_000):
        store.insert_events(events[i : i + 20_000])
    store.insert_sessions(sessions)
    # A retried slice of batches must not change a single figure.
    store.insert_events(events[:5000])
    try:
        yield sess, store, len(events)
    finally:
        store.close()


FIELDS = (
    "sessions", "startups", "startup_p50_ms", "startup_p95_ms", "startup_p99_ms", "latency_p50_ms",
    "latency_p95_ms", "rebuffer_count", "play_time_ms", "dropped_frames",
)
RATIOS = ("rebuffer_ratio", "stalls_per_hour", "avg_bitrate_kbps", "error_rate")


def check(row: dict, truth: dict) -> None:
    for f in FIELDS:
        assert row[f] == truth[f], f
    for f in RATIOS:
        assert row[f] == pytest.approx(truth[f], rel=1e-12), f


SOURCES = ("raw", "auto")  # the exact raw-table path, and the rollup (or hybrid) path


@pytest.mark.parametrize("source", SOURCES)
def test_overall_matches_ground_truth(loaded, source: str) -> None:
    sess, store, n = loaded
    assert n >= N_EVENTS and store.count_events() == n
    assert plan(None, None, (), source) == ("raw" if source == "raw" else "rollup")
    (row,) = qoe_aggregates(store, source=source)
    truth = synth.ground_truth(sess, 0, 2**62)[()]
    check(row.as_dict(), truth)
    # Sanity on the known distributions (lognormal startup median e^6.8 ~ 898 ms).
    assert 850 < row.startup_p50_ms < 950
    assert 0.0 < row.rebuffer_ratio < 0.05 and 0.0 < row.error_rate < 0.05


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("group_by", [("protocol",), ("cdn", "region"), ("player_version", "stream_id")])
def test_grouped_and_time_range(loaded, group_by: tuple[str, ...], source: str) -> None:
    sess, store, _ = loaded
    # T0 is not on a minute: "auto" reads whole minutes from the rollup and both
    # sub-minute edges from the raw events.
    start_ms, end_ms = T0_MS + 3_600_000, T0_MS + 3 * 3_600_000
    assert start_ms % 60_000 and end_ms % 60_000
    assert plan(start_ms / 1000, end_ms / 1000, group_by, source) == ("raw" if source == "raw" else "hybrid")
    rows = qoe_aggregates(store, start_ms / 1000, end_ms / 1000, group_by, source)
    truth = synth.ground_truth(sess, start_ms, end_ms, group_by)
    assert {tuple(r.group[g] for g in group_by) for r in rows} == set(truth)
    for r in rows:
        check(r.as_dict(), truth[tuple(r.group[g] for g in group_by)])


def test_sli_counts(loaded) -> None:
    sess, store, _ = loaded
    by_name = {s.name: s for s in DEFAULT_SLOS}
    good, total = sli_counts(store, by_name["startup_p95_2s"], 0, 2**31)
    startups = [e["startup_time_ms"] for s in sess for e in s["events"] if e["type"] == "startup"]
    assert (good, total) == (sum(v <= 2000 for v in startups), len(startups))
    good, total = sli_counts(store, by_name["webrtc_latency_p95_500ms"], 0, 2**31)
    lat = [e["latency_ms"] for s in sess if s["session"]["protocol"] == "webrtc" for e in s["events"] if e["type"] == "latency"]
    assert (good, total) == (sum(v < 500 for v in lat), len(lat))
    good, total = sli_counts(store, by_name["playback_success_99.5pct"], 0, 2**31)
    errs = sum(any(e["type"] == "error" for e in s["events"]) for s in sess)
    assert (good, total) == (len(sess) - errs, len(sess))
    (row,) = qoe_aggregates(store)
    good, total = sli_counts(store, by_name["rebuffer_ratio_0.5pct"], 0, 2**31)
    assert 1 - good / total == pytest.approx(row.rebuffer_ratio, rel=1e-12)


def test_group_by_is_allowlisted(loaded) -> None:
    _, store, _ = loaded
    with pytest.raises(ValueError):
        qoe_aggregates(store, group_by=("protocol; DROP TABLE x",))
    assert "protocol" in GROUP_FIELDS


def test_empty_range(loaded) -> None:
    _, store, _ = loaded
    assert qoe_aggregates(store, 0, 1) == []
    assert plan(0, 7200.5, ()) == "hybrid" and qoe_aggregates(store, 0, 7200.5) == []
    assert qoe_aggregates(store, 0, 7200, ("cdn",)) == []


def test_minute_aligned_range_reads_rollup_only(loaded) -> None:
    sess, store, _ = loaded
    start_ms = (T0_MS // 60_000 + 30) * 60_000
    end_ms = start_ms + 97 * 60_000
    assert plan(start_ms / 1000, end_ms / 1000, ("cdn",)) == "rollup"
    rows = qoe_aggregates(store, start_ms / 1000, end_ms / 1000, ("cdn",))
    truth = synth.ground_truth(sess, start_ms, end_ms, ("cdn",))
    assert len(rows) == len(truth) == 3
    for r in rows:
        check(r.as_dict(), truth[(r.group["cdn"],)])
    # No whole minute inside the range: raw only.
    assert plan(start_ms / 1000 + 30, start_ms / 1000 + 110, ()) == "raw"
    assert plan(start_ms / 1000 + 30, start_ms / 1000 + 150, ()) == "hybrid"

