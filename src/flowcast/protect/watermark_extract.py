"""Forensic extraction: a leaked recording -> the session that leaked it.

This is the one place in ``protect/`` that runs a process: FFmpeg decodes the recording (any
container and codec it reads, re-encoded or rescaled) to raw gray frames at a fixed small
analysis size and a fixed rate; everything after that is the sans-I/O maths of
``protect.watermark``. It is a forensic-service tool, never on the media path.
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence
from os import PathLike

import numpy as np

from flowcast.protect.watermark import Match, WatermarkCodec, WatermarkError, WatermarkPattern, detect_bits

ANALYSIS_SIZE = (160, 90)  # 10 x 10 px per cell of the 16 x 9 grid, whatever the capture's size
ANALYSIS_FPS = 10


def decode_gray(
    path: str | PathLike[str],
    *,
    size: tuple[int, int] = ANALYSIS_SIZE,
    fps: int = ANALYSIS_FPS,
    ffmpeg: str = "ffmpeg",
    timeout: float = 600.0,
) -> np.ndarray:
    """The recording's luma as uint8 frames (n, height, width), resampled to ``fps`` from t=0."""
    w, h = size
    vf = f"setpts=PTS-STARTPTS,fps={fps},scale={w}:{h}:flags=area,format=gray"
    cmd = [ffmpeg, "-nostdin", "-v", "error", "-i", str(path), "-map", "0:v:0", "-vf", vf,
           "-f", "rawvideo", "-pix_fmt", "gray", "pipe:1"]
    proc = subprocess.run(cmd, capture_output=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        why = proc.stderr.decode(errors="replace")[-400:]
        raise WatermarkError(f"ffmpeg could not decode {path}: {why}")
    frames = np.frombuffer(proc.stdout, dtype=np.uint8)
    n = len(frames) // (w * h)
    return frames[: n * w * h].reshape(n, h, w)


def segment_means(frames: np.ndarray, per_segment: int, start: int, guard: int) -> list[np.ndarray]:
    """Mean frame of each whole segment, skipping ``guard`` frames at each edge (GOP switch blur)."""
    out = []
    i = start
    while i + per_segment <= len(frames):
        out.append(frames[i + guard : i + per_segment - guard].mean(axis=0, dtype=np.float64))
        i += per_segment
    return out


def soft_bits_of(
    frames: np.ndarray,
    pattern: WatermarkPattern,
    *,
    segment_duration: float,
    fps: int = ANALYSIS_FPS,
    search_offset: bool = True,
) -> tuple[list[float], int]:
    """Per-segment soft bits and the frame offset of the first whole segment.

    When the capture may not start on a segment boundary, every frame offset within one
    segment is tried and the one with the most mark energy (sum of squared soft bits) kept:
    misaligned windows mix A and B and lose energy. The choice does not look at any session,
    so it does not weaken the false-accusation bound.
    """
    per = round(segment_duration * fps)
    if per < 3:
        raise WatermarkError("segments must span at least 3 analysis frames")
    guard = 1
    best: tuple[float, list[float], int] | None = None
    for start in range(per) if search_offset else (0,):
        bits = detect_bits(segment_means(frames, per, start, guard), pattern)
        energy = float(np.dot(bits, bits)) / max(len(bits), 1)
        if best is None or energy > best[0]:
            best = (energy, bits, start)
    assert best is not None
    return best[1], best[2]


def parse_candidates(text: str) -> list[str] | dict[str, int]:
    """A candidates file: one session id per line, or ``session_id<TAB>timestamp`` on every line.

    With timestamps (the token expiry in hours, `watermark_session.token_timestamp`) every
    segment counts; without, only the codeword positions that depend on the session alone.
    """
    rows = [line.rstrip("\r\n") for line in text.splitlines() if line.strip()]
    split = [row.split("\t") for row in rows]
    if all(len(f) == 1 for f in split):
        return [f[0].strip() for f in split]
    if not all(len(f) == 2 for f in split):
        raise WatermarkError("candidates: give either a session id per line or session_id<TAB>timestamp on every line")
    out: dict[str, int] = {}
    for n, (sid, stamp) in enumerate(split, 1):
        try:
            out[sid.strip()] = int(stamp)
        except ValueError:
            raise WatermarkError(f"candidates line {n}: timestamp {stamp!r} is not an integer") from None
    return out


def extract_recording(
    path: str | PathLike[str],
    *,
    secret: bytes,
    segment_duration: float,
    candidates: Sequence[str] | Mapping[str, int] | None,
    first_segment: int | Sequence[int] | None = 0,
    false_positive: float = 1e-6,
    search_offset: bool = True,
    ffmpeg: str = "ffmpeg",
) -> Match | None:
    """Decode a recording and name the candidate session it was served to, or None.

    ``first_segment`` is the absolute index of the segment the recording starts in (known
    when the capture's time is known), or a range of them when it is known roughly (each one
    a hypothesis); ``None`` searches every start of the period. When the frame
    alignment search finds the first whole segment a little after t=0 it may be that one or
    the next, so both are tried (two hypotheses in the false-accusation bound).
    """
    pattern = WatermarkPattern(secret)
    codec = WatermarkCodec(secret)
    frames = decode_gray(path, ffmpeg=ffmpeg)
    bits, start = soft_bits_of(
        frames, pattern, segment_duration=segment_duration, search_offset=search_offset
    )
    if not bits:
        return None
    offset: int | Sequence[int] | None = None
    if isinstance(first_segment, int):
        offset = first_segment if start == 0 else (first_segment, first_segment + 1)
    elif first_segment is not None:  # a window of possible starts
        offset = sorted({f + d for f in first_segment for d in ((0,) if start == 0 else (0, 1))})
    return codec.decode(bits, candidates, offset=offset, false_positive=false_positive)
