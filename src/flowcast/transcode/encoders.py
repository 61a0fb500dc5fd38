"""Named encoder profiles -> FFmpeg video options for one ladder rung.

Every profile produces closed GOPs of exactly one segment (GOP = segment duration x fps,
`-keyint_min` the same, scene-cut keyframes off, and `-force_key_frames` on the segment
boundaries in media time) so that every rendition switches on the same frame and the
packager can cut every rung at the same instants. FFmpeg counts that media time from the
first frame it encodes; epoch-locked runs (transcode/epoch.py) start on a segment boundary
of the UNIX epoch, so the same option puts keyframes on epoch multiples of the segment. Low-latency mode disables B-frames
(a B-frame costs at least one frame of reorder delay, and parts must be decodable as they
arrive); broadcast mode may use them for quality.
"""

from __future__ import annotations

import functools
import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from flowcast.transcode.ladder import Rung

Mode = Literal["low-latency", "broadcast"]
CodecFamily = Literal["avc", "hevc", "av1"]

FFMPEG = "ffmpeg"


class UnknownEncoder(Exception):
    """The configuration names an encoder flowcast has no profile for."""


class EncoderUnavailable(Exception):
    """FFmpeg here lacks the encoder, or it is listed but cannot run (no hardware)."""


@dataclass(frozen=True)
class GopPlan:
    """Keyframe cadence shared by every rung: one closed GOP per segment."""

    segment_s: float
    fps: float

    @property
    def frames(self) -> int:
        return max(1, round(self.segment_s * self.fps))

    def common(self) -> list[str]:
        seg = f"{self.segment_s:g}"
        return [
            "-g", str(self.frames),
            "-keyint_min", str(self.frames),
            "-force_key_frames", f"expr:gte(t,n_forced*{seg})",
        ]


def _rate(rung: Rung) -> list[str]:
    return [
        "-b:v", f"{rung.video_bitrate_kbps}k",
        "-maxrate", f"{rung.max_rate}k",
        "-bufsize", f"{rung.buffer_size}k",
    ]


def _x264(rung: Rung, mode: Mode, gop: GopPlan) -> list[str]:
    opts = ["-c:v", "libx264", "-pix_fmt", "yuv420p", "-preset", "veryfast"]
    if mode == "low-latency":
        opts += ["-tune", "zerolatency", "-bf", "0"]
    else:
        # baseline forbids B-frames; x264 would drop them anyway but say it explicitly
        opts += ["-bf", "0" if rung.profile == "baseline" else "3"]
    opts += ["-profile:v", rung.profile, "-level:v", rung.level]
    return opts + _rate(rung) + gop.common() + ["-sc_threshold", "0", "-x264-params", "open-gop=0"]


def _x265(rung: Rung, mode: Mode, gop: GopPlan) -> list[str]:
    params = [f"keyint={gop.frames}", f"min-keyint={gop.frames}", "scenecut=0", "open-gop=0"]
    opts = ["-c:v", "libx265", "-pix_fmt", "yuv420p", "-preset", "veryfast", "-profile:v", "main"]
    if mode == "low-latency":
        opts += ["-tune", "zerolatency"]
        params.append("bframes=0")
    # hvc1: parameter sets in the sample entry only, what Apple players require for fMP4
    return opts + _rate(rung) + gop.common() + ["-x265-params", ":".join(params), "-tag:v", "hvc1"]


def _svtav1(rung: Rung, mode: Mode, gop: GopPlan) -> list[str]:
    # pred-struct 1 = low delay (no future references); 2 = random access (hierarchical)
    params = ["scd=0", f"pred-struct={1 if mode == 'low-latency' else 2}"]
    opts = ["-c:v", "libsvtav1", "-pix_fmt", "yuv420p", "-preset", "10" if mode == "low-latency" else "8"]
    return opts + _rate(rung) + gop.common() + ["-svtav1-params", ":".join(params)]


def _nvenc(rung: Rung, mode: Mode, gop: GopPlan) -> list[str]:
    opts = ["-c:v", "h264_nvenc", "-pix_fmt", "yuv420p"]
    if mode == "low-latency":
        opts += ["-preset", "p2", "-tune", "ll", "-bf", "0", "-rc-lookahead", "0"]
    else:
        opts += ["-preset", "p5", "-tune", "hq", "-bf", "0" if rung.profile == "baseline" else "3"]
    opts += ["-profile:v", rung.profile, "-level:v", rung.level, "-rc", "vbr"]
    return opts + _rate(rung) + gop.common() + ["-no-scenecut", "1", "-strict_gop", "1", "-forced-idr", "1"]


def _qsv(rung: Rung, mode: Mode, gop: GopPlan) -> list[str]:
    opts = ["-c:v", "h264_qsv", "-preset", "veryfast" if mode == "low-latency" else "medium"]
    opts += ["-bf", "0" if mode == "low-latency" or rung.profile == "baseline" else "3"]
    if mode == "low-latency":
        opts += ["-look_ahead", "0", "-async_depth", "1"]
    opts += ["-profile:v", rung.profile, "-level:v", rung.level]
    return opts + _rate(rung) + gop.common() + ["-idr_interval", "0", "-forced_idr", "1"]


def _amf(rung: Rung, mode: Mode, gop: GopPlan) -> list[str]:
    opts = ["-c:v", "h264_amf", "-usage", "lowlatency" if mode == "low-latency" else "transcoding"]
    opts += ["-quality", "speed" if mode == "low-latency" else "balanced", "-rc", "vbr_peak"]
    opts += ["-bf", "0" if mode == "low-latency" or rung.profile == "baseline" else "2"]
    opts += ["-profile:v", rung.profile, "-level:v", rung.level]
    return opts + _rate(rung) + gop.common() + ["-header_insertion_mode", "idr"]


@dataclass(frozen=True)
class EncoderProfile:
    name: str
    family: CodecFamily
    hardware: bool
    build: Callable[[Rung, Mode, GopPlan], list[str]]


PROFILES: dict[str, EncoderProfile] = {
    p.name: p
    for p in (
        EncoderProfile("libx264", "avc", False, _x264),
        EncoderProfile("libx265", "hevc", False, _x265),
        EncoderProfile("libsvtav1", "av1", False, _svtav1),
        EncoderProfile("h264_nvenc", "avc", True, _nvenc),
        EncoderProfile("h264_qsv", "avc", True, _qsv),
        EncoderProfile("h264_amf", "avc", True, _amf),
    )
}


def profile(name: str) -> EncoderProfile:
    try:
        return PROFILES[name]
    except KeyError:
        raise UnknownEncoder(f"unknown encoder {name!r}; flowcast knows: {', '.join(PROFILES)}") from None


def video_options(encoder: str, rung: Rung, *, mode: Mode, segment_s: float) -> list[str]:
    """FFmpeg output options (no stream specifiers: one video track per output) for a rung."""
    prof = profile(encoder)
    return prof.build(rung, mode, GopPlan(segment_s=segment_s, fps=rung.fps))


# ---- what this FFmpeg can actually run -------------------------------------------------

_ENCODER_LINE = re.compile(r"^\s*V[A-Z.]{5}\s+(\S+)")


@functools.cache
def listed_encoders(ffmpeg: str = FFMPEG) -> frozenset[str]:
    """Video encoder names `ffmpeg -encoders` lists (cached for the process)."""
    out = subprocess.run(
        [ffmpeg, "-hide_banner", "-encoders"], capture_output=True, text=True, timeout=20, check=False
    ).stdout
    return frozenset(m.group(1) for line in out.splitlines() if (m := _ENCODER_LINE.match(line)))


@functools.cache
def _probe(name: str, ffmpeg: str) -> str | None:
    """Encode one frame; None if it works, else the reason FFmpeg gave (its last error lines)."""
    try:
        proc = subprocess.run(
            [ffmpeg, "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i", "color=c=black:s=256x144:r=30",
             "-frames:v", "1", "-c:v", name, "-f", "null", "-"],
            capture_output=True, text=True, timeout=20, check=False,
        )
    except subprocess.TimeoutExpired:
        return "a one-frame test encode did not finish within 20 s"
    if proc.returncode == 0:
        return None
    # the device error comes first; FFmpeg's generic "Error initializing output stream..."
    # and "Conversion failed!" lines after it say nothing about the cause
    lines = [
        re.sub(r" @ 0x[0-9a-f]+", "", ln.strip())
        for ln in proc.stderr.splitlines()
        if ln.strip() and not ln.startswith(("Error initializing output stream", "Conversion failed"))
    ]
    return "; ".join(lines[:2]) or f"exit status {proc.returncode}"


def usable_encoders(ffmpeg: str = FFMPEG) -> list[str]:
    """Profiles this machine can run: listed by FFmpeg, and hardware ones that pass a probe."""
    listed = listed_encoders(ffmpeg)
    return [
        p.name
        for p in PROFILES.values()
        if p.name in listed and (not p.hardware or _probe(p.name, ffmpeg) is None)
    ]


def check_encoder(name: str, ffmpeg: str = FFMPEG) -> EncoderProfile:
    """The profile for `name`, or UnknownEncoder / EncoderUnavailable saying why and what works."""
    prof = profile(name)
    listed = listed_encoders(ffmpeg)
    reason: str | None = None
    if name not in listed:
        reason = "this FFmpeg build does not include it"
    elif prof.hardware:
        failure = _probe(name, ffmpeg)
        if failure is not None:
            reason = f"it is listed but a test encode failed (no usable hardware/driver?): {failure}"
    if reason is not None:
        works = ", ".join(usable_encoders(ffmpeg)) or "none"
        raise EncoderUnavailable(f"encoder {name} is not usable here: {reason}. Usable here: {works}")
    return prof
