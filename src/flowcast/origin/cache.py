"""Cache-Control policy of the origin, per resource type (rfc8216bis Appendix B.1).

Appendix B.1 recommends (for CDNs in front of an LL-HLS origin):
- blocking playlist responses: 6 x Target Duration; their errors: 4 (seconds here);
- non-blocking playlist responses: 1/2 x Target Duration; errors: 1;
- blocking segment / part responses (held preload hints): 6 x Target Duration; errors: 1.
The error figures carry no unit in the fact sheet; we read them as seconds, the
conservative reading (a 503 cached for 4 target durations would stall every viewer
behind the CDN for up to 24 s on a 6 s ladder).

Media objects have names that never repeat (MSN-numbered, timestamp-aligned across
origins), so they can be cached long; manifests change rarely but must follow a restart
quickly, so they are short. ``max-age`` is an integer (RFC 9111 delta-seconds): we round
down and never go below 1 s, since 0 would defeat request collapsing at the CDN.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

from .store import ResourceKind

__all__ = ["CachePolicy", "NO_STORE"]

NO_STORE = "no-store"
NO_CACHE = "no-cache, no-store, must-revalidate"


@functools.lru_cache(maxsize=256)
def _max_age(seconds: float) -> str:
    # Once per response with a handful of distinct values: formatted once each.
    return f"public, max-age={max(1, math.floor(seconds))}"


@dataclass(frozen=True, slots=True)
class CachePolicy:
    """Cache-Control values; every number is configurable, defaults follow Appendix B.1."""

    blocking_playlist_tds: float = 6.0
    blocking_playlist_error_s: float = 4.0
    playlist_tds: float = 0.5
    playlist_error_s: float = 1.0
    blocking_media_tds: float = 6.0
    blocking_media_error_s: float = 1.0
    media_max_age_s: int = 86_400  # segments, parts: names are never reused
    init_max_age_s: int = 86_400  # init names change with the encoder configuration
    manifest_max_age_s: int = 2
    ended_playlist_max_age_s: int = 60  # ENDLIST: the playlist no longer changes
    static_max_age_s: int = 60
    vendor_max_age_s: int = 3_600
    error_max_age_s: float = 1.0  # 404 on anything else

    def playlist(self, target_duration: float, *, blocking: bool, ended: bool) -> str:
        if ended:
            return _max_age(self.ended_playlist_max_age_s)
        if blocking:
            return _max_age(self.blocking_playlist_tds * target_duration)
        return _max_age(self.playlist_tds * target_duration)

    def playlist_error(self, *, blocking: bool) -> str:
        return _max_age(self.blocking_playlist_error_s if blocking else self.playlist_error_s)

    def media(self, kind: ResourceKind, *, held: bool, target_duration: float | None) -> str:
        """An init / part / segment / manifest response; ``held`` if it went through a hold."""
        if kind is ResourceKind.MANIFEST:
            return _max_age(self.manifest_max_age_s)
        if held and target_duration:
            return _max_age(self.blocking_media_tds * target_duration)
        if kind is ResourceKind.INIT:
            return _max_age(self.init_max_age_s)
        return _max_age(self.media_max_age_s)

    def media_error(self, *, held: bool) -> str:
        return _max_age(self.blocking_media_error_s if held else self.error_max_age_s)

    def error(self) -> str:
        return _max_age(self.error_max_age_s)

    def static(self) -> str:
        return _max_age(self.static_max_age_s)

    def vendor(self) -> str:
        return _max_age(self.vendor_max_age_s)

    @staticmethod
    def no_cache() -> str:
        return NO_CACHE
