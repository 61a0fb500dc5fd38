"""QoE telemetry: collector ingest rate on one core, QoE query time on chDB.

1. Ingest: the synthetic player beacons of the tests (tests/telemetry/synth.py), as JSON
   batches of 100 events, through Collector.collect on one core (process pinned to CPU 0):
   bytes in -> validated, HMAC-pseudonymised rows out. Then the same with the rows written
   to chDB in 5,000-event inserts, for the end-to-end figure.
2. Query: --events synthetic events (default 10 million, 7 days, 6 protocols x 3 CDNs x
   4 regions) generated inside chDB with INSERT ... SELECT FROM numbers(), then
   qoe_aggregates (exact quantiles) over the whole range, grouped and not, from the
   per-minute rollup (the default path) and from player_events FINAL (source="raw"),
   and one SLI count. Best and median of --repeat runs.

    python -m benchmarks.telemetry --events 10000000
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from flowcast.telemetry.collector import Collector, CollectorConfig  # noqa: E402
from flowcast.telemetry.qoe import qoe_aggregates, sli_counts  # noqa: E402
from flowcast.telemetry.slo import DEFAULT_SLOS  # noqa: E402
from flowcast.telemetry.store import EmbeddedStore  # noqa: E402
from tests.telemetry import synth  # noqa: E402

GENERATE = """
INSERT INTO flowcast.player_events
    (event_id, type, ts, session_id, user_id, protocol, cdn, region, player_version, stream_id,
     codec, startup_time_ms, rebuffer_ms, avg_bitrate_kbps, dropped_frames, latency_ms,
     play_time_ms, error_code)
SELECT
    toString(number) AS event_id,
    multiIf(number % 50 = 0, 'session_start', number % 50 = 1, 'startup', number % 50 = 49, 'session_end',
            number % 100 < 8, 'stall', number % 100 < 30, 'latency', number % 1000 = 31, 'error',
            'heartbeat') AS type,
    fromUnixTimestamp64Milli(toInt64({t0:Int64} + intDiv(number * {span:Int64}, {n:Int64})), 'UTC') AS ts,
    concat('s', toString(intDiv(number, 50))) AS session_id,
    '' AS user_id,
    ['ll-hls', 'hls', 'll-dash', 'dash', 'webrtc', 'pixel-streaming'][intDiv(number, 50) % 6 + 1] AS protocol,
    ['cloudfront', 'fastly', 'akamai'][intDiv(number, 50) % 3 + 1] AS cdn,
    ['sa-east-1', 'us-east-1', 'eu-west-1', 'ap-south-1'][intDiv(number, 150) % 4 + 1] AS region,
    'hls.js 1.7.4' AS player_version,
    'live' AS stream_id,
    'h264' AS codec,
    if(type = 'startup', 300 + cityHash64(number) % 3000, 0) AS startup_time_ms,
    if(type = 'stall', cityHash64(number) % 2000, 0) AS rebuffer_ms,
    if(type IN ('heartbeat', 'session_end'), [400, 1000, 2500, 4500][cityHash64(number) % 4 + 1], 0) AS avg_bitrate_kbps,
    if(type = 'heartbeat', cityHash64(number) % 3, 0) AS dropped_frames,
    if(type = 'latency', 100 + cityHash64(number) % 4000, 0) AS latency_ms,
    if(type IN ('heartbeat', 'session_end'), 1000 + cityHash64(number) % 9000, 0) AS play_time_ms,
    if(type = 'error', 'MEDIA_ERR_NETWORK', '') AS error_code
FROM numbers({n:UInt64})
"""


def bench_ingest(n_events: int) -> dict[str, float]:
    now = time.time()
    sess = synth.sessions(n_events, int((now - 6 * 3600) * 1000), 5 * 3600 * 1000)
    batches = synth.batches(sess, 100)
    events = sum(len(s["events"]) for s in sess)
    collector = Collector(CollectorConfig(hmac_key=os.urandom(32), rate_events_per_s=0))
    prev = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(prev)})
    try:
        best = float("inf")
        for _ in range(3):
            t = time.perf_counter()
            for b in batches:
                collector.collect(b, now=now)
            best = min(best, time.perf_counter() - t)
        with tempfile.TemporaryDirectory() as d:
            store = EmbeddedStore(Path(d) / "chdb")
            try:
                t = time.perf_counter()
                pending, sessions = [], []
                for b in batches:
                    batch = collector.collect(b, now=now)
                    pending.extend(batch.events)
                    sessions.extend(batch.sessions)
                    if len(pending) >= 5000:
                        store.insert_events(pending)
                        store.insert_sessions(sessions)
                        pending, sessions = [], []
                store.insert_events(pending)
                store.insert_sessions(sessions)
                e2e = time.perf_counter() - t
            finally:
                store.close()
    finally:
        os.sched_setaffinity(0, prev)
    return {"events": events, "batches": len(batches), "collect_s": best, "collect_eps": events / best,
            "e2e_s": e2e, "e2e_eps": events / e2e}


def bench_query(n: int, repeat: int) -> dict[str, object]:
    now = time.time()
    span_ms = 7 * 86_400_000
    t0_ms = int(now * 1000) - span_ms
    out: dict[str, object] = {"events": n}
    with tempfile.TemporaryDirectory() as d:
        store = EmbeddedStore(Path(d) / "chdb")
        try:
            t = time.perf_counter()
            store.execute(GENERATE, {"t0": t0_ms, "span": span_ms, "n": n})
            out["generate_s"] = time.perf_counter() - t
            assert store.count_events() == n
            out["rollup_rows"] = store.query("SELECT count() AS n FROM flowcast.qoe_minute")[0]["n"]
            # Identical figures from both paths, checked here on the full data set.
            for by in ((), ("cdn",)):
                assert qoe_aggregates(store, group_by=by) == qoe_aggregates(store, group_by=by, source="raw")
            cases = {
                "all, no grouping (rollup)": lambda: qoe_aggregates(store),
                "all, by cdn (rollup)": lambda: qoe_aggregates(store, group_by=("cdn",)),
                "all, by protocol (rollup)": lambda: qoe_aggregates(store, group_by=("protocol",)),
                "all, by cdn x region (rollup)": lambda: qoe_aggregates(store, group_by=("cdn", "region")),
                "last 24 h, by protocol (hybrid)": lambda: qoe_aggregates(store, now - 86400, now, ("protocol",)),
                "all, no grouping (raw)": lambda: qoe_aggregates(store, source="raw"),
                "all, by cdn (raw)": lambda: qoe_aggregates(store, group_by=("cdn",), source="raw"),
                "SLI count (startup, 1 h)": lambda: sli_counts(store, DEFAULT_SLOS[0], now - 3600, now),
            }

            def parts() -> int:
                return store.query(
                    "SELECT count() AS parts FROM system.parts WHERE database = 'flowcast' "
                    "AND table = 'player_events' AND active"
                )[0]["parts"]

            def run_all() -> dict[str, tuple[float, float]]:
                results = {}
                for name, fn in cases.items():
                    fn()  # warm
                    times = []
                    for _ in range(repeat):
                        t = time.perf_counter()
                        fn()
                        times.append(time.perf_counter() - t)
                    results[name] = (min(times), statistics.median(times))
                return results

            out["parts"] = parts()
            out["queries"] = run_all()
            # Steady state: background merges have collapsed each day's parts (forced here),
            # so FINAL has little left to merge at read time.
            store.execute("OPTIMIZE TABLE flowcast.player_events FINAL")
            store.execute("OPTIMIZE TABLE flowcast.qoe_minute FINAL")
            out["parts_merged"] = parts()
            out["queries_merged"] = run_all()
        finally:
            store.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=10_000_000)
    ap.add_argument("--ingest-events", type=int, default=200_000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    print(f"load average at start: {os.getloadavg()[0]:.2f} (1 min), {os.cpu_count()} CPUs")
    ing = bench_ingest(args.ingest_events)
    print(f"ingest: {ing['events']} events in {ing['batches']} batches of <= 100")
    print(f"  collector only, 1 core: {ing['collect_s']:.2f} s = {ing['collect_eps']:,.0f} events/s")
    print(f"  collector + chDB insert (5,000-event blocks): {ing['e2e_s']:.2f} s = {ing['e2e_eps']:,.0f} events/s")
    q = bench_query(args.events, args.repeat)
    print(f"query store: {q['events']:,} events generated in {q['generate_s']:.1f} s "
          f"(with the rollup's view; {q['rollup_rows']:,} rollup rows)")
    for key, parts in (("queries", q["parts"]), ("queries_merged", q["parts_merged"])):
        print(f" {'as inserted' if key == 'queries' else 'after OPTIMIZE FINAL'} ({parts} active parts):")
        for name, (best, med) in q[key].items():  # type: ignore[union-attr]
            print(f"  {name}: best {best * 1000:.0f} ms, median {med * 1000:.0f} ms")
    print(f"load average at end: {os.getloadavg()[0]:.2f} (1 min), {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
