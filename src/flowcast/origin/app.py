"""The origin's RSGI application: live media from the store, player kit, time, metrics.

No framework: one ``__call__`` routes on the path prefix and answers with pre-built bytes
(``response_bytes``) or, for a CMAF segment still being produced, with chunked transfer
(``response_stream``). Held requests (blocking playlist reload 6.2.5.2, preload-hinted
parts 6.2.6, early DASH segments) wait on the store's events. Held media requests are raced
against the client's disconnect, so an abandoned one is dropped at once; blocking reloads
are not (one publish wakes thousands of them, and a watcher each doubled their cost): an
abandoned one is answered into the closed connection at the next part, within 3 TD.
"""

from __future__ import annotations

import asyncio
import functools
import gzip
import logging
import mimetypes
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar
from urllib.parse import unquote

from flowcast.package.directives import BadDirective, DirectiveError
from flowcast.package.directives import parse_directives as _package_parse

from flowcast.protect.tokens import TokenClaims, TokenError, token_from_request
from flowcast.protect.watermark_session import NoSessionId, SessionVariants

from .access import MediaAccess
from .cache import CachePolicy
from .license import ClearKeyLicenseServer
from .metrics import OriginMetrics
from .telemetry_routes import PREFIX as QOE_PREFIX
from .telemetry_routes import RecordingProto, TelemetryService
from .store import (
    Growing,
    MediaStore,
    Playlist,
    PlaylistGone,
    ResourceKind,
    StoredObject,
    WaitTimeout,
)

if TYPE_CHECKING:
    from .chaos import ChaosControl
    from .tracing import OriginTracing

__all__ = ["BadDirective", "OriginApp", "npm_vendor_dirs", "parse_directives"]

log = logging.getLogger(__name__)

T = TypeVar("T")

# -- delivery directives (6.2.5) --------------------------------------------------------
# Parsing is flowcast.package.directives' (sans-I/O, h11 style: a typed result or a
# BadDirective carrying the status). The bound check stays here: it needs no
# parts-per-segment estimate (see check_directive_bounds).


def parse_directives(query: str) -> tuple[int | None, int | None, str | None]:
    """``(_HLS_msn, _HLS_part, _HLS_skip)`` of a query string, or BadDirective (``.status``).

    Unknown ``_HLS_`` names (steering's ``_HLS_pathway``, ``_HLS_throughput``) and
    non-reserved parameters (tokens, CMCD) are ignored; ``_HLS_part`` without
    ``_HLS_msn``, repeats and malformed values are 400.
    """
    if not query:
        return None, None, None  # a plain playlist request: most of them
    hit = _directives.get(query)
    if hit is not None:
        return hit  # every viewer of a rendition asks for the same next part
    d = _package_parse(query)
    if len(_directives) >= _MEMO_MAX:
        _directives.clear()
    hit = _directives[query] = (d.msn, d.part, (d.skip or None))
    return hit


_directives: dict[str, tuple[int | None, int | None, str | None]] = {}
_NO_DIRECTIVES: tuple[None, None, None] = (None, None, None)
_live_keys: dict[str, str] = {}  # request path under /live/ -> store key, once checked (safe_segments)
_MEMO_MAX = 8192  # distinct queries (or paths) remembered; then forgotten all at once


def advance_part_limit(part_target: float | None) -> float:
    """6.2.5.2: 3 / PART-TARGET when PART-TARGET < 1 s, else 3."""
    if part_target is not None and 0 < part_target < 1.0:
        return 3.0 / part_target
    return 3.0


def check_directive_bounds(pl: Playlist, msn: int, part: int | None) -> None:
    """Raise BadDirective when the request is too far ahead of the playlist (6.2.5.2)."""
    if msn == pl.msn and part is not None and part <= pl.part + 1:
        return  # the next part: what every live viewer asks for
    if msn > pl.msn + 2:
        raise BadDirective(f"_HLS_msn={msn} is more than 2 past the last segment {pl.msn}")
    if part is None:
        return
    if msn <= pl.msn - 1:
        return
    if msn == pl.msn:
        ahead = part - pl.part
    else:
        # Parts of segments not yet started: we do not know how many parts the current
        # segment will still get, so count the smallest possible distance (one part per
        # segment boundary) and never reject a request that may be legitimate.
        ahead = (msn - pl.msn) + part
    if ahead > advance_part_limit(pl.part_target):
        raise BadDirective(f"_HLS_part={part} of {msn} is beyond the Advance Part Limit")


# -- HTTP helpers -----------------------------------------------------------------------

Headers = list[tuple[str, str]]


@dataclass(frozen=True, slots=True)
class ControlRequest:
    """A request to a mounted control endpoint (WHIP, WHEP), body already read."""

    method: str
    path: str
    query: str
    headers: Any  # granian's headers: .get(name) with lower-case names
    client_ip: str | None
    body: bytes


class MountResponse(Protocol):
    status: int
    headers: list[tuple[str, str]]
    body: bytes


# see OriginApp.mount
MountHandler = Callable[[ControlRequest], Awaitable[MountResponse]]

_CORS: Headers = [
    ("access-control-allow-origin", "*"),
    (
        "access-control-expose-headers",
        "Content-Length, Content-Type, Content-Encoding, Date, ETag, Last-Modified, Age, Cache-Control",
    ),
    ("timing-allow-origin", "*"),  # players' Resource Timing for QoE/CMCD
]
_ALLOW = "GET, HEAD, OPTIONS"
_CONTROL_ALLOW = "GET, POST, PATCH, DELETE, OPTIONS"
# WHIP/WHEP clients read Location (the session resource) and Link (ICE servers)
_CONTROL_CORS: Headers = [
    ("access-control-allow-origin", "*"),
    ("access-control-expose-headers", "Location, Link, ETag, Content-Type"),
]

_MEDIA_TYPES = {
    ".m3u8": "application/vnd.apple.mpegurl",
    ".mpd": "application/dash+xml",
    ".m4s": "video/iso.segment",
    ".mp4": "video/mp4",
    ".m4v": "video/mp4",
    ".cmfv": "video/mp4",
    ".m4a": "audio/mp4",
    ".cmfa": "audio/mp4",
    ".vtt": "text/vtt",
    ".webvtt": "text/vtt",
    ".ts": "video/mp2t",
    ".aac": "audio/aac",
    ".json": "application/json",
}

_STATIC_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".map": "application/json",
    ".json": "application/json",
    ".svg": "image/svg+xml",
    ".wasm": "application/wasm",
    ".txt": "text/plain; charset=utf-8",
}
_COMPRESSIBLE = (".html", ".js", ".mjs", ".css", ".map", ".json", ".svg", ".txt")
_STATIC_CACHE_MAX_FILE = 8 * 1024 * 1024


def _media_type(path: str, kind: ResourceKind) -> str:
    ext = os.path.splitext(path)[1].lower()
    ctype = _MEDIA_TYPES.get(ext)
    if ctype is not None:
        return ctype
    if kind is ResourceKind.PLAYLIST:
        return _MEDIA_TYPES[".m3u8"]
    return "application/octet-stream"


def accepts_gzip(header: str | None) -> bool:
    """Accept-Encoding allows gzip (q > 0), directly or through ``*``."""
    if not header:
        return False
    return _accepts_gzip(header)


@functools.lru_cache(maxsize=256)
def _accepts_gzip(header: str) -> bool:
    # Once per playlist request, with a handful of distinct values (one per browser build);
    # bounded, so clients sending made-up values only churn 256 entries.
    star = False
    for token in header.split(","):
        name, _, params = token.strip().partition(";")
        name = name.strip().lower()
        q = 1.0
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if name in ("gzip", "x-gzip"):
            return q > 0
        if name == "*":
            star = q > 0
    return star


def safe_segments(rel: str) -> list[str] | None:
    """Path segments of a request path, or None when it could escape its root.

    The server hands us a percent-decoded path; we also refuse segments whose decoding
    is ``.``/``..`` so a double-encoded ``%252e%252e`` cannot turn into a traversal
    anywhere downstream. Empty segments (``//``, which would make an absolute path),
    backslashes and NUL are refused too.
    """
    if not rel or "\x00" in rel or "\\" in rel:
        return None
    parts = rel.split("/")
    escaped = "%" in rel  # nothing to decode on the usual media path: skip unquote
    for part in parts:
        if part in ("", ".", ".."):
            return None
        if escaped and (unquote(part) in (".", "..") or "\x00" in unquote(part)):
            return None
    return parts


class _ParkedReload:
    """A blocking reload parked in the store: the callback that answers it (one object
    per viewer, not a closure's function and cells)."""

    __slots__ = ("app", "scope", "proto", "skip", "head", "started")

    def __init__(self, app: OriginApp, scope: Any, proto: Any, skip: str | None, head: bool, started: float) -> None:
        self.app, self.scope, self.proto, self.skip, self.head, self.started = app, scope, proto, skip, head, started

    def __call__(self, newest: Playlist | None, exc: BaseException | None) -> None:
        self.app._playlist_parked_answer(self, newest, exc)


class _Disconnected(Exception):
    pass


class _ShuttingDown(_Disconnected):
    pass


class _StaticFile:
    __slots__ = ("key", "data", "gzip", "ctype")

    def __init__(self, key: tuple[int, int], data: bytes, gz: bytes | None, ctype: str) -> None:
        self.key = key
        self.data = data
        self.gzip = gz
        self.ctype = ctype


# npm packages whose dist folder is served under /vendor/<name>/ (ARCHITECTURE: from npm
# at set-up time, never copied into the repo).
VENDOR_PACKAGES = ("hls.js", "dashjs", "shaka-player")


def npm_vendor_dirs(node_modules: Path, packages: tuple[str, ...] = VENDOR_PACKAGES) -> dict[str, Path]:
    """``{name: node_modules/<name>/dist}`` for the installed player libraries."""
    dirs = {}
    for name in packages:
        dist = Path(node_modules) / name / "dist"
        if dist.is_dir():
            dirs[name] = dist
        else:
            log.warning("vendor %s not installed (%s missing); run npm ci in src/flowcast/web", name, dist)
    return dirs


# -- the application --------------------------------------------------------------------


class OriginApp:
    """RSGI application of the origin (granian ``Interfaces.RSGI``).

    Routes: ``/live/<stream>/...`` (store), ``/time`` (DASH UTCTiming http-xsdate),
    ``/metrics`` (Prometheus), ``/vendor/<lib>/<file>`` (npm dist folders), ``/`` and
    ``/player/...`` (player kit from ``static_dir``; any other file directly under
    ``static_dir`` is served at ``/<file>`` too, for relative asset links).
    """

    def __init__(
        self,
        store: MediaStore,
        *,
        static_dir: Path,
        vendor_dirs: dict[str, Path],
        metrics: OriginMetrics,
        cache: CachePolicy | None = None,
        blocking_timeout_tds: float = 3.0,
        access: MediaAccess | None = None,
        license_server: ClearKeyLicenseServer | None = None,
        hsts: bool = False,
        telemetry: TelemetryService | None = None,
        variants: SessionVariants | None = None,
        variant_store: MediaStore | None = None,
        chaos: ChaosControl | None = None,
        tracing: OriginTracing | None = None,
    ) -> None:
        # origin/chaos.ChaosControl (admin chaos routes) and origin/tracing.OriginTracing
        # (one span per /live/ request); None: off, at the cost of one branch.
        self.chaos = chaos
        self.tracing = tracing
        self.license_server = license_server
        # QoE collector, access events and reports (None: telemetry off, routes 404).
        self.telemetry = telemetry
        # Forensic A/B watermark: the marked rendition's media comes from `store` (variant A)
        # or `variant_store` (B), chosen per token session id and segment number.
        self.variants = variants
        self.variant_store = variant_store
        # Sent on every response when the origin terminates TLS itself (RFC 6797).
        self._always: Headers = [("strict-transport-security", "max-age=31536000")] if hsts else []
        self.store = store
        self.access = access  # None: media is public
        self.static_dir = Path(static_dir).resolve()
        self.vendor_dirs = {name: Path(p).resolve() for name, p in vendor_dirs.items()}
        self.metrics = metrics
        self._held_playlists = metrics.waiting_child("playlist")
        self.cache = cache if cache is not None else CachePolicy()
        self.blocking_timeout_tds = blocking_timeout_tds
        self._static: dict[Path, _StaticFile] = {}
        self._closing: asyncio.Future[None] | None = None
        self._held: set[asyncio.Future[None]] = set()  # one waiter per request in _race
        self._mounts: dict[str, tuple[MountHandler, int]] = {}  # control endpoints, see mount()

    def close(self) -> None:
        """Release every held request (503) so the server can stop without waiting 3 TD."""
        if self._closing is None:
            self._closing = asyncio.get_running_loop().create_future()
        if not self._closing.done():
            self._closing.set_result(None)
        for waiter in self._held:
            if not waiter.done():
                waiter.set_result(None)
        self.store.end_playlist_waits()  # blocking reloads: WaitTimeout now, answered 503

    # RSGI entry point
    async def __rsgi__(self, scope: Any, proto: Any) -> None:
        await self(scope, proto)

    async def __call__(self, scope: Any, proto: Any) -> None:
        if scope.proto != "http":
            return  # no websockets on the origin
        method = scope.method
        path = scope.path
        if path.startswith("/live/") and (method == "GET" or method == "HEAD") \
                and self.tracing is None and self.telemetry is None:
            # Nearly every request: media with no tracing or access recording around it.
            held = self._live(scope, proto, path[6:], method == "HEAD", getattr(proto, "parkable", False))
            if held is not None:
                await self._live_held(held, proto, method == "HEAD")
            return
        if method == "OPTIONS":
            self._preflight(scope, proto)
            return
        if method == "POST" and path == "/license/clearkey" and self.license_server is not None:
            await self._license(scope, proto)
            return
        for prefix, mounted in self._mounts.items():
            if path.startswith(prefix):
                await self._mounted(scope, proto, method, path, *mounted)
                return
        if self.telemetry is not None and path.startswith(QOE_PREFIX):
            if await self.telemetry.handle(scope, proto, method, path):
                return
        if self.chaos is not None and path.startswith("/admin/chaos/"):
            await self.chaos.handle(scope, proto, method, path)
            return
        if method not in ("GET", "HEAD"):
            headers = [("allow", _ALLOW), ("cache-control", self.cache.no_cache()), *_CORS]
            self._bytes(proto, 405, headers, b"method not allowed\n", False, "other")
            return
        head = method == "HEAD"
        try:
            if path.startswith("/live/"):
                if self.tracing is not None:
                    await self.tracing.traced(scope, proto, path, head, self._serve_live)
                else:
                    await self._serve_live(scope, proto, path, head)
            elif path == "/time":
                self._time(proto, head)
            elif path == "/metrics":
                body, ctype = self.metrics.exposition()
                headers = [("content-type", ctype), ("cache-control", "no-store"), *_CORS]
                self._bytes(proto, 200, headers, body, head, "metrics")
            elif path.startswith("/vendor/"):
                self._vendor(scope, proto, path[8:], head)
            else:
                self._static_route(scope, proto, path, head)
        except _ShuttingDown:
            self._shutting_down(proto, head)
        except _Disconnected:
            self.metrics.observe("other", 499, 0)  # nginx's "client closed request"

    def answer_now(self, scope: Any, proto: Any) -> Awaitable[None] | None:
        """Answer in the caller's stack, or return what finishes the answer once it waited.

        What our server (http1) calls instead of ``__call__`` when it can: a media request
        that needs no wait (nearly all of them) then costs no coroutine, context copy or
        task switch. Everything else is the ``__call__`` coroutine, returned unstarted.
        """
        method = scope.method
        path = scope.path
        if path.startswith("/live/") and (method == "GET" or method == "HEAD") and self.tracing is None:
            head = method == "HEAD"
            parkable = getattr(proto, "parkable", False)
            if self.telemetry is None:
                held = self._live(scope, proto, path[6:], head, parkable)
                return None if held is None else self._live_held(held, proto, head)
            if parkable:
                return self._live_recorded_now(scope, proto, path, head)
        return self(scope, proto)

    def _live_recorded_now(self, scope: Any, proto: Any, path: str, head: bool) -> Awaitable[None] | None:
        """``_live_recorded`` in our server's stack: a parked blocking reload is recorded
        once it is answered (``RecordingProto.unpark``), the rest as in the coroutine."""
        ts = time.time()
        rec = RecordingProto(proto, time.perf_counter())
        try:
            held = self._live(scope, rec, path[6:], head, True)
        except BaseException:
            self._record_access(ts, scope, path, rec)
            raise
        if held is not None:
            return self._live_recorded_held(ts, scope, path, rec, held, head)
        if proto.parked:
            rec.on_unpark = functools.partial(self._record_access, ts, scope, path, rec)
        else:
            self._record_access(ts, scope, path, rec)
        return None

    async def _live_recorded_held(
        self, ts: float, scope: Any, path: str, rec: RecordingProto, held: Awaitable[None], head: bool
    ) -> None:
        try:
            await self._live_held(held, rec, head)
        finally:
            self._record_access(ts, scope, path, rec)

    def _record_access(self, ts: float, scope: Any, path: str, rec: RecordingProto) -> None:
        assert self.telemetry is not None
        self.telemetry.record_access(
            ts, path, scope.query_string, scope.headers, rec.status or 499, rec.nbytes, rec.ttfb_ms
        )

    async def _live_held(self, held: Awaitable[None], proto: Any, head: bool) -> None:
        try:
            await held
        except _ShuttingDown:
            self._shutting_down(proto, head)
        except _Disconnected:
            self.metrics.observe("other", 499, 0)

    def _shutting_down(self, proto: Any, head: bool) -> None:
        headers = [("cache-control", "no-store"), ("retry-after", "1"), *_CORS]
        self._bytes(proto, 503, headers, b"shutting down\n", head, "other")

    async def _serve_live(self, scope: Any, proto: Any, path: str, head: bool) -> None:
        if self.telemetry is None:
            held = self._live(scope, proto, path[6:], head)
            if held is not None:
                await held
        else:
            await self._live_recorded(scope, proto, path, head)

    async def _live_recorded(self, scope: Any, proto: Any, path: str, head: bool) -> None:
        """``_live`` with an access event for the QoE store (status, bytes, time to first
        byte, CMCD), appended in memory; telemetry_routes writes it off the media path."""
        ts = time.time()
        rec = RecordingProto(proto, time.perf_counter())
        try:
            held = self._live(scope, rec, path[6:], head)
            if held is not None:
                await held
        finally:
            self._record_access(ts, scope, path, rec)

    # -- /license/clearkey ------------------------------------------------------------------

    async def _license(self, scope: Any, proto: Any) -> None:
        assert self.license_server is not None
        down = self.chaos.license_down() if self.chaos is not None else None
        if down is not None:  # license-outage drill (origin/chaos.py)
            headers = [("content-type", "application/json"), ("cache-control", "no-store"), *_CORS,
                       ("retry-after", str(max(1, round(down))))]
            self._bytes(proto, 503, headers, b'{"error":"license server unavailable"}\n', False, "license")
            return
        length = scope.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > 4096):
            body = b"x" * 4097  # refused as oversized by the license logic, without reading it
        else:
            body = await proto()
        answer = self.license_server.handle(
            body,
            query=scope.query_string,
            cookie=scope.headers.get("cookie"),
            client_ip=scope.client.rsplit(":", 1)[0].strip("[]") if scope.client else None,
            request_id=scope.headers.get("x-request-id"),
        )
        headers = [("content-type", "application/json"), ("cache-control", "no-store"), *_CORS]
        if answer.retry_after is not None:
            headers.append(("retry-after", str(max(1, round(answer.retry_after)))))
        self._bytes(proto, answer.status, headers, answer.body, False, "license")

    def mount(self, prefix: str, handler: MountHandler, *, max_body: int) -> None:
        """Serve every method under `prefix` with `handler` (WHIP, WHEP: control endpoints
        that live beside the media but are not part of its path)."""
        self._mounts[prefix] = (handler, max_body)

    async def _mounted(
        self, scope: Any, proto: Any, method: str, path: str, handler: MountHandler, max_body: int
    ) -> None:
        length = scope.headers.get("content-length")
        body = b""
        if length is None or (length.isdigit() and int(length) <= max_body):
            body = await proto() if method in ("POST", "PATCH", "PUT") else b""
        if len(body) > max_body or (length is not None and (not length.isdigit() or int(length) > max_body)):
            headers = [("content-type", "text/plain"), ("cache-control", "no-store"), *_CONTROL_CORS]
            self._bytes(proto, 413, headers, b"request body too large\n", False, "control")
            return
        client_ip = scope.client.rsplit(":", 1)[0].strip("[]") if scope.client else None
        answer = await handler(ControlRequest(method, path, scope.query_string, scope.headers, client_ip, body))
        headers = [*answer.headers, ("cache-control", "no-store"), *_CONTROL_CORS]
        self._bytes(proto, answer.status, headers, answer.body, False, "control")

    # -- /live ---------------------------------------------------------------------------

    def _live(self, scope: Any, proto: Any, rel: str, head: bool, parkable: bool = False) -> Awaitable[None] | None:
        """Answer a /live/ request now, or return what answers it once it has waited.

        Not a coroutine: most requests are answered at once, and for a held one only the
        returned coroutine (one frame, not a chain of them) stays alive while it waits.
        ``parkable``: the server is ours (http1) and nothing wraps this request, so a
        blocking reload may be parked (answered from a callback) instead.
        """
        key = _live_keys.get(rel)
        if key is None:
            parts = safe_segments(rel)
            if parts is None or len(parts) < 2:
                self._not_found(proto, head, "other")
                return None
            if len(_live_keys) >= _MEMO_MAX:
                _live_keys.clear()
            key = _live_keys[rel] = "/".join(parts)
        if self.access is not None:
            refusal = self.access.check(
                "/live/" + key,
                scope.query_string,
                scope.headers.get("cookie"),
                scope.client.rsplit(":", 1)[0].strip("[]") if scope.client else None,
                scope.headers.get("x-request-id"),
            )
            if refusal is not None:
                headers = [("content-type", "text/plain; charset=utf-8"), ("cache-control", "no-store"), *_CORS]
                self._bytes(proto, refusal.status, headers, refusal.body, head, "other")
                return None
        store, private = self.store, False
        if self.variants is not None:
            try:
                variant = self.variants.variant(key, self._token_claims(scope))
            except NoSessionId as exc:
                log.warning("refused (%s): %s path=/live/%s", exc.status, exc, key)
                headers = [("content-type", "text/plain; charset=utf-8"), ("cache-control", "no-store"), *_CORS]
                self._bytes(proto, exc.status, headers, b"Forbidden\n", head, "other")
                return None
            if variant is not None:
                # Per-session bytes: no shared cache may hand them to another session.
                private = True
                if variant == "B" and self.variant_store is not None:
                    store = self.variant_store
        pl = self.store.playlist(key)
        if pl is not None:
            return self._playlist(scope, proto, key, pl, head, parkable)
        obj = store.get(key)
        if obj is None:
            bound = store.hold_bound(key)
            if bound is None:
                self._not_found(proto, head, "other")
                return None
            return self._object_held(scope, proto, key, bound[1].value, head, store, private)
        if isinstance(obj, Growing):
            return self._growing(proto, key, obj, head, False, store=store, private=private)
        self._object(scope, proto, key, obj, head, False, private=private)
        return None

    async def _object_held(
        self, scope: Any, proto: Any, key: str, resource: str, head: bool, store: MediaStore, private: bool
    ) -> None:
        """A part or segment asked for before it exists (6.2.6 preload hint, early DASH)."""
        gauge = self.metrics.waiting_child(resource)
        gauge.value += 1
        started = asyncio.get_running_loop().time()
        outcome = "served"
        try:
            obj = await self._race(proto, store.wait_object(key))
        except (WaitTimeout, KeyError):
            outcome = "timeout"
            headers = [
                ("content-type", "text/plain; charset=utf-8"),
                ("cache-control", self.cache.media_error(held=True)),
                *_CORS,
            ]
            self._bytes(proto, 404, headers, b"not found\n", head, resource)
            return
        except _Disconnected:
            outcome = "disconnected"
            raise
        finally:
            gauge.value -= 1
            self.metrics.held(resource, outcome, asyncio.get_running_loop().time() - started)
        if isinstance(obj, Growing):
            await self._growing(proto, key, obj, head, True, store=store, private=private)
        else:
            self._object(scope, proto, key, obj, head, True, private=private)

    def _token_claims(self, scope: Any) -> TokenClaims | None:
        """The claims of the request's token (already checked by ``access``), for its session id."""
        if self.access is None:
            return None
        try:
            token = token_from_request(scope.query_string, scope.headers.get("cookie"))
            return self.access.verifier.parse(token, now=time.time()) if token else None
        except TokenError:
            return None

    def _object(
        self, scope: Any, proto: Any, key: str, obj: StoredObject, head: bool, held: bool, *, private: bool = False
    ) -> None:
        gz = obj.gzip is not None and accepts_gzip(scope.headers.get("accept-encoding"))
        td = self.store.target_duration_for(key)
        variant = (held, private, gz, td)
        answer = obj.memo.get(variant)
        if answer is None:
            answer = obj.memo[variant] = self._object_answer(key, obj, held, private, gz, td)
        headers, body, etag = answer
        if scope.headers.get("if-none-match") == etag:
            self._empty(proto, 304, headers, obj.kind.value)
            return
        if head:
            self._bytes(proto, 200, headers, body, True, obj.kind.value)
            return
        proto.response_bytes(200, headers + self._always if self._always else headers, body)
        self.metrics.observe(obj.kind.value, 200, len(body))

    def _object_answer(
        self, key: str, obj: StoredObject, held: bool, private: bool, gz: bool, td: float | None
    ) -> tuple[Headers, bytes, str]:
        """Headers, body and ETag of one way of answering for ``obj`` (built once per way)."""
        cc = self.cache.media(obj.kind, held=held, target_duration=td)
        headers = [
            ("content-type", _media_type(key, obj.kind)),
            ("cache-control", cc.replace("public", "private", 1) if private else cc),
            ("last-modified", obj.last_modified),
            *_CORS,
        ]
        body = obj.data
        etag = obj.etag
        if obj.gzip is not None:
            headers.append(("vary", "Accept-Encoding"))
            if gz:
                body = obj.gzip
                etag = etag[:-1] + '.gz"'
                headers.append(("content-encoding", "gzip"))
        headers.append(("etag", etag))
        return headers, body, etag

    async def _growing(
        self,
        proto: Any,
        key: str,
        growing: Growing,
        head: bool,
        held: bool,
        *,
        store: MediaStore | None = None,
        private: bool = False,
    ) -> None:
        td = self.store.target_duration_for(key)
        cc = self.cache.media(growing.kind, held=held, target_duration=td)
        headers = [
            ("content-type", _media_type(key, growing.kind)),
            ("cache-control", cc.replace("public", "private", 1) if private else cc),
            *_CORS,
        ]
        resource = growing.kind.value
        if head:
            self._empty(proto, 200, headers, resource)
            return
        # No Content-Length: HTTP/1.1 gets chunked transfer coding and HTTP/2 (granian) a
        # streamed body, each CMAF chunk sent as soon as it is appended.
        transport = proto.response_stream(200, headers + self._always)
        sent = 0
        index = 0
        gauge = self.metrics.waiting_child(resource)
        gauge.value += 1
        disconnect = asyncio.ensure_future(proto.client_disconnect())
        try:
            while True:
                chunks, done = await self._race(proto, growing.chunks_from(index), disconnect)
                if chunks:
                    data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
                    await transport.send_bytes(data)
                    sent += len(data)
                    index += len(chunks)
                if done:
                    break
            if growing.aborted:
                # Replaced by a complete object of the same path: send the rest of it if
                # it continues what was streamed; otherwise the stream just ends.
                obj = (store or self.store).get(key)
                if isinstance(obj, StoredObject) and len(obj.data) > sent:
                    await transport.send_bytes(obj.data[sent:])
                    sent = len(obj.data)
        except _Disconnected:
            pass
        except Exception:  # noqa: BLE001 - a dead peer: http1.ClientGone, or granian's ProtocolClosed
            log.debug("stream of %s ended early", key, exc_info=True)
        finally:
            gauge.value -= 1
            disconnect.cancel()
        self.metrics.observe(resource, 200, sent)

    def _playlist(
        self, scope: Any, proto: Any, key: str, pl: Playlist, head: bool, parkable: bool = False
    ) -> Awaitable[None] | None:
        """A media playlist request: answered now, or (blocking reload, 6.2.5.2) the
        coroutine that answers it once the playlist has what was asked for."""
        try:
            query = scope.query_string
            msn, part, skip = parse_directives(query) if query else _NO_DIRECTIVES
            blocking = msn is not None and not pl.ended  # 6.2.5.2: ignored after ENDLIST
            if blocking:
                check_directive_bounds(pl, msn, part)
        except DirectiveError as exc:
            headers = [
                ("content-type", "text/plain; charset=utf-8"),
                ("cache-control", self.cache.playlist_error(blocking=True)),
                *_CORS,
            ]
            self._bytes(proto, exc.status, headers, f"{exc}\n".encode(), head, "playlist")
            return None
        if blocking and not pl.satisfies(msn, part):
            if parkable:
                self._playlist_park(scope, proto, key, pl, msn, part, skip, head)  # type: ignore[arg-type]
                return None
            return self._playlist_held(scope, proto, key, pl, msn, part, skip, head)  # type: ignore[arg-type]
        self._playlist_now(scope, proto, pl, blocking, skip, head)
        return None

    async def _playlist_held(
        self, scope: Any, proto: Any, key: str, pl: Playlist, msn: int, part: int | None, skip: str | None,
        head: bool,
    ) -> None:
        # Awaited in the request's own task, with no disconnect watch: a publish wakes
        # thousands of these at once, and a Task plus a watcher per request was half the
        # CPU of each response (docs/benchmarks.md, fan-out). A client that left is answered
        # into its closed connection at the next part (<= 3 TD).
        gauge = self._held_playlists
        gauge.value += 1
        loop = asyncio.get_running_loop()
        started = loop.time()
        outcome = "served"
        try:
            if self._closing is not None and self._closing.done():
                raise _ShuttingDown
            pl = await self.store.wait_playlist(key, msn, part, self.blocking_timeout_tds * pl.target_duration)
        except WaitTimeout:
            if self._closing is not None and self._closing.done():
                outcome = "shutdown"
                raise _ShuttingDown from None
            outcome = "timeout"
            self._playlist_timeout(proto, head)
            return
        except (PlaylistGone, KeyError):
            outcome = "gone"
            self._not_found(proto, head, "playlist")
            return
        except _Disconnected:
            outcome = "disconnected"
            raise
        finally:
            gauge.value -= 1
            self.metrics.held("playlist", outcome, loop.time() - started)
        self._playlist_now(scope, proto, pl, not pl.ended, skip, head)

    def _playlist_park(
        self, scope: Any, proto: Any, key: str, pl: Playlist, msn: int, part: int | None, skip: str | None,
        head: bool,
    ) -> None:
        """``_playlist_held`` for our own server: the request is parked in the store and
        answered from the publish's callback, with no coroutine, future or step per viewer."""
        if self._closing is not None and self._closing.done():
            self._shutting_down(proto, head)
            return
        proto.park()
        self._held_playlists.value += 1
        answer = _ParkedReload(self, scope, proto, skip, head, asyncio.get_running_loop().time())
        self.store.park_playlist(key, msn, part, self.blocking_timeout_tds * pl.target_duration, answer)

    def _playlist_parked_answer(self, parked: _ParkedReload, newest: Playlist | None, exc: BaseException | None) -> None:
        """A parked blocking reload's answer, once the store is done holding it."""
        self._held_playlists.value -= 1
        proto, head = parked.proto, parked.head
        outcome = "served"
        try:
            if exc is None:
                self._playlist_now(parked.scope, proto, newest, not newest.ended, parked.skip, head)  # type: ignore[union-attr]
            elif isinstance(exc, WaitTimeout):
                if self._closing is not None and self._closing.done():
                    outcome = "shutdown"
                    self._shutting_down(proto, head)
                else:
                    outcome = "timeout"
                    self._playlist_timeout(proto, head)
            else:  # PlaylistGone, KeyError
                outcome = "gone"
                self._not_found(proto, head, "playlist")
        except Exception as failure:  # noqa: BLE001 - the server answers 500 if nothing was sent
            proto.unpark(failure)
            return
        finally:
            self.metrics.held("playlist", outcome, asyncio.get_running_loop().time() - parked.started)
        proto.unpark()

    def _playlist_timeout(self, proto: Any, head: bool) -> None:
        # 6.2.5.2: blocked for more than 3 target durations -> 503.
        headers = [
            ("content-type", "text/plain; charset=utf-8"),
            ("cache-control", self.cache.playlist_error(blocking=True)),
            ("retry-after", "1"),
            *_CORS,
        ]
        self._bytes(proto, 503, headers, b"playlist did not advance\n", head, "playlist")

    def _playlist_now(self, scope: Any, proto: Any, pl: Playlist, blocking: bool, skip: str | None, head: bool) -> None:
        use_delta = skip is not None and pl.delta is not None and not pl.ended
        accept = scope.headers.get("accept-encoding")
        gz = _accepts_gzip(accept) if accept else False
        variant = (blocking, use_delta, gz)
        answer = pl.memo.get(variant)
        if answer is None:
            answer = pl.memo[variant] = self._playlist_answer(pl, blocking, use_delta, gz)
        headers, body, etag = answer  # type: ignore[misc]
        if not blocking and scope.headers.get("if-none-match") == etag:
            self._empty(proto, 304, headers, "playlist")
            return
        if head:
            self._bytes(proto, 200, headers, body, True, "playlist")
            return
        proto.response_bytes(200, headers + self._always if self._always else headers, body)
        self.metrics.observe("playlist", 200, len(body))

    def _playlist_answer(self, pl: Playlist, blocking: bool, use_delta: bool, gz: bool) -> tuple[Headers, bytes, str]:
        """Headers, body and ETag of one way of answering with ``pl`` (built once per way)."""
        body = pl.delta if use_delta else pl.full
        etag = pl.etag[:-1] + (".d" if use_delta else "") + '"'
        headers = [
            ("content-type", "application/vnd.apple.mpegurl"),
            ("cache-control", self.cache.playlist(pl.target_duration, blocking=blocking, ended=pl.ended)),
            ("vary", "Accept-Encoding"),
            ("last-modified", pl.last_modified),
            *_CORS,
        ]
        if gz:
            body = pl.delta_gzip if use_delta else pl.full_gzip
            etag = etag[:-1] + '.gz"'
            headers.append(("content-encoding", "gzip"))
        headers.append(("etag", etag))
        return headers, body, etag  # type: ignore[return-value]

    # -- /time, static, vendor ------------------------------------------------------------

    def _time(self, proto: Any, head: bool) -> None:
        # DASH UTCTiming urn:mpeg:dash:utc:http-xsdate:2014: an xs:dateTime, in UTC.
        now = datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        headers = [
            ("content-type", "text/plain; charset=utf-8"),
            ("cache-control", self.cache.no_cache()),
            *_CORS,
        ]
        self._bytes(proto, 200, headers, now.encode(), head, "time")

    def _static_route(self, scope: Any, proto: Any, path: str, head: bool) -> None:
        if path in ("/", "/player", "/player/"):
            rel = "index.html"
        elif path in ("/dashboard", "/dashboard/"):
            rel = "dashboard.html"
        elif path.startswith("/player/"):
            rel = path[8:]
        else:
            rel = path[1:]
        parts = safe_segments(rel)
        if parts is None:
            self._not_found(proto, head, "static")
            return
        self._file(scope, proto, self.static_dir, parts, head, "static", self.cache.static())

    def _vendor(self, scope: Any, proto: Any, rel: str, head: bool) -> None:
        parts = safe_segments(rel)
        if parts is None or len(parts) < 2 or parts[0] not in self.vendor_dirs:
            self._not_found(proto, head, "vendor")
            return
        root = self.vendor_dirs[parts[0]]
        self._file(scope, proto, root, parts[1:], head, "vendor", self.cache.vendor())

    def _file(
        self, scope: Any, proto: Any, root: Path, parts: list[str], head: bool, resource: str, cc: str
    ) -> None:
        candidate = root.joinpath(*parts)
        try:
            target = candidate.resolve(strict=True)
            if target.is_dir():
                target = (target / "index.html").resolve(strict=True)
            # Strict containment after resolving symlinks: nothing outside ``root``.
            if not target.is_relative_to(root) or not target.is_file():
                raise FileNotFoundError(target)
            st = target.stat()
        except (OSError, ValueError):
            self._not_found(proto, head, resource)
            return
        ext = target.suffix.lower()
        ctype = _STATIC_TYPES.get(ext) or mimetypes.guess_type(target.name)[0] or "application/octet-stream"
        headers = [("content-type", ctype), ("cache-control", cc), *_CORS]
        if st.st_size > _STATIC_CACHE_MAX_FILE:
            if head:
                headers.append(("content-length", str(st.st_size)))
                self._empty(proto, 200, headers, resource)
            else:
                proto.response_file(200, headers + self._always, str(target))
                self.metrics.observe(resource, 200, st.st_size)
            return
        key = (st.st_mtime_ns, st.st_size)
        entry = self._static.get(target)
        if entry is None or entry.key != key:
            # Player kit and vendor bundles are read (and gzipped) once, then served
            # from memory; a changed file (mtime/size) is picked up on the next request.
            data = target.read_bytes()
            gz = None
            if ext in _COMPRESSIBLE:
                gz = gzip.compress(data, 6, mtime=0)
            entry = self._static[target] = _StaticFile(key, data, gz, ctype)
        body = entry.data
        if entry.gzip is not None:
            headers.append(("vary", "Accept-Encoding"))
            if accepts_gzip(scope.headers.get("accept-encoding")):
                body = entry.gzip
                headers.append(("content-encoding", "gzip"))
        self._bytes(proto, 200, headers, body, head, resource)

    # -- plumbing -------------------------------------------------------------------------

    def _preflight(self, scope: Any, proto: Any) -> None:
        requested = scope.headers.get("access-control-request-headers")
        allow = _CONTROL_ALLOW if any(scope.path.startswith(p) for p in self._mounts) else _ALLOW
        headers = [
            ("access-control-allow-origin", "*"),
            ("access-control-allow-methods", allow),
            ("access-control-allow-headers", requested[:1024] if requested else "*"),
            ("access-control-max-age", "86400"),
            ("allow", allow),
            ("cache-control", "public, max-age=86400"),
            ("vary", "Access-Control-Request-Headers"),
        ]
        self._empty(proto, 204, headers, "other")

    def _not_found(self, proto: Any, head: bool, resource: str) -> None:
        headers = [
            ("content-type", "text/plain; charset=utf-8"),
            ("cache-control", self.cache.error()),
            *_CORS,
        ]
        self._bytes(proto, 404, headers, b"not found\n", head, resource)

    def _bytes(self, proto: Any, status: int, headers: Headers, body: bytes, head: bool, resource: str) -> None:
        headers = headers + self._always
        if head:
            headers.append(("content-length", str(len(body))))
            proto.response_empty(status, headers)
            self.metrics.observe(resource, status, 0)
        else:
            proto.response_bytes(status, headers, body)
            self.metrics.observe(resource, status, len(body))

    def _empty(self, proto: Any, status: int, headers: Headers, resource: str) -> None:
        proto.response_empty(status, headers + self._always)
        self.metrics.observe(resource, status, 0)

    async def _race(
        self, proto: Any, aw: Awaitable[T], disconnect: asyncio.Future[Any] | None = None
    ) -> T:
        """Await ``aw`` unless the client goes away first (then raise _Disconnected)."""
        if self._closing is None:
            self._closing = asyncio.get_running_loop().create_future()
        closing = self._closing
        if closing.done():
            if asyncio.iscoroutine(aw):
                aw.close()
            raise _ShuttingDown
        task = asyncio.ensure_future(aw)
        own = disconnect is None
        if disconnect is None:
            disconnect = asyncio.ensure_future(proto.client_disconnect())
        # One waiter per request, woken by its own two futures or by close(). Not
        # asyncio.wait() on a future shared by every held request: on return, wait()
        # calls remove_done_callback() on it, which scans all its callbacks, so one
        # publish releasing N held requests cost O(N^2) (benchmarks/origin.py, fan-out).
        waiter = asyncio.get_running_loop().create_future()

        def wake(_: object) -> None:
            if not waiter.done():
                waiter.set_result(None)

        task.add_done_callback(wake)
        disconnect.add_done_callback(wake)
        self._held.add(waiter)
        try:
            await waiter
        except BaseException:
            task.cancel()
            if own:
                disconnect.cancel()
            raise
        finally:
            self._held.discard(waiter)
            task.remove_done_callback(wake)
            disconnect.remove_done_callback(wake)
        if task.done():
            if own:
                disconnect.cancel()
            return task.result()
        task.cancel()
        if own:
            disconnect.cancel()
        if closing.done():
            raise _ShuttingDown
        raise _Disconnected
