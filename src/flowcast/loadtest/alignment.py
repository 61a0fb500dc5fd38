"""How well two redundant origins agree on the same segment numbers.

A viewer that fails over from one origin (pathway / BaseURL) to another asks the second for
the next number it needs; that neither skips nor repeats media only if segment N covers the
same wall-clock interval on both. This module measures it: per media sequence number, the
PROGRAM-DATE-TIME, EXTINF and part boundaries of each origin's media playlist, the first
decode time (tfdt) and media duration of its CMAF segment, and where its MPD places $Number$.

Sans-I/O comparison (`SegmentTiming`, `compare`, `summarise`); `snapshot` and `main` do the
fetching, over plain urllib, for `python -m flowcast.loadtest.alignment URL URL`.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass

from flowcast.loadtest import guard
from flowcast.media.fmp4 import FragmentedMP4Reader
from flowcast.media.types import Fragment, InitSegment
from flowcast.package.m3u8 import ParsedMediaPlaylist, parse_media_playlist
from flowcast.package.mpd import Manifest, parse_mpd


class AlignmentError(ValueError):
    """The origins' media cannot be compared (nothing in common, unreadable segment)."""


@dataclass(frozen=True, slots=True)
class SegmentTiming:
    """One segment of one origin, all times in seconds (epoch for PDT and tfdt)."""

    msn: int
    pdt: float | None
    duration: float  # EXTINF
    part_edges: tuple[float, ...] = ()  # PDT + cumulative part durations, first part's start included
    tfdt: float | None = None  # first sample's decode time
    media_duration: float | None = None  # sum of the sample durations
    mpd_time: float | None = None  # media time the MPD gives $Number$ = msn


@dataclass(frozen=True, slots=True)
class RowDiff:
    """Origin B minus origin A for one number (None: one side lacks the figure)."""

    msn: int
    pdt: float | None
    duration: float
    tfdt: float | None
    media_duration: float | None
    part_edges: float | None  # largest |difference| of matching part edges
    mpd_time: float | None


def playlist_timings(playlist: ParsedMediaPlaylist) -> dict[int, SegmentTiming]:
    """Whole (non-gap) segments of a media playlist by MSN; a segment without its own
    PROGRAM-DATE-TIME follows the previous one's (rfc8216bis 4.4.4.6)."""
    out: dict[int, SegmentTiming] = {}
    pdt: float | None = None
    for s in playlist.segments:
        if s.program_date_time is not None:
            pdt = s.program_date_time.timestamp()
        elif s.discontinuity:
            pdt = None
        start, pdt = pdt, (pdt + s.duration if pdt is not None else None)
        if s.gap:
            continue
        edges: tuple[float, ...] = ()
        if start is not None and s.parts:
            acc = [start]
            for p in s.parts:
                acc.append(acc[-1] + p.duration)
            edges = tuple(acc)
        out[s.msn] = SegmentTiming(msn=s.msn, pdt=start, duration=s.duration, part_edges=edges)
    return out


def media_timing(init: bytes, segment: bytes) -> tuple[float, float]:
    """(first decode time, summed sample duration) of a CMAF segment, in seconds."""
    reader = FragmentedMP4Reader()
    events = reader.feed(init + segment)
    inits = [e for e in events if isinstance(e, InitSegment)]
    frags = [e for e in events if isinstance(e, Fragment) and e.samples]
    if not inits or not frags:
        raise AlignmentError("segment has no init or no samples")
    scale = inits[0].tracks[0].timescale
    first = frags[0].samples[0].decode_time
    total = sum(s.duration for f in frags for s in f.samples)
    return first / scale, total / scale


def mpd_number_times(mpd: Manifest, content: str) -> list[tuple[float, float, int]]:
    """For each Period, in order: (Period@start, media time of its startNumber, startNumber)
    of the first AdaptationSet of `content` ("video"/"audio"), from SegmentTemplate@duration."""
    out: list[tuple[float, float, int]] = []
    for period in mpd.periods:
        aset = next((a for a in period.adaptation_sets if a.kind == content and a.segment_template), None)
        if aset is not None and aset.segment_template is not None:
            tpl = aset.segment_template
            out.append((period.start or 0.0, tpl.presentation_time_offset / tpl.timescale, tpl.start_number))
    return out


def mpd_time_of(mpd: Manifest, content: str, msn: int, segment_duration: float) -> float | None:
    """The media time an MPD (SegmentTemplate@duration, $Number$) gives segment `msn`: from
    the last Period starting at or before that number."""
    best = None
    for _start, pto, number in mpd_number_times(mpd, content):
        if number <= msn:
            best = pto + (msn - number) * segment_duration
    return best


def compare(a: Mapping[int, SegmentTiming], b: Mapping[int, SegmentTiming]) -> list[RowDiff]:
    """B minus A for every number both origins list."""
    common = sorted(set(a) & set(b))
    if not common:
        raise AlignmentError(f"no segment number in common: A {sorted(a)} B {sorted(b)}")
    rows = []
    for msn in common:
        x, y = a[msn], b[msn]
        edges = None
        if x.part_edges and y.part_edges:
            # Edges of the shorter list against the longer one's nearest edges.
            edges = max(min(abs(e - f) for f in y.part_edges) for e in x.part_edges)
        rows.append(
            RowDiff(
                msn=msn,
                pdt=_sub(y.pdt, x.pdt),
                duration=y.duration - x.duration,
                tfdt=_sub(y.tfdt, x.tfdt),
                media_duration=_sub(y.media_duration, x.media_duration),
                part_edges=edges,
                mpd_time=_sub(y.mpd_time, x.mpd_time),
            )
        )
    return rows


def _sub(y: float | None, x: float | None) -> float | None:
    return None if x is None or y is None else y - x


def summarise(rows: Iterable[RowDiff]) -> dict[str, float | int | None]:
    """Largest |difference| of each figure over the rows (seconds), and how many rows."""
    rows = list(rows)
    out: dict[str, float | int | None] = {"segments": len(rows)}
    for name in ("pdt", "duration", "tfdt", "media_duration", "part_edges", "mpd_time"):
        values = [abs(getattr(r, name)) for r in rows if getattr(r, name) is not None]
        out[f"max_abs_{name}"] = max(values) if values else None
    return out


# ---- fetching (loopback only) --------------------------------------------------------------


def _get(url: str, timeout: float = 10.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - loopback only, checked
        return resp.read()


def snapshot(
    base: str,
    rendition: str,
    *,
    stream: str = "live",
    segment_duration: float = 2.0,
    msns: Iterable[int] | None = None,
) -> dict[int, SegmentTiming]:
    """One origin's timings of `rendition`: playlist figures for every listed segment, and for
    those in `msns` (default: all) the tfdt and media duration of its segment and its MPD time."""
    from urllib.parse import urlsplit  # noqa: PLC0415

    guard.check_viewer_host(urlsplit(base).hostname or "")
    root = f"{base.rstrip('/')}/live/{stream}"
    timings = playlist_timings(parse_media_playlist(_get(f"{root}/{rendition}/index.m3u8")))
    mpd = parse_mpd(_get(f"{root}/manifest.mpd"))
    content = "audio" if rendition == "audio" else "video"
    init = _get(f"{root}/{rendition}/init.mp4")
    wanted = set(timings) if msns is None else set(msns) & set(timings)
    for msn in sorted(wanted):
        tfdt, dur = media_timing(init, _get(f"{root}/{rendition}/{msn}.m4s"))
        t = timings[msn]
        timings[msn] = SegmentTiming(
            msn=msn,
            pdt=t.pdt,
            duration=t.duration,
            part_edges=t.part_edges,
            tfdt=tfdt,
            media_duration=dur,
            mpd_time=mpd_time_of(mpd, content, msn, segment_duration),
        )
    return timings


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Compare two redundant origins segment by segment.")
    ap.add_argument("origin_a")
    ap.add_argument("origin_b")
    ap.add_argument("--rendition", action="append", help="rendition name (repeatable); default 360p and audio")
    ap.add_argument("--stream", default="live")
    ap.add_argument("--segment-duration", type=float, default=2.0)
    ap.add_argument("--rows", action="store_true", help="print every row, not only the summary")
    args = ap.parse_args(argv)
    report: dict[str, object] = {}
    for rendition in args.rendition or ["360p", "audio"]:
        a = snapshot(args.origin_a, rendition, stream=args.stream, segment_duration=args.segment_duration)
        b = snapshot(args.origin_b, rendition, stream=args.stream, segment_duration=args.segment_duration)
        rows = compare(a, b)
        entry: dict[str, object] = {"summary": summarise(rows)}
        if args.rows:
            entry["rows"] = [asdict(r) for r in rows]
            entry["a"] = [asdict(a[r.msn]) for r in rows]
            entry["b"] = [asdict(b[r.msn]) for r in rows]
        report[rendition] = entry
    json.dump(report, sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
