"""Key rotation: a new content key every N segments, announced before it is used.

Key period p covers media sequence numbers [p*N, (p+1)*N). Segment numbers are aligned
across renditions (and across redundant origins), so every rendition switches key on the
same segment and any origin derives the same period for a segment.

Announcing without a playback gap:
- HLS: an EXT-X-KEY applies to every segment after it until the next one (rfc8216bis
  4.4.4.4), so the key tags of period p+1 are written right before the first segment (or
  first part) of that period. A player fetching the playlist sees them before it needs the
  segment; `lead` more segments ahead we also announce the next period's KIDs where the
  format allows it (below).
- DASH / CMAF: ClearKey and Widevine accept a pssh listing several KIDs. From `lead`
  segments before a boundary, fragments carry a pssh naming the current and the next KID
  (moof pssh, 23001-7 8.1), so the CDM licenses the next key before its first sample; the
  per-fragment KID itself switches through `seig` sample groups.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["KeyRotation", "RotationStep", "key_period", "period_bounds"]


def key_period(msn: int, interval: int | None) -> int:
    """The key period of segment `msn`; interval None or 0 means one key forever (period 0)."""
    if msn < 0:
        raise ValueError("msn must be >= 0")
    if not interval:
        return 0
    if interval < 0:
        raise ValueError("key_rotation_interval must be >= 0")
    return msn // interval


def period_bounds(period: int, interval: int | None) -> tuple[int, int | None]:
    """(first msn, last msn) of a key period; last is None when there is no rotation."""
    if period < 0:
        raise ValueError("period must be >= 0")
    if not interval:
        return 0, None
    return period * interval, (period + 1) * interval - 1


@dataclass(frozen=True, slots=True)
class RotationStep:
    """What the packager does at segment `msn`.

    `period`: the key that encrypts it. `starts_period`: it is the first segment of that
    period, so HLS writes new EXT-X-KEY tags before it. `announce`: the periods whose KIDs
    must be signalled with it (the current one, plus the next within the lead window).
    """

    msn: int
    period: int
    starts_period: bool
    announce: tuple[int, ...]

    @property
    def next_period(self) -> int | None:
        return self.announce[-1] if len(self.announce) > 1 else None


@dataclass(frozen=True, slots=True)
class KeyRotation:
    """Rotation schedule. `interval`: segments per key (config `key_rotation_interval`),
    None/0 disables rotation. `lead`: how many segments before a boundary the next key is
    announced (>= 1; 2 leaves room for a license round trip at short segment durations)."""

    interval: int | None = None
    lead: int = 1

    def __post_init__(self) -> None:
        if self.interval is not None and self.interval < 0:
            raise ValueError("interval must be >= 0")
        if self.lead < 0:
            raise ValueError("lead must be >= 0")
        if self.interval and self.lead >= self.interval:
            raise ValueError("lead must be shorter than the rotation interval")

    @property
    def rotates(self) -> bool:
        return bool(self.interval)

    def period(self, msn: int) -> int:
        return key_period(msn, self.interval)

    def starts_period(self, msn: int) -> bool:
        """True for the first segment of a period (rotation on) or for msn 0."""
        if not self.interval:
            return msn == 0
        return msn % self.interval == 0

    def step(self, msn: int) -> RotationStep:
        p = self.period(msn)
        announce: tuple[int, ...] = (p,)
        if self.interval and self.lead:
            _, last = period_bounds(p, self.interval)
            if last is not None and last - msn < self.lead:
                announce = (p, p + 1)
        return RotationStep(msn, p, self.starts_period(msn), announce)

    def periods_between(self, first_msn: int, last_msn: int) -> tuple[int, ...]:
        """Every period used by segments first_msn..last_msn (a playlist window)."""
        if last_msn < first_msn:
            return ()
        return tuple(range(self.period(first_msn), self.period(last_msn) + 1))
