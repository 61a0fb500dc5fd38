"""Does `flowcast up` (no arguments) keep FFmpeg at >= 1.0x on this machine?

Runs the default stack for --seconds (600 by default, as issue 2 asks), reads the speed the
supervisor logs every 10 s, and prints min / median / the share of samples below 1.0x.

    python -m benchmarks.encoder_speed --seconds 600
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time

SPEED = re.compile(r"encoder speed=([0-9.]+)x fps=([0-9.]+)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=600)
    ap.add_argument("--port", type=int, default=18181)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        log_path = os.path.join(tmp, "up.log")
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "flowcast.cli", "up", "--port", str(args.port), "--data-dir", tmp],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            try:
                time.sleep(args.seconds)
            finally:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(15)
        text = open(log_path, errors="replace").read()
    samples = [(float(s), float(f)) for s, f in SPEED.findall(text)][1:]  # the first is taken at start-up
    if not samples:
        sys.exit("no speed samples logged:\n" + text[-2000:])
    speeds = [s for s, _ in samples]
    fps = [f for _, f in samples]
    below = sum(1 for s in speeds if s < 0.99)
    print(f"machine: {platform.node()} {os.cpu_count()} cores, {platform.platform()}")
    print(f"run: {args.seconds} s, {len(samples)} samples (every 10 s), default ladder 720p/480p/240p libx264 veryfast")
    print(f"speed: min {min(speeds):.2f}x median {statistics.median(speeds):.2f}x; fps median {statistics.median(fps):.1f}")
    print(f"samples below 0.99x: {below}/{len(speeds)}")
    restarts = len(re.findall(r"encoder (?:exited|died|killed)|restart", text))
    print(f"encoder restarts: {restarts}")


if __name__ == "__main__":
    main()
