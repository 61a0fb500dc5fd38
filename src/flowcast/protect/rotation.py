"""Key rotation: a new content key every N segments, announced before it is used.

Key period p covers media sequence numbers [p*N, (p+1)*N). Segment numbers are aligned
across renditions (and across redundant origins), so every rendition switches key on the
same segment and any origin derives the same period for a segment.

What the live packager (origin/pipeline.py) does, checked with hls.js, dash.js and Shaka in
Chromium and with FFmpeg:
- Each key period has its own init segment, `init-<p>.mp4`: its tenc default_KID is the
  period's KID (and, for cbcs, its constant IV) and its moov carries the period's pssh
  boxes. A rotation is an init change, so FFmpeg (which follows tenc only) decrypts any
  segment with its own period's init segment and key.
- Every fragment also names its KID (and cbcs constant IV) in a fragment-local `seig`
  sample group (sbgp + sgpd, 23001-7 10.2). Measured need: Shaka 5.2 lists one segment
  past a Period's end and appends it under the ending Period's init segment with a 0.1 s
  appendWindowEnd fudge; the first AAC frame of the next period's segment starts up to
  half a frame before the boundary, so it was decrypted with the old key and Chromium's
  AAC decoder failed (PIPELINE_ERROR_DECODE). With seig, Chromium takes the KID from the
  fragment and that stray frame decrypts right.
- The period's Common (ClearKey) pssh lists its own KID and the next period's, so the CDM
  licenses the next key as soon as it meets the current init segment, one whole period
  before the boundary (`KeySignal.announce_kids`).
- HLS: EXT-X-KEY (one per KEYFORMAT) and EXT-X-MAP are written before the first segment
  or part of each period (rfc8216bis 4.4.4.4/4.4.4.5), restated before the first segment
  of a delta update or sliding window, and before an EXT-X-PRELOAD-HINT for the period's
  first part, so a preloaded part is read with the right init segment.
- DASH: each key period is a Period (id `<run>k<p>`, SegmentTemplate@initialization
  pointing at its init segment, ContentProtection with its default_KID and pssh), and the
  next key period is listed in the MPD from the first segment of the current one on: the
  player sees its ContentProtection a whole period early. Each Period carries
  SegmentTemplate@endNumber from its first appearance (dash.js 5 does not re-read it on
  MPD updates; without it, it fetched the next period's first segment under the old
  Period, its end computed from float Period starts near 1.8e9 s).
- A rotating stream's MPD is regular DASH, not chunked low-latency DASH: measured with a
  Period every 4 s, dash.js 5.2 and Shaka 5.2 in low-latency mode switch Periods while the
  last segment is still arriving, drop its tail and stall at every boundary (5 stalls in
  22 s each); with whole segments both played 22 s with none. LL-HLS is unaffected.
- The ClearKey license endpoint finds every period's key by KID in the key store.

`KeyRotation` is the schedule; `StoreKeys` and `CpixKeys` give the key of a period: keys
generated into the key store, or a DRM vendor's keys from a CPIX document (imported into
the key store, wrapped like generated ones, with their Widevine/PlayReady pssh).
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from flowcast.media.types import TrackInfo
from flowcast.package.hls import HlsKey, HlsMap

from .cenc import ContentKey, Scheme, TrackEncryptor
from .cpix import CpixDocument, CpixError, key_periods
from .keystore import KeyStore, KeyStoreError
from .pssh import FAIRPLAY_SYSTEM_ID, PLAYREADY_SYSTEM_ID, WIDEVINE_SYSTEM_ID
from .signalling import KeySignal, SystemSignal, clearkey_signal, hls_key, pssh_boxes

__all__ = [
    "CpixKeys",
    "FixedKey",
    "KeySchedule",
    "KeyedPeriod",
    "KeyRotation",
    "KeySource",
    "PeriodKey",
    "RotationStep",
    "StoreKeys",
    "key_period",
    "period_bounds",
]

log = logging.getLogger(__name__)


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


@dataclass(frozen=True, slots=True)
class PeriodKey:
    """The key of one key period for one track kind, and the DRM systems (beside our
    ClearKey) whose pssh/signalling go with it."""

    key: ContentKey
    systems: tuple[SystemSignal, ...] = ()


class KeySource(Protocol):
    """Where the packager gets the key of a period. `periods`: how many distinct key
    periods the source has (None: as many as asked for)."""

    @property
    def periods(self) -> int | None: ...

    def key(self, period: int, kind: str) -> PeriodKey: ...


class StoreKeys:
    """Keys generated on first use into the key store, one per (stream, period)."""

    def __init__(self, store: KeyStore, stream: str) -> None:
        self._store = store
        self._stream = stream

    @property
    def periods(self) -> int | None:
        return None

    def key(self, period: int, kind: str) -> PeriodKey:
        return PeriodKey(self._store.key_for(self._stream, period))


class CpixKeys:
    """A DRM vendor's keys from a CPIX document, imported into the key store.

    Period i uses the document's i-th key period (`cpix.key_periods`); past the last one the
    keys are reused from the first, with a warning, since a live stream outlasts any one
    document. Widevine and PlayReady pssh (and FairPlay's URI for cbcs) come from the
    document's DRMSystem entries for the KID.
    """

    def __init__(self, doc: CpixDocument, store: KeyStore, stream: str, scheme: str) -> None:
        self._periods = key_periods(doc)
        self._doc = doc
        self._scheme = scheme
        self._warned = False
        self._keys: dict[bytes, ContentKey] = {}
        for i, kinds in enumerate(self._periods):
            for k in kinds.values():
                if k.kid in self._keys:
                    continue
                cs = k.common_encryption_scheme
                if cs and cs != scheme:
                    raise CpixError(f"content key {k.kid_uuid} is for commonEncryptionScheme {cs!r}, not {scheme!r}")
                try:
                    self._keys[k.kid] = store.import_key(stream, i, k.kid, k.value or b"", k.explicit_iv)
                except KeyStoreError as exc:
                    raise CpixError(str(exc)) from None

    @property
    def periods(self) -> int | None:
        return len(self._periods)

    def key(self, period: int, kind: str) -> PeriodKey:
        if period >= len(self._periods) and not self._warned:
            self._warned = True
            log.warning(
                "the CPIX document has %d key period(s): key period %d uses its key period %d, "
                "and keys repeat every %d periods (give a document with more periods)",
                len(self._periods), period, period % len(self._periods), len(self._periods),
            )
        cpix_key = self._periods[period % len(self._periods)][kind if kind in ("video", "audio") else "video"]
        systems: list[SystemSignal] = []
        for d in self._doc.systems_for(cpix_key.kid):
            if d.system_id in (WIDEVINE_SYSTEM_ID, PLAYREADY_SYSTEM_ID):
                boxes = d.pssh_boxes()
                if boxes and all(s.system_id != d.system_id for s in systems):
                    systems.append(SystemSignal(d.system_id, pssh=boxes[0]))
            elif d.system_id == FAIRPLAY_SYSTEM_ID and d.uri_ext_x_key and self._scheme == "cbcs":
                systems.append(SystemSignal(d.system_id, key_uri=d.uri_ext_x_key))
        return PeriodKey(self._keys[cpix_key.kid], tuple(systems))



class FixedKey:
    """One key for everything (the pipeline's `content_key` argument)."""

    def __init__(self, key: ContentKey) -> None:
        self._key = key

    @property
    def periods(self) -> int | None:
        return 1

    def key(self, period: int, kind: str) -> PeriodKey:
        return PeriodKey(self._key)


@dataclass(frozen=True, slots=True)
class KeyedPeriod:
    """A DASH Period cut out of an encoder run by the key schedule."""

    id: str
    start: float
    start_number: int
    wall_clock: float
    key_period: int


class KeySchedule:
    """Which key, init segment and signalling each segment of a stream uses (sans-I/O).

    `source` gives the keys, `rotation` the schedule (interval None/0: one key, period 0,
    and the init segment keeps its usual name). Signals are built once per (period, kind).
    """

    def __init__(
        self,
        scheme: Scheme,
        source: KeySource,
        rotation: KeyRotation | None = None,
        *,
        license_url: str | None = None,
    ) -> None:
        if scheme not in ("cenc", "cbcs"):
            raise ValueError(f"no key schedule for scheme {scheme!r}")
        self.scheme: Scheme = scheme
        self.source = source
        self.rotation = rotation or KeyRotation()
        self.license_url = license_url
        self._signals: dict[tuple[int, str], KeySignal] = {}

    @property
    def rotates(self) -> bool:
        return self.rotation.rotates

    def period(self, msn: int) -> int:
        return self.rotation.period(max(msn, 0))

    def init_name(self, period: int) -> str:
        return f"init-{period}.mp4" if self.rotates else "init.mp4"

    def signal(self, period: int, kind: str) -> KeySignal:
        """ClearKey (plus the source's systems) for the period; with rotation the Common pssh
        also names the next period's KID, so the CDM licenses it a period early."""
        cached = self._signals.get((period, kind))
        if cached is not None:
            return cached
        pk = self.source.key(period, kind)
        announce: tuple[bytes, ...] = ()
        if self.rotates:
            nxt = self.source.key(period + 1, kind).key.kid
            if nxt != pk.key.kid:
                announce = (nxt,)
        sig = clearkey_signal(pk.key.kid, self.scheme, self.license_url, announce_kids=announce, extra_systems=pk.systems)
        self._signals[(period, kind)] = sig
        # Keep the cache to the periods a live window can still name.
        for old in [k for k in self._signals if k[0] < period - 64]:
            del self._signals[old]
        return sig

    def encryptor(self, period: int, kind: str, track: TrackInfo) -> TrackEncryptor:
        """A TrackEncryptor for the period (call encrypt_init on the run's clear init first)."""
        key = self.source.key(period, kind).key
        if self.scheme == "cenc":
            # CTR mode: a fresh random start for the per-sample IVs of every encryptor (one per
            # encoder run and period), so no IV is ever reused under a key (IVs travel in senc).
            key = ContentKey(kid=key.kid, key=key.key, iv=secrets.token_bytes(8))
        return TrackEncryptor(
            self.scheme, track, key, systems=pssh_boxes(self.signal(period, kind)), sample_groups=self.rotates
        )

    def hls_changes(self, msns: Sequence[int], kind: str) -> tuple[tuple[HlsKey, ...], tuple[HlsMap, ...]]:
        """EXT-X-KEY and EXT-X-MAP changes for a playlist listing segments `msns` (in order,
        the hinted one included): one of each where a key period starts, and one for the
        first listed. Without rotation: the one key from the first segment, no map change."""
        if not self.rotates:
            return (hls_key(self.signal(0, kind), msns[0] if msns else 0),), ()
        keys: list[HlsKey] = []
        maps: list[HlsMap] = []
        last = None
        for msn in msns:
            p = self.period(msn)
            if p != last:
                keys.append(hls_key(self.signal(p, kind), msn))
                maps.append(HlsMap(msn, self.init_name(p)))
                last = p
        return tuple(keys), tuple(maps)

    def last_msn(self, period: int, next_start: int | None = None) -> int | None:
        """The last segment number of a key period's DASH Period (None without rotation):
        known from the schedule before the period starts, so the Period carries it from its
        first appearance (players do not re-read it on later MPD updates); an encoder restart
        (`next_start`, the next Period's first number) may end it sooner."""
        if not self.rotates:
            return None
        _, last = period_bounds(period, self.rotation.interval)
        assert last is not None
        return last if next_start is None else min(last, next_start - 1)

    def dash_periods(
        self,
        runs: Sequence[tuple[str, float, int, float]],
        last_period: int,
        segment_duration: float,
    ) -> list[KeyedPeriod]:
        """Cut encoder runs (id, start, start_number, wall_clock) into one DASH Period per key
        period, the last run up to and including key period `last_period` (announced early).
        Without rotation: one Period per run, key period 0."""
        out: list[KeyedPeriod] = []
        for i, (rid, start, first, wall) in enumerate(runs):
            if not self.rotates:
                out.append(KeyedPeriod(rid, start, first, wall, 0))
                continue
            assert self.rotation.interval
            end = runs[i + 1][2] if i + 1 < len(runs) else (last_period + 1) * self.rotation.interval
            for p in range(self.period(first), self.period(max(first, end - 1)) + 1):
                f = max(first, p * self.rotation.interval)
                if f >= end and out:
                    break
                offset = (f - first) * segment_duration
                out.append(KeyedPeriod(f"{rid}k{p}", round(start + offset, 3), f, wall + offset, p))
        return out
