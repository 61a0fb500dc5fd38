"""Fastly token authentication (the VCL ``token`` recipe), sans-I/O.

The query parameter ``token=<exp>_<sig>`` where ``exp`` is unix seconds and ``sig`` is the
lower-case hex HMAC-SHA1, keyed with the base64-decoded shared secret, of the request path
immediately followed by the decimal ``exp`` (``/live/a.m3u8`` + ``1700000300``).

Verification: a malformed token or a bad signature is ``TokenInvalid`` (403); a genuine
token at or past ``exp`` is ``TokenExpired`` (410).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from dataclasses import dataclass

from flowcast.protect.tokens import TokenExpired, TokenInvalid, normalise_path

__all__ = ["QUERY_PARAM", "FastlyClaims", "FastlySigner", "FastlyVerifier"]

QUERY_PARAM = "token"
_TOKEN_RE = re.compile(r"(0|[1-9][0-9]{0,11})_([0-9a-f]{40})")


@dataclass(frozen=True, slots=True)
class FastlyClaims:
    path: str
    expires: int


def _key(key_b64: str | bytes) -> bytes:
    try:
        key = base64.b64decode(key_b64, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("the Fastly secret must be base64") from None
    if not key:
        raise ValueError("empty key")
    return key


def _sig(key: bytes, path: str, expires: int) -> str:
    return hmac.new(key, f"{path}{expires}".encode("utf-8"), hashlib.sha1).hexdigest()


class FastlySigner:
    def __init__(self, key_b64: str | bytes) -> None:
        self._key = _key(key_b64)

    def token(self, path: str, *, expires: int) -> str:
        """``<exp>_<hex HMAC-SHA1(key, path + exp)>`` for ``path`` (no query)."""
        if not path.startswith("/") or "?" in path:
            raise ValueError("sign a path: starting with / and without a query")
        if int(expires) <= 0:
            raise ValueError("expires must be positive")
        return f"{int(expires)}_{_sig(self._key, path, int(expires))}"

    def sign_url(self, path: str, *, expires: int) -> str:
        return f"{path}?{QUERY_PARAM}={self.token(path, expires=expires)}"


class FastlyVerifier:
    def __init__(self, key_b64: str | bytes) -> None:
        self._key = _key(key_b64)

    def verify(self, token: str, *, path: str, now: float) -> FastlyClaims:
        """``path`` is the raw request path (query ignored); it is signed as sent, and
        refused if it hides traversal."""
        if not isinstance(token, str):
            raise TokenInvalid("no token")
        match = _TOKEN_RE.fullmatch(token)
        if match is None:
            raise TokenInvalid("malformed token")
        if not isinstance(path, str):
            raise TokenInvalid("no path")
        raw_path = path.split("?", 1)[0]
        normalise_path(raw_path)
        expires = int(match.group(1))
        expected = _sig(self._key, raw_path, expires)
        if not hmac.compare_digest(match.group(2), expected):
            raise TokenInvalid("bad signature")
        if now >= expires:
            raise TokenExpired(f"expired at {expires}")
        return FastlyClaims(path=raw_path, expires=expires)
