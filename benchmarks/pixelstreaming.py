"""Pixel Streaming latency on loopback, through Epic's frontend library in headless Chromium.

    python -m benchmarks.pixelstreaming [--duration 60] [--players 1] [--json out.json]

Starts `flowcast pixelstreaming` and a separate simulated streamer (real processes), opens
the page (Epic's frontend, bundled by `make web`) and measures, over `--duration` seconds:

- glass-to-glass latency: the page decodes the burned-in wall-clock strip of every
  presented frame (requestVideoFrameCallback) and subtracts it from Date.now(); the clock
  is stamped by FFmpeg when the frame is generated, so this covers encode, RTP/SRTP, jitter
  buffer, decode and presentation;
- input latency, page -> streamer: a key press every 250 ms; the page notes Date.now()
  when the keydown reaches the window (before Epic's library sends it), the streamer notes
  its wall clock when the data-channel message arrives and is decoded. Same machine, same
  clock.

Requires Debian's chromium and `make web`.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.browser import launch_chromium, open_player, read_stats  # noqa: E402
from tests.webrtc.test_pixelstreaming_browser import PSStack, wait_playing  # noqa: E402

KEYS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def percentile(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    rank = min(len(ordered) - 1, max(0, int(-(-p / 100 * len(ordered) // 1)) - 1))
    return ordered[rank]


def summary(values: list[float]) -> dict[str, float | int | None]:
    return {
        "n": len(values),
        "p50": percentile(values, 50),
        "p95": percentile(values, 95),
        "mean": round(statistics.fmean(values), 1) if values else None,
        "max": max(values) if values else None,
    }


def run(duration: float, players: int, audio: bool = True, lip_sync: bool = False) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="flowcast-psbench-") as tmp:
        stack = PSStack(Path(tmp))
        try:
            stack.start_streamer(*(() if audio else ("--no-audio",)), *(("--lip-sync",) if lip_sync else ()))
            with launch_chromium() as browser:
                pages = [open_player(browser, stack.base + "/") for _ in range(players)]
                for page in pages:
                    wait_playing(page, 60)
                main = pages[0]
                main.bring_to_front()  # background tabs get throttled frame callbacks
                # start the measurement window on a clean slate
                main.evaluate("() => { window.flowcastStats.latencySamples.length = 0; window.flowcastStats.keySentAt.length = 0; }")
                inputs_before = len(stack.inputs())
                end = time.monotonic() + duration
                presses = 0
                while time.monotonic() < end:
                    main.keyboard.press(f"Key{KEYS[presses % len(KEYS)]}")
                    presses += 1
                    main.wait_for_timeout(250)
                main.wait_for_timeout(1000)
                stats = read_stats(main)
        finally:
            stack.stop()
        glass = [float(v) for v in stats["latencySamples"]]
        sent = [(code, t) for code, t in stats["keySentAt"]]
        arrived = [e for e in stack.inputs()[inputs_before:] if e["name"] == "KeyDown" and e["player"] == "1"]
        input_ms: list[float] = []
        for (code, t_sent), event in zip(sent, arrived):
            if event["fields"]["keyCode"] != code:
                raise RuntimeError(f"input order mismatch: page sent {code}, streamer got {event['fields']['keyCode']}")
            input_ms.append(round(event["t"] - t_sent, 2))
        return {
            "duration_s": duration,
            "players": players,
            "audio": audio,
            "lip_sync": lip_sync,
            "glass_to_glass_ms": summary(glass),
            "input_page_to_streamer_ms": summary(input_ms),
            "key_presses": presses,
            "keys_arrived": len(arrived),
            "video": f"{stats['videoWidth']}x{stats['videoHeight']}",
            "codecs": [stats.get("videoCodec"), stats.get("audioCodec")],
            "jitter_buffer_ms": stats.get("jitterBufferMs"),
            "load_average": __import__("os").getloadavg(),
            "host": platform.node(),
            "cpus": __import__("os").cpu_count(),
        }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--players", type=int, default=1, help="players on the one streamer (the first is measured)")
    parser.add_argument("--no-audio", action="store_true", help="video only (no Opus tone, no lip-sync coupling)")
    parser.add_argument("--lip-sync", action="store_true", help="audio in the video's MediaStream (Chrome syncs them)")
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args()
    result = run(args.duration, args.players, audio=not args.no_audio, lip_sync=args.lip_sync)
    g, i = result["glass_to_glass_ms"], result["input_page_to_streamer_ms"]
    print(f"pixel streaming, {result['players']} player(s), {result['duration_s']:.0f} s, {result['video']}, audio {'on' if result['audio'] else 'off'}{' (lip sync)' if result['lip_sync'] else ''}")
    print(f"  glass-to-glass  p50 {g['p50']} ms  p95 {g['p95']} ms  (n={g['n']}, max {g['max']})")
    print(f"  input -> streamer  p50 {i['p50']} ms  p95 {i['p95']} ms  (n={i['n']}, max {i['max']})")
    print(f"  jitter buffer {result['jitter_buffer_ms']} ms; load average {', '.join(f'{x:.1f}' for x in result['load_average'])} on {result['cpus']} cpus")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
