"""The burned-in wall-clock strip: our glass-to-glass latency meter.

Layout (a contract with the browser player kit, which decodes it from a canvas), on the
1280x720 source frame, top-left, 48 px tall, 34 blocks of 36 px (1224 px) on a black strip:

    block 0  white      (reference level for 1)
    block 1  black      (reference level for 0)
    block 2..33         bits 31..0, MSB first, of (ms since the Unix epoch mod 2**32)
                        of the moment the frame was generated; white = 1

Under it a human-readable clock (HH:MM:SS.mmm) for people looking at the picture.

The filter chain runs on the source frames. `settb=1/1000` matters: without it `t` is
quantised to the frame rate and every bit below ~33 ms would be noise. Epoch-locked
(redundant origins, transcode/epoch.py) the frames are labelled on the frame grid of the
epoch instead, and the strip shows that label: the generation time to within half a frame.
"""

from __future__ import annotations

from collections.abc import Sequence

from flowcast.transcode.epoch import generator_video_clock

SOURCE_WIDTH = 1280
SOURCE_HEIGHT = 720
STRIP_HEIGHT = 48
BLOCK_WIDTH = 36
BLOCKS = 34  # white, black, 32 bits
STRIP_WIDTH = BLOCKS * BLOCK_WIDTH  # 1224
BITS = 32
MODULUS = 2**BITS

DEFAULT_FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSansMono-Bold.ttf"


class TimecodeUnreadable(ValueError):
    """The reference blocks do not show a usable white/black contrast."""


def timecode_filter(fontfile: str = DEFAULT_FONT, *, epoch_rate: int | None = None) -> str:
    """The video filter chain that stamps each frame with its generation time.

    Meant to follow a 1280x720 source; it starts with `realtime` so the source is paced by
    the wall clock, and ends with `setpts=PTS-STARTPTS` so outputs start at zero. With
    `epoch_rate` (the source's frame rate) the frames keep epoch timestamps on that rate's
    grid (transcode.epoch.generator_video_clock) and no zero shift follows.
    """
    if epoch_rate is not None:
        parts = [generator_video_clock(epoch_rate)]
    else:
        parts = ["realtime", "settb=1/1000", "setpts='RTCTIME/1000'"]
    parts += [
        f"drawbox=x=0:y=0:w={STRIP_WIDTH}:h={STRIP_HEIGHT}:c=black:t=fill",
        f"drawbox=x=0:y=0:w={BLOCK_WIDTH}:h={STRIP_HEIGHT}:c=white:t=fill",
    ]
    for i in range(BITS):
        parts.append(
            f"drawbox=x={(i + 2) * BLOCK_WIDTH}:y=0:w={BLOCK_WIDTH}:h={STRIP_HEIGHT}"
            f":c=white:t=fill:enable='mod(floor(t*1000/pow(2,{BITS - 1 - i})),2)'"
        )
    parts.append(
        f"drawtext=fontfile={fontfile}"
        r":text='%{localtime\:%H\\\:%M\\\:%S}.%{eif\:mod(t*1000,1000)\:d\:3}'"
        f":x=20:y={STRIP_HEIGHT + 12}:fontsize=48:fontcolor=white:box=1:boxcolor=black"
    )
    if epoch_rate is None:
        parts.append("setpts=PTS-STARTPTS")
    return ",".join(parts)


def block_levels(frame: bytes, width: int, height: int) -> list[int]:
    """Mean luma of each block's centre in a gray (8-bit, one byte per pixel) frame.

    The frame may be any scale of the 1280x720 source; each block is sampled over the
    middle half of its width and height so scaling and compression ringing at the block
    edges do not leak in.
    """
    if len(frame) < width * height:
        raise ValueError(f"frame holds {len(frame)} bytes, expected {width * height}")
    sx = width / SOURCE_WIDTH
    sy = height / SOURCE_HEIGHT
    y0 = int(STRIP_HEIGHT * sy * 0.25)
    y1 = max(y0 + 1, int(STRIP_HEIGHT * sy * 0.75))
    levels = []
    for i in range(BLOCKS):
        x0 = int((i + 0.25) * BLOCK_WIDTH * sx)
        x1 = max(x0 + 1, int((i + 0.75) * BLOCK_WIDTH * sx))
        total = 0
        for y in range(y0, y1):
            row = frame[y * width + x0 : y * width + x1]
            total += sum(row)
        levels.append(round(total / ((x1 - x0) * (y1 - y0))))
    return levels


def decode_timecode(gray_row: bytes | Sequence[int]) -> int:
    """Milliseconds since the epoch mod 2**32 shown by the strip.

    `gray_row` is either the 34 block levels (see `block_levels`) or one luma row through
    the middle of the strip, spanning the whole frame width (any scale of 1280).
    """
    values = list(gray_row)
    if len(values) != BLOCKS:
        scale = len(values) / SOURCE_WIDTH
        if len(values) < BLOCKS * 2:
            raise ValueError(f"need {BLOCKS} block levels or a full-width row, got {len(values)} values")
        values = [values[int((i + 0.5) * BLOCK_WIDTH * scale)] for i in range(BLOCKS)]
    white, black = values[0], values[1]
    if white - black < 64:
        raise TimecodeUnreadable(f"reference blocks too close: white={white} black={black}")
    threshold = (white + black) / 2
    code = 0
    for level in values[2:]:
        code = (code << 1) | (1 if level > threshold else 0)
    return code


def latency_ms(code: int, now_ms: int) -> int:
    """Age of a frame stamped `code` at wall-clock `now_ms` (ms since the epoch), wrap-safe.

    The 32-bit counter wraps every ~49.7 days; the difference is taken mod 2**32 and
    mapped to (-2**31, 2**31] so a frame slightly from the future (clock skew) is negative.
    """
    diff = (now_ms - code) % MODULUS
    return diff - MODULUS if diff > MODULUS // 2 else diff
