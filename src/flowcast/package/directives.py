"""LL-HLS delivery directives (`_HLS_msn`, `_HLS_part`, `_HLS_skip`), h11 style.

parse -> validate -> a typed `Directives` or a `BadDirective` carrying the HTTP status to
answer. Sans-I/O: the origin calls these on the query string and the playlist state it
holds; the waiting itself is the origin's. Clauses: draft-pantos-hls-rfc8216bis 6.2.5.

Decision on unknown `_HLS_` parameters: the prefix is reserved for the protocol, but the
spec defines no error for names it does not know (and adds new ones over time, e.g.
`_HLS_pathway`, `_HLS_throughput` for steering). A client newer than this server must not
get a 400, so unknown `_HLS_` names are ignored by `parse_directives`. `cache_key` keeps
them (they may select a different response), except `_HLS_throughput`, which the spec
says caches SHOULD leave out of the key (7.2).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal
from urllib.parse import parse_qsl, quote

SkipMode = Literal["", "YES", "v2"]


class DirectiveError(Exception):
    """A delivery directive the server must refuse; `status` is the HTTP answer."""

    status: int = 400

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        if status is not None:
            self.status = status


class BadDirective(DirectiveError):
    """400 Bad Request: malformed, contradictory or too far ahead (6.2.5.2)."""

    status = 400


@dataclass(frozen=True, slots=True)
class Directives:
    msn: int | None = None
    part: int | None = None
    skip: SkipMode = ""

    @property
    def blocking(self) -> bool:
        return self.msn is not None


def _split(query: str) -> list[tuple[str, str]]:
    query = query[1:] if query.startswith("?") else query
    if "%" not in query and "+" not in query:
        # Nothing to decode (the usual _HLS_msn=..&_HLS_part=..): parse_qsl's result without
        # its cost, a fifth of an origin's CPU per held response at 5,000 viewers.
        return [(name, value) for name, _, value in (f.partition("=") for f in query.split("&") if f)]
    try:
        return parse_qsl(query, keep_blank_values=True, strict_parsing=False, errors="strict")
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadDirective(f"undecodable query: {exc}") from None


def _non_negative(name: str, value: str) -> int:
    # Decimal-integer per 4.2: digits only, no sign, no spaces.
    if not value or not value.isascii() or not value.isdigit():
        raise BadDirective(f"{name} must be a non-negative decimal integer, got {value!r}")
    if len(value) > 20:
        raise BadDirective(f"{name} out of range")
    return int(value)


def parse_directives(query: str) -> Directives:
    """Parse the query string of a media playlist request."""
    msn = part = None
    skip: SkipMode = ""
    seen: set[str] = set()
    for name, value in _split(query):
        if not name.startswith("_HLS_"):
            continue
        if name in ("_HLS_msn", "_HLS_part", "_HLS_skip"):
            if name in seen:
                raise BadDirective(f"{name} given twice")
            seen.add(name)
        if name == "_HLS_msn":
            msn = _non_negative(name, value)
        elif name == "_HLS_part":
            part = _non_negative(name, value)
        elif name == "_HLS_skip":
            if value not in ("YES", "v2"):
                raise BadDirective(f"_HLS_skip must be YES or v2, got {value!r}")
            skip = value  # type: ignore[assignment]
    if part is not None and msn is None:
        # 6.2.5.2: "_HLS_part without _HLS_msn: the server MUST return 400".
        raise BadDirective("_HLS_part requires _HLS_msn")
    return Directives(msn, part, skip)


def resolve(d: Directives, *, ended: bool, can_skip: bool) -> Directives:
    """The directives that apply: msn/part are ignored once EXT-X-ENDLIST is present, and
    skip when the playlist has no CAN-SKIP-UNTIL or has ended (6.2.5.1, 6.2.5.2)."""
    msn, part = (None, None) if ended else (d.msn, d.part)
    skip: SkipMode = "" if ended or not can_skip else d.skip
    return Directives(msn, part, skip)


def advance_part_limit(part_target: float) -> int:
    """Advance Part Limit: 3 / PART-TARGET when PART-TARGET < 1 s, else 3 (6.2.5.2)."""
    return int(3 / part_target) if part_target < 1.0 else 3


def max_block_seconds(target_duration: float) -> float:
    """After blocking this long the server SHOULD answer 503 (6.2.5.2)."""
    return 3.0 * target_duration


def check_reachable(
    d: Directives,
    *,
    last_msn: int,
    last_part: int | None,
    parts_per_segment_hint: int,
    part_target: float | None,
) -> None:
    """Raise BadDirective when the request is too far ahead to wait for (6.2.5.2).

    `last_msn`/`last_part` are the live edge (the LAST-MSN/LAST-PART a rendition report
    gives); `parts_per_segment_hint` converts msn distance into parts.
    """
    if d.msn is None:
        return
    if d.msn > last_msn + 2:
        raise BadDirective(f"_HLS_msn={d.msn} is more than 2 past the last segment {last_msn}")
    if d.part is None:
        return
    if part_target is None:
        raise BadDirective("_HLS_part on a playlist without parts")
    pps = max(1, parts_per_segment_hint)
    edge = last_msn * pps + (last_part if last_part is not None else pps - 1)
    wanted = d.msn * pps + d.part
    if wanted - edge > advance_part_limit(part_target):
        raise BadDirective(
            f"_HLS_msn={d.msn}&_HLS_part={d.part} is beyond the Advance Part Limit "
            f"({advance_part_limit(part_target)} parts past {last_msn}.{last_part})"
        )


def is_satisfied(d: Directives, *, last_msn: int, last_part: int | None, segment_complete: bool) -> bool:
    """Can a request blocked on `d` be answered by the playlist whose edge is given?

    `last_msn`/`last_part`: the newest published part (or segment, for playlists without
    parts); `segment_complete`: whether segment `last_msn` is complete (has its EXTINF).
    A part index past the last part of segment M means part 0 of M+1 (6.2.5.2): a segment
    M older than `last_msn` is complete and M+1 has at least its part 0, so it is satisfied.
    """
    if d.msn is None:
        return True
    if d.msn < last_msn:
        return True
    if d.msn > last_msn:
        return False
    if d.part is None:
        return segment_complete
    if last_part is None:
        return False  # no part of M published yet, or M had none: waits for M+1 part 0
    return d.part <= last_part


def cache_key(query: str) -> str:
    """Normalised query for a cache key: the delivery directives sorted in UTF-8 order
    (the order clients are told to use, 6.2.5), after the other parameters in their
    original order; `_HLS_throughput` is dropped (7.2)."""
    pairs = _split(query)
    other = [(k, v) for k, v in pairs if not k.startswith("_HLS_")]
    hls = sorted(
        ((k, v) for k, v in pairs if k.startswith("_HLS_") and k != "_HLS_throughput"),
        key=lambda kv: (kv[0].encode("utf-8"), kv[1].encode("utf-8")),
    )
    return "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in other + hls)
