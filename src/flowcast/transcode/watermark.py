"""FFmpeg filter fragments for watermarks: visible (text or logo overlay) and forensic A/B.

Each function returns a filtergraph fragment ``[in]...[out]`` to splice into the ladder's
graph (`command.filter_graph`) after a rung's ``scale``, so the mark is drawn at the
rendition's own size. Values are escaped for both levels FFmpeg parses (option value, then
filtergraph), so paths and texts with ``:``, ``'``, ``,`` or brackets are safe.
"""

from __future__ import annotations

from typing import Literal

Corner = Literal["top-left", "top-right", "bottom-left", "bottom-right", "center"]
DEJAVU_SANS = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"


def _escape_value(value: str) -> str:
    """Escape an option value for the filter's option parser, then for the filtergraph parser."""
    level1 = value.replace("\\", "\\\\").replace("'", "\\'").replace(":", "\\:")
    out = []
    for ch in level1:
        if ch in "\\'[],;":
            out.append("\\")
        out.append(ch)
    return "".join(out)


def _position(corner: Corner, margin: int, w: str, h: str, ow: str, oh: str) -> tuple[str, str]:
    """x, y expressions placing an ``ow x oh`` box in a ``w x h`` frame."""
    if margin < 0:
        raise ValueError("margin must be >= 0")
    xs = {"left": f"{margin}", "right": f"{w}-{ow}-{margin}", "center": f"({w}-{ow})/2"}
    ys = {"top": f"{margin}", "bottom": f"{h}-{oh}-{margin}", "center": f"({h}-{oh})/2"}
    if corner == "center":
        return xs["center"], ys["center"]
    try:
        vert, horiz = corner.split("-")
        return xs[horiz], ys[vert]
    except (ValueError, KeyError):
        raise ValueError(f"unknown position {corner!r}") from None


def _check_opacity(opacity: float) -> None:
    if not 0.0 <= opacity <= 1.0:
        raise ValueError("opacity must be within [0, 1]")


def text_overlay(
    text: str,
    *,
    position: Corner = "bottom-right",
    margin: int = 16,
    opacity: float = 0.5,
    font_size: int = 24,
    color: str = "white",
    font_file: str = DEJAVU_SANS,
    in_label: str = "in",
    out_label: str = "out",
) -> str:
    """``[in]drawtext=...[out]``: the text in a corner, ``opacity`` in [0, 1], with a thin shadow."""
    _check_opacity(opacity)
    x, y = _position(position, margin, "w", "h", "tw", "th")
    opts = [
        f"fontfile={_escape_value(font_file)}",
        f"text={_escape_value(text)}",
        "expansion=none",  # the text is data, not a strftime/%{...} template
        f"fontsize={int(font_size)}",
        f"fontcolor={color}@{opacity:.3f}",
        f"shadowcolor=black@{opacity / 2:.3f}",
        "shadowx=1",
        "shadowy=1",
        f"x={_escape_value(x)}",
        f"y={_escape_value(y)}",
    ]
    return f"[{in_label}]drawtext=" + ":".join(opts) + f"[{out_label}]"


def image_overlay(
    image: str,
    *,
    position: Corner = "top-right",
    margin: int = 16,
    opacity: float = 0.5,
    width: int | None = None,
    in_label: str = "in",
    out_label: str = "out",
) -> str:
    """``movie=logo,...[wm];[in][wm]overlay=...[out]``: a logo (PNG with alpha or not) in a corner.

    ``width`` rescales the logo (keeping its aspect); the alpha channel is multiplied by
    ``opacity`` so the logo's own transparency is kept.
    """
    _check_opacity(opacity)
    wm = f"{out_label}_wm"
    chain = f"movie={_escape_value(image)},format=rgba"
    if width is not None:
        chain += f",scale={int(width)}:-2"
    chain += f",colorchannelmixer=aa={opacity:.3f}[{wm}]"
    x, y = _position(position, margin, "W", "H", "w", "h")
    # eof_action=repeat + the single-image movie source: the logo stays for the whole stream
    overlay = (
        f"[{in_label}][{wm}]overlay=x={_escape_value(x)}:y={_escape_value(y)}"
        ":eof_action=repeat:format=auto"
    )
    return f"{chain};{overlay}[{out_label}]"


def forensic_mark(
    pattern_y4m: str,
    variant: Literal["A", "B"],
    *,
    in_label: str = "in",
    out_label: str = "out",
) -> str:
    """The A/B mark: ``blend=grainmerge`` (out = in + pattern - 128) with the keyed pattern frame.

    ``pattern_y4m`` is the file written from ``protect.watermark.WatermarkPattern.y4m`` at the
    rung's size (luma 128 +/- 1, chroma 128, so chroma passes through unchanged). Variant B
    negates the offset with ``lutyuv=y=256-val``. One still frame, repeated by framesync: no
    per-pixel expression evaluation (geq), so the cost is one add per pixel.
    """
    # The pattern frame has pts 0: the main input must start at 0 too (the ladder's sources
    # end with setpts=PTS-STARTPTS), or the CLI's constant-rate output fills the gap with
    # duplicated frames.
    if variant not in ("A", "B"):
        raise ValueError("variant must be 'A' or 'B'")
    wm = f"{out_label}_ab"
    src = f"movie={_escape_value(pattern_y4m)}"
    if variant == "B":
        src += ",lutyuv=y=256-val"
    return f"{src}[{wm}];[{in_label}][{wm}]blend=all_mode=grainmerge:repeatlast=1[{out_label}]"


def forensic_pair(pattern_y4m: str, *, in_label: str, out_a: str, out_b: str) -> str:
    """Split one scaled rung into its variant A and variant B, for two encoder outputs.

    Both outputs must be encoded with identical settings and forced keyframes on segment
    boundaries, so segment ``i`` of A and of B cover the same frames and are interchangeable.
    """
    a, b = f"{out_a}_src", f"{out_b}_src"
    return (
        f"[{in_label}]split=2[{a}][{b}];"
        + forensic_mark(pattern_y4m, "A", in_label=a, out_label=out_a)
        + ";"
        + forensic_mark(pattern_y4m, "B", in_label=b, out_label=out_b)
    )
