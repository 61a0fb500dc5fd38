"""W3C ClearKey license exchange (EME 9.1.3/9.1.4), sans-I/O in the h11 manner.

parse -> validate -> typed `LicenseRequest`, or a `LicenseError` carrying the HTTP status
to answer; `build_license_response` turns the keys the caller may have into the JWK Set.
The HTTP server (origin/) reads the body, checks tokens, calls these, writes the bytes.

Request:  {"kids":["<base64url KID>",...],"type":"temporary"}
Response: {"keys":[{"kty":"oct","k":"<base64url key>","kid":"<base64url KID>"}],"type":"temporary"}
base64url without padding (EME 9.1.3 "base64url encoded ... without padding").

Unknown or forbidden KIDs: EME lets a license carry a subset of the requested keys; the
CDM marks the missing ones as not usable, which is the right outcome when a player asks for
the current and the next (rotation) key before the next one exists. So such KIDs are
omitted. Only when *no* requested key can be returned is the request an error: 404 when
none is known, 403 when some are known but none is allowed. Players (dash.js, hls.js,
Shaka) report a failed license request clearly; an empty JWK Set they do not.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from .cenc import ContentKey

__all__ = [
    "DEFAULT_MAX_BODY",
    "DEFAULT_MAX_KIDS",
    "LicenseError",
    "LicenseRequest",
    "RateLimiter",
    "b64url_decode",
    "b64url_encode",
    "build_license_response",
    "parse_license_request",
]

DEFAULT_MAX_BODY = 4096  # bytes; 16 KIDs of 22 chars fit in well under 1 KiB
DEFAULT_MAX_KIDS = 16
SESSION_TYPES = ("temporary", "persistent-license")
_B64URL_RE = re.compile(r"[A-Za-z0-9_-]*={0,2}")


class LicenseError(Exception):
    """A license request we refuse, with the HTTP status to answer."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason


def b64url_encode(data: bytes) -> str:
    """base64url without padding."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Strict base64url: URL-safe alphabet only; padding optional (some players add it)."""
    if not isinstance(text, str) or not _B64URL_RE.fullmatch(text):
        raise ValueError("not base64url")
    body = text.rstrip("=")
    if len(body) % 4 == 1:
        raise ValueError("bad base64url length")
    try:
        return base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    except (binascii.Error, ValueError):
        raise ValueError("not base64url") from None


@dataclass(frozen=True, slots=True)
class LicenseRequest:
    kids: tuple[bytes, ...]  # 16 bytes each, in request order, duplicates removed
    type: str = "temporary"


def parse_license_request(
    body: bytes | str,
    *,
    max_body: int = DEFAULT_MAX_BODY,
    max_kids: int = DEFAULT_MAX_KIDS,
    session_types: tuple[str, ...] = ("temporary",),
) -> LicenseRequest:
    """Validate a ClearKey license request body; `LicenseError` (400/413) if it is not one."""
    raw = body.encode("utf-8") if isinstance(body, str) else bytes(body)
    if len(raw) > max_body:
        raise LicenseError(413, f"license request larger than {max_body} bytes")
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise LicenseError(400, "license request is not JSON") from None
    if not isinstance(doc, dict):
        raise LicenseError(400, "license request must be a JSON object")
    kids = doc.get("kids")
    if not isinstance(kids, list) or not kids:
        raise LicenseError(400, "'kids' must be a non-empty array")
    if len(kids) > max_kids:
        raise LicenseError(400, f"too many KIDs (max {max_kids})")
    session_type = doc.get("type", "temporary")
    if not isinstance(session_type, str):
        raise LicenseError(400, "'type' must be a string")
    if session_type not in session_types:
        raise LicenseError(400, f"session type {session_type!r} not supported")
    out: list[bytes] = []
    for i, item in enumerate(kids):
        if not isinstance(item, str):
            raise LicenseError(400, f"kids[{i}] must be a string")
        try:
            kid = b64url_decode(item)
        except ValueError:
            raise LicenseError(400, f"kids[{i}] is not base64url") from None
        if len(kid) != 16:
            raise LicenseError(400, f"kids[{i}] is {len(kid)} bytes, a KID is 16")
        if kid not in out:
            out.append(kid)
    return LicenseRequest(tuple(out), session_type)


KeyLookup = Mapping[bytes, ContentKey] | Callable[[bytes], ContentKey | None]


def build_license_response(
    request: LicenseRequest,
    keys: KeyLookup,
    allowed: Callable[[bytes], bool] | Iterable[bytes] | None = None,
) -> bytes:
    """The JWK Set for the requested KIDs that are known and allowed.

    `keys`: a mapping KID -> ContentKey or a lookup function (e.g. `KeyStore.find`).
    `allowed`: the KIDs this client may have (a set or predicate; None: all known).
    Raises LicenseError 404 (none known) or 403 (none allowed); see the module docstring.
    """
    lookup: Callable[[bytes], ContentKey | None]
    lookup = keys.get if isinstance(keys, Mapping) else keys  # type: ignore[assignment]
    if allowed is None:
        may: Callable[[bytes], bool] = lambda _kid: True  # noqa: E731
    elif callable(allowed):
        may = allowed
    else:
        allowed_set = frozenset(bytes(k) for k in allowed)
        may = allowed_set.__contains__
    jwks: list[dict[str, str]] = []
    known = 0
    for kid in request.kids:
        ck = lookup(kid)
        if ck is None:
            continue
        known += 1
        if not may(kid):
            continue
        jwks.append({"kty": "oct", "k": b64url_encode(ck.key), "kid": b64url_encode(kid)})
    if not jwks:
        if known:
            raise LicenseError(403, "not entitled to the requested keys")
        raise LicenseError(404, "unknown KID")
    return json.dumps({"keys": jwks, "type": request.type}, separators=(",", ":")).encode("ascii")


class RateLimiter:
    """Token buckets per client: `rate` requests/s refill, bursts up to `burst`.

    Sans-I/O: the caller passes `now` (monotonic seconds). Memory is bounded by
    `max_clients`: the least recently seen client is forgotten first, which only ever
    gives it a full bucket back.
    """

    def __init__(self, rate: float, burst: float, *, max_clients: int = 100_000) -> None:
        if not rate > 0 or not burst >= 1 or not math.isfinite(rate) or not math.isfinite(burst):
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate = float(rate)
        self.burst = float(burst)
        self.max_clients = max_clients
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # tokens, last

    def _refill(self, client: str, now: float) -> tuple[float, float]:
        """(tokens now, the bucket's clock): a clock going backwards never adds tokens."""
        tokens, last = self._buckets.get(client, (self.burst, now))
        if now <= last:
            return tokens, last
        return min(self.burst, tokens + (now - last) * self.rate), now

    def allow(self, client: str, now: float, cost: float = 1.0) -> bool:
        """Take `cost` tokens if available; False means answer 429."""
        tokens, clock = self._refill(client, now)
        ok = tokens >= cost
        if ok:
            tokens -= cost
        self._buckets[client] = (tokens, clock)
        self._buckets.move_to_end(client)
        while len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)
        return ok

    def retry_after(self, client: str, now: float, cost: float = 1.0) -> float:
        """Seconds until `cost` tokens are available (0 if now)."""
        tokens, _ = self._refill(client, now)
        return 0.0 if tokens >= cost else (cost - tokens) / self.rate

    def check(self, client: str, now: float, cost: float = 1.0) -> None:
        """`allow` raising LicenseError(429) instead of returning False."""
        if not self.allow(client, now, cost):
            wait = math.ceil(self.retry_after(client, now, cost))
            raise LicenseError(429, f"rate limited, retry after {wait}s")
