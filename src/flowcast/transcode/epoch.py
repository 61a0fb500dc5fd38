"""Epoch locking: media timestamps on the UNIX epoch, keyframes on multiples of the segment.

Redundant origins (`origin.redundant`) each run their own encoder. For any origin to serve
any viewer, segment N must cover the same wall-clock interval on every origin, and carry the
same decode times (tfdt), so a player that fails over neither skips nor repeats media. As
broadcast encoders do it (AWS Elemental "epoch locking", MediaLive pipeline locking in epoch
mode), every frame's timestamp is its instant in seconds since 1970-01-01 UTC, and segment
edges (forced keyframes) and part edges fall on multiples of the segment (part) duration of
that clock. Then N = t / segment duration on every origin, and an encoder that restarts
re-locks by construction: nothing in the timeline depends on when a process started.

What a timestamp means depends on the input:

- `testsrc` (each origin's own generator): the wall clock when the frame is made. The first
  frame's `RTCTIME` is rounded to the frame grid (video) or to whole 1024-sample AAC frames
  (audio), later ones count frames/samples from it, so labels are exact multiples of the
  frame duration and every origin's encoder cuts the same frames into the same AAC frames.
  `realtime` paces the generator by the monotonic clock and, with its limit raised, catches
  up after a stall instead of re-anchoring (which would leave the labels behind the clock).
- a shared live contribution (SRT/MPEG-TS, RTMP/FLV pushed to every origin): the input's own
  timestamps, which every origin receives alike (`-copyts` keeps them). They lock the origins
  only if the contributor stamps the wall clock, as Elemental and MediaLive also require (an
  epoch timecode in the source, within 2 minutes of the clock). The format keeps them modulo
  its wrap (2^33 / 90 kHz ~ 26.5 h for MPEG-TS, 2^31 ms ~ 24.9 days for FLV), so the label is
  the input time plus the whole number of wraps nearest the wall clock: the same number on
  every origin, and after a restart. When the input's clock is more than `LOCK_TOLERANCE_S`
  off the wall clock (a contributor that counts from its own start), each origin falls back
  to the arrival time of its first frame: segment edges and numbers still sit on the epoch
  grid, but the origins' media can differ by their arrival difference (and audio from video
  by the few milliseconds between their first frames). FFmpeg prints how far the input's
  clock is from the wall clock on the first frame (av_expr `print`, one stderr line); the
  supervisor logs which case the run is in (`describe_input_lock`). That distance includes
  FFmpeg's probing of the input (up to its 5 s analyzeduration), not only the network.
- a file: played out on the epoch. At wall time t every origin shows position t modulo the
  file's duration (sources.FilePlayout: a concat list starting there, each loop exactly one
  probed duration long), labelled by that t: the same frame at the same instant everywhere,
  audio and video on one offset, and a restarted encoder picks up where the clock is. Frames
  come out up to a GOP late (FFmpeg decodes from the keyframe before the start position at
  real-time pace), which delays publication, not the timeline.
- WHIP (one publisher, one origin): the arrival clock, as in the fallback above.

FFmpeg 5.1 forces keyframes relative to the first frame it encodes (fftools'
forced_kf_ref_pts), so `first_boundary` drops the frames before the first segment boundary
at least `LEAD_S` ahead: the first encoded frame is on the grid, and `-force_key_frames`'
`t >= n x segment` then means epoch multiples. The mp4 muxer would shift the first decode
time to 0; `muxer_options` keeps the absolute times (frag_discont + no edit list).
"""

from __future__ import annotations

import re
from typing import Literal

InputClock = Literal["generator", "mpegts", "flv", "arrival"]  # a file: sources.FilePlayout

# Seconds the first boundary must lie ahead of the first frame: every track of the run
# (audio starts within a few ms of video) then has media at that boundary, and x264 has
# warmed up. Costs up to LEAD_S + one segment of extra start-up.
LEAD_S = 0.5
LOCK_TOLERANCE_S = 120.0  # MediaLive's: an epoch timecode within 2 minutes of the clock
MPEGTS_WRAP_S = 2**33 / 90000
FLV_WRAP_S = 2**31 / 1000  # FFmpeg's FLV muxer writes 31 bits of milliseconds
REALTIME_LIMIT_S = 86400  # the `realtime` filter re-anchors only after a pause this long
AAC_FRAME = 1024
PRINT_LEVEL = 24  # AV_LOG_WARNING: shown at the supervisor's -loglevel warning
# av_expr's print() writes a bare "%f" line; the residual (at most half a wrap, < 1.1e6 s) is
# printed plus this mark so the line cannot be mistaken for anything else FFmpeg says.
PRINT_MARK = 1e12
_BARE_NUMBER = re.compile(r"^[0-9]+\.[0-9]+$")


def generator_video_clock(rate: int) -> str:
    """setpts for a `rate` fps generator: wall clock of the first frame on the frame grid,
    then one frame duration per frame (labels are exact multiples of 1/rate)."""
    return (
        f"realtime=limit={REALTIME_LIMIT_S},"
        f"setpts='(if(eq(N,0),st(0,floor(RTCTIME*{rate}/1000000+0.5)),ld(0))+N)/({rate}*TB)'"
    )


def generator_audio_clock() -> str:
    """asetpts for a generator: wall clock of the first sample rounded to whole AAC frames
    since the epoch, then the sample count (N counts samples for audio)."""
    return (
        f"asetpts='(if(eq(N,0),st(0,floor(RTCTIME*SR/1000000/{AAC_FRAME}+0.5)*{AAC_FRAME}),ld(0))+N)/(SR*TB)'"
    )


def _input_offset(wrap_s: float | None) -> str:
    """The expression that stores in register 0, on the first frame, what to add to the input
    time: whole wraps nearest the wall clock when that lands within LOCK_TOLERANCE_S of it,
    else the arrival offset (first frame's wall clock minus its timestamp)."""
    arrival = "st(1,RTCTIME/1000000-PTS*TB)"
    if wrap_s is None:
        choose = f"{arrival};st(0,ld(1))"
    else:
        w = f"{wrap_s:.9f}"
        choose = (
            f"{arrival};st(2,{w}*floor(ld(1)/{w}+0.5));st(4,ld(1)-ld(2));"
            f"print(ld(4)+{PRINT_MARK:.0f},{PRINT_LEVEL});"
            f"st(0,if(lte(abs(ld(4)),{LOCK_TOLERANCE_S:g}),ld(2),ld(1)))"
        )
    return f"if(eq(N,0),{choose},0)"


def input_clock(clock: InputClock, *, audio: bool = False) -> str:
    """(a)setpts putting an input's frames on the epoch (see the module docstring)."""
    if clock == "generator":
        raise ValueError("a generator's clock is generator_video_clock / generator_audio_clock")
    wrap = {"mpegts": MPEGTS_WRAP_S, "flv": FLV_WRAP_S, "arrival": None}[clock]
    name = "asetpts" if audio else "setpts"
    return f"{name}='{_input_offset(wrap)};PTS+ld(0)/TB'"


def first_boundary(segment_s: float, max_fps: float) -> str:
    """select: drop frames before the first multiple of `segment_s` at least LEAD_S after the
    run's first frame, so FFmpeg's forced keyframes (relative to its first frame) are epoch
    multiples of the segment. The first frame kept may be up to half a frame of the fastest
    rung early: each rung's `fps` filter rounds it onto that boundary (an input's own frame
    times need not sit on our grid)."""
    seg = f"{segment_s:g}"
    early = 0.5 / max_fps - 1e-6
    return f"select='gte(t,if(eq(n,0),st(3,{seg}*ceil((t+{LEAD_S:g})/{seg})),ld(3))-{early:.6f})'"


def muxer_options() -> list[str]:
    """Per CMAF output: keep the absolute decode times. movenc shifts a track to start at 0
    (avoid_negative_ts make_zero, chosen when no edit list is written) unless told the
    timestamps are non-negative already; frag_discont makes the first tfdt the packet's dts."""
    return ["-avoid_negative_ts", "make_non_negative", "-use_editlist", "0"]


MOVFLAGS_EPOCH = "+frag_discont"

# fftools' default vsync for mp4 is CFR counted from 0: with epoch timestamps it would try to
# duplicate 1.7e9 s of frames. The fps filter already made the frames constant-rate.
VIDEO_SYNC = ["-fps_mode", "passthrough"]


def input_lock_residual(line: str) -> float | None:
    """The seconds an input's clock is behind the wall clock, from the stderr line the first
    frame's `print` makes (None for any other line)."""
    text = line.strip()
    if not _BARE_NUMBER.match(text):
        return None
    residual = float(text) - PRINT_MARK
    return residual if abs(residual) < 2e6 else None


def describe_input_lock(residual_s: float) -> tuple[bool, str]:
    """(locked, a sentence for the log) for an input clock `residual_s` behind the wall clock."""
    if abs(residual_s) <= LOCK_TOLERANCE_S:
        return True, (
            f"epoch lock: the input's timestamps are the wall clock ({residual_s:.3f} s behind it); "
            "every origin fed this contribution numbers and times its frames alike"
        )
    return False, (
        f"epoch lock: the input's timestamps are {residual_s:.0f} s off the wall clock (more than "
        f"{LOCK_TOLERANCE_S:g} s, modulo the format's wrap): locked to this origin's arrival time instead. "
        "Segment edges and numbers stay on the epoch grid, but redundant origins may differ by their "
        "arrival difference; stamp the contribution with the wall clock to lock them frame-accurately"
    )
