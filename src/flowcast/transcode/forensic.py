"""The forensic A/B encode: the marked rung leaves FFmpeg twice, as variant A and variant B.

`command.build_command` asks this module for the extra output's name and for the filter
chain that splits the scaled rung and marks each copy (`watermark.forensic_pair`, the same
filters the offline tests measure). Both outputs get the rung's encoder options unchanged
(same GOP, same forced keyframes, same rate control), so segment ``n`` of A and of B cover
the same frames and the origin can serve either. The keyed pattern frame is written by
`protect.watermark_session.write_pattern_file` (transcode does not import protect); here it
is only a path.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from flowcast.transcode.watermark import forensic_pair

VARIANT_B_SUFFIX = ".B"  # rung names cannot contain ".", so "<rung>.B" never collides with one


def variant_b_output(rendition: str) -> str:
    """The encoder output (and pipe) name of a rung's variant B."""
    return rendition + VARIANT_B_SUFFIX


@dataclass(frozen=True)
class ForensicEncode:
    """What the FFmpeg command needs to emit variant B of one rung."""

    rendition: str
    pattern_file: Path  # y4m at the rung's size, 0600: it would let a pirate subtract the mark

    @property
    def output_b(self) -> str:
        return variant_b_output(self.rendition)

    def graph(self, in_label: str, out_a: str, out_b: str) -> str:
        """``[in_label]`` (the scaled rung) -> ``[out_a]`` (+pattern) and ``[out_b]`` (-pattern)."""
        return forensic_pair(str(self.pattern_file), in_label=in_label, out_a=out_a, out_b=out_b)
