"""Encoding ladder design from bits-per-pixel rules, per device class and network.

Defaults (documented in the pack's ladder document):
- Reference density: 0.072 bits per pixel for H.264 1080p30 (4.5 Mbit/s), the usual
  broadcast-quality anchor for high-motion-free content with x264 `veryfast`.
- Smaller pictures need more bits per pixel (less spatial redundancy): bpp scales with
  (1080p pixels / rung pixels) ** 0.25 (720p 0.088, 540p 0.102, 360p 0.125, 240p 0.153).
- Codec efficiency vs H.264 at equal quality: HEVC 0.6, AV1 0.5.
- Low-latency encodes (no B-frames, no look-ahead, `zerolatency`) cost +15% for the same quality.
- Adjacent rungs differ by at least 1.5x in bitrate (smaller steps waste ABR decisions).
- A network class sustains `NETWORK_KBPS`; a rung fits it when (video + audio) x 1.5 headroom fits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from flowcast.plan.messages import Msg
from flowcast.transcode.ladder import AudioRendition, Ladder, Rung

REF_BPP = 0.072
REF_PIXELS = 1920 * 1080
CODEC_FACTOR = {"h264": 1.0, "h265": 0.6, "av1": 0.5}
LOW_LATENCY_FACTOR = 1.15
MIN_STEP = 1.5
HEADROOM = 1.5

# (width, height, profile, level) candidates, top down
CANDIDATES: tuple[tuple[int, int, str, str], ...] = (
    (1920, 1080, "high", "4.0"),
    (1280, 720, "high", "3.1"),
    (960, 540, "main", "3.1"),
    (640, 360, "main", "3.0"),
    (426, 240, "baseline", "3.0"),
)
DEVICE_MAX_HEIGHT = {"tv": 1080, "desktop": 1080, "tablet": 1080, "mobile": 720}
# sustained throughput planned per network class (a conservative 25th percentile, kbps)
NETWORK_KBPS = {"fiber": 50_000, "wifi": 20_000, "4g": 8_000, "3g": 1_200}


# H.264 Table A-1: (level, MaxMBPS, MaxFS in macroblocks); the lowest level that fits is chosen
H264_LEVELS = (("3.0", 40_500, 1_620), ("3.1", 108_000, 3_600), ("3.2", 216_000, 5_120),
               ("4.0", 245_760, 8_192), ("4.2", 522_240, 8_704), ("5.1", 983_040, 36_864))


def h264_level(width: int, height: int, fps: float) -> str:
    fs = ((width + 15) // 16) * ((height + 15) // 16)
    for level, mbps, max_fs in H264_LEVELS:
        if fs <= max_fs and fs * fps <= mbps:
            return level
    return H264_LEVELS[-1][0]


@dataclass(frozen=True)
class RungRule:
    name: str
    bpp: float
    kbps: int
    rule: Msg | str


def bpp_for(height: int, width: int) -> float:
    return REF_BPP * (REF_PIXELS / (width * height)) ** 0.25


def bitrate_kbps(width: int, height: int, fps: float, *, codec: str = "h264", low_latency: bool = False) -> int:
    raw = width * height * fps * bpp_for(height, width) / 1000.0
    raw *= CODEC_FACTOR[codec] * (LOW_LATENCY_FACTOR if low_latency else 1.0)
    return int(round(raw / 50.0) * 50) or 50


def design_ladder(
    devices: dict[str, float],
    networks: dict[str, float],
    *,
    low_latency: bool,
    fps: float = 30.0,
    codec: str = "h264",
    max_height: int | None = None,
    audio_kbps: int = 128,
    cap_reason: Msg | str = Msg("cap_budget"),
) -> tuple[Ladder, list[RungRule]]:
    """The ladder for an audience, and for each rung the rule that put it there."""
    top = max(DEVICE_MAX_HEIGHT[d] for d, s in devices.items() if s > 0)
    if max_height is not None:
        top = min(top, max_height)
    worst = min(NETWORK_KBPS[n] for n, s in networks.items() if s > 0)
    chosen: list[tuple[tuple[int, int, str, str], int]] = []
    bottom_reached = False
    fitting = [c for c in CANDIDATES if c[1] <= top] or [CANDIDATES[-1]]
    for cand in fitting:
        w, h, _, _ = cand
        kbps = bitrate_kbps(w, h, fps, codec=codec, low_latency=low_latency)
        if chosen and chosen[-1][1] / kbps < MIN_STEP:
            continue
        chosen.append((cand, kbps))
        if (kbps + audio_kbps) * HEADROOM <= worst:
            bottom_reached = True
            break
    rungs, rules = [], []
    for (w, h, prof, _), kbps in chosen:
        level = h264_level(w, h, fps)
        name = f"{h}p"
        bpp = bpp_for(h, w)
        rule = Msg("f_rung_ll" if low_latency else "f_rung", {"w": w, "h": h, "fps": f"{fps:g}", "bpp": f"{bpp:.3f}",
                                                               "codec": f"{CODEC_FACTOR[codec]:g}", "kbps": kbps})
        rungs.append(Rung(name=name, width=w, height=h, video_bitrate_kbps=kbps, profile=prof, level=level, fps=fps))
        rules.append(RungRule(name, round(bpp, 4), kbps, rule))
    top_note = (Msg("f_top_capped", {"height": rungs[0].height, "top": top, "cap": cap_reason}) if max_height
                else Msg("f_top", {"height": rungs[0].height, "top": top}))
    bottom_note = Msg("f_bottom_fits" if bottom_reached else "f_bottom_smallest", {"height": rungs[-1].height, "worst": worst})
    rules.append(RungRule("top", 0, rungs[0].video_bitrate_kbps, top_note))
    rules.append(RungRule("bottom", 0, rungs[-1].video_bitrate_kbps, bottom_note))
    ladder = Ladder(rungs=tuple(rungs), audio=AudioRendition(bitrate_kbps=audio_kbps, channels=2, sample_rate=48000))
    return ladder, rules


def delivered_kbps(ladder: Ladder, devices: dict[str, float], networks: dict[str, float]) -> tuple[float, str]:
    """(kbps, catalogue key of the rule's text)."""
    """Average delivered bitrate: for each device x network pair, the highest rung the device shows
    and the network sustains with headroom, weighted by shares (device and network independent)."""
    total = 0.0
    for d, ds in devices.items():
        for n, ns in networks.items():
            fit = [
                r for r in ladder.rungs
                if r.height <= DEVICE_MAX_HEIGHT[d] and (r.video_bitrate_kbps + ladder.audio.bitrate_kbps) * HEADROOM <= NETWORK_KBPS[n]
            ]
            rung = fit[0] if fit else ladder.rungs[-1]
            total += ds * ns * (rung.video_bitrate_kbps + ladder.audio.bitrate_kbps)
    return total, "f_delivered"  # catalogue key of the rule


def ceil(x: float) -> int:
    return int(math.ceil(x - 1e-9))
