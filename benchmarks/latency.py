"""Glass-to-glass latency and startup time per protocol, from the burned-in timecode.

Starts `flowcast up` (test source, default ladder, low-latency mode), then plays each
protocol in Debian's headless Chromium for --seconds and samples window.flowcastStats
4x per second. The latency is read off the picture (the wall clock burned into every
frame at capture, decoded from a canvas), so it includes encoding, packaging, the origin,
the player's buffer and decoding: glass to glass.

    python -m benchmarks.latency --seconds 60
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.browser import launch_chromium, open_player, read_stats, wait_playing  # noqa: E402
from tests.e2e.livestack import LiveProcess  # noqa: E402

PLAYERS = {
    "LL-HLS (hls.js)": "player=hls",
    "LL-DASH (dash.js)": "player=dash",
    "LL-HLS (Shaka)": "player=shaka&src=/live/live/master.m3u8",
    "LL-DASH (Shaka)": "player=shaka&src=/live/live/manifest.mpd",
}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def measure(browser, live: LiveProcess, query: str, seconds: float) -> dict:
    page = open_player(browser, live.url(f"/?{query}"))
    try:
        started = wait_playing(page, timeout=30)
        samples: list[float] = []
        t0 = time.monotonic()
        while time.monotonic() - t0 < seconds:
            page.wait_for_timeout(250)
            s = read_stats(page)
            if s.get("latencySource") == "timecode" and s.get("latencyMs") is not None:
                samples.append(float(s["latencyMs"]))
        end = read_stats(page)
        return {
            "startup_ms": started["startupMs"],
            "p50": percentile(samples, 0.5),
            "p95": percentile(samples, 0.95),
            "n": len(samples),
            "stalls": end["stalls"],
            "stall_ms": end["stallMs"],
            "bitrate": end["bitrateKbps"],
            "height": end["height"],
        }
    finally:
        page.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--only", nargs="*", help="subset of: " + ", ".join(PLAYERS))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        live = LiveProcess(Path(tmp))
        try:
            live.wait_ready()
            time.sleep(4)  # a few segments in the window, as a viewer joining a running stream
            results = {}
            with launch_chromium() as browser:
                for name, query in PLAYERS.items():
                    if args.only and name not in args.only:
                        continue
                    results[name] = measure(browser, live, query, args.seconds)
                    r = results[name]
                    print(f"{name}: startup {r['startup_ms']} ms, latency p50 {r['p50']:.0f} ms p95 {r['p95']:.0f} ms", flush=True)
        finally:
            live.stop()
    load = os.getloadavg()[0]
    print()
    print(f"machine: {platform.node()}, {os.cpu_count()} cores, {platform.platform()}; load avg {load:.1f}")
    print(f"{args.seconds:.0f} s per protocol, Chromium {chromium_version()}, default ladder, sampled 4x/s")
    print()
    print("| protocol (player) | startup ms | G2G p50 ms | G2G p95 ms | samples | stalls (ms) | rung at end |")
    print("|---|---|---|---|---|---|---|")
    for name, r in results.items():
        print(
            f"| {name} | {r['startup_ms']} | {r['p50']:.0f} | {r['p95']:.0f} | {r['n']} | "
            f"{r['stalls']} ({r['stall_ms']}) | {r['height']}p {r['bitrate']} kbps |"
        )


def chromium_version() -> str:
    import subprocess

    out = subprocess.run(["/usr/bin/chromium", "--version"], capture_output=True, text=True)
    return out.stdout.strip().replace("Chromium ", "")


if __name__ == "__main__":
    main()
