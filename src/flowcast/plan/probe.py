"""`--probe SAMPLE`: read the real source's picture size and frame rate with ffprobe.

The only I/O in plan/ besides writing the pack; decide() itself stays pure (it takes a SourceInfo).
"""

from __future__ import annotations

import json
import subprocess
from fractions import Fraction
from pathlib import Path

from flowcast.plan.decide import SourceInfo

# frame rates a ladder is planned at: the probed rate snaps to the nearest
STANDARD_FPS = (23.976, 24.0, 25.0, 29.97, 30.0, 50.0, 59.94, 60.0)


class ProbeError(Exception):
    """ffprobe could not read a video stream from the sample."""


def probe_source(sample: Path, ffprobe: str = "ffprobe") -> SourceInfo:
    try:
        proc = subprocess.run(
            [ffprobe, "-v", "error", "-select_streams", "v:0", "-show_entries", "stream=width,height,avg_frame_rate,r_frame_rate",
             "-of", "json", str(sample)],
            capture_output=True, text=True, timeout=30, check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ProbeError(f"cannot run ffprobe on {sample}: {exc}") from None
    streams = json.loads(proc.stdout or "{}").get("streams") or []
    if proc.returncode or not streams:
        raise ProbeError(f"{sample}: no video stream ({proc.stderr.strip() or 'ffprobe found none'})")
    st = streams[0]
    rate = st.get("avg_frame_rate") if st.get("avg_frame_rate") not in (None, "0/0") else st.get("r_frame_rate", "30/1")
    fps = float(Fraction(rate))
    fps = min(STANDARD_FPS, key=lambda f: abs(f - fps))
    height = int(st["height"]) - int(st["height"]) % 2
    width = int(st["width"]) - int(st["width"]) % 2
    return SourceInfo(width=width, height=height, fps=fps)
