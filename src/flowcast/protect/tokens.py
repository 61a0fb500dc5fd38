"""flowcast's native URL token: HMAC-SHA256 over a path-prefix ACL, sans-I/O.

Why a prefix ACL: one token grants a whole stream directory (``/live/live/``), so the
playlists and segments stay byte-identical for every viewer and cacheable, and child URLs
need no per-URL signature. The token travels as the query parameter ``token`` (players add
it through hls.js ``xhrSetup``/``fetchSetup``, dash.js ``addRequestInterceptor`` or Shaka
``registerRequestFilter``) or as the cookie ``flowcast_token``.

Wire format (version 1), seven fields joined by ``.``::

    v1.<kid>.<exp>.<acl>.<sid>.<ip>.<mac>

- ``kid``: key id, ``[A-Za-z0-9_-]{1,32}``; selects the signing secret, so secrets rotate by
  adding a new kid to the verifiers first and signing with it afterwards.
- ``exp``: expiry, unix seconds, decimal, no sign, no leading zero; the token is valid while
  ``now < exp``.
- ``acl``, ``sid``, ``ip``: unpadded base64url (RFC 4648 section 5) of the UTF-8 path prefix,
  the session id and the client IP or CIDR network; ``sid`` and ``ip`` are empty when absent.
- ``mac``: unpadded base64url of HMAC-SHA256(secret[kid], ``flowcast-url-token\\x00`` +
  everything before the last ``.``).

The canonical string *is* the token's own prefix: every field is base64url or decimal, so no
field can contain the separator and each value has exactly one encoding. A token can only be
produced by whoever holds the secret, and it is compact and URL- and cookie-safe as is.

Verification is h11 style: ``TokenVerifier.verify`` parses, validates and returns
``TokenClaims`` or raises ``TokenInvalid`` (HTTP 403) or ``TokenExpired`` (HTTP 410). Both
carry an internal ``reason`` for logs and a ``public_message`` that tells a client nothing
about which check failed. Expiry is only reported for a token whose MAC is good, so a forged
or altered ``exp`` is a 403, not a 410.

ACL matching is on path-segment boundaries: ``/live/live/`` and ``/live/live`` both grant
``/live/live/x.m3u8`` but never ``/live/live2/x.m3u8``. The requested path is normalised by
``normalise_path`` first (query stripped, percent-decoded exactly once, ``.``/``..``
segments, empty segments, backslashes, control characters and leftover ``%`` refused), and
the origin must look files up by that same normalised path.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

__all__ = [
    "COOKIE_NAME",
    "QUERY_PARAM",
    "TokenClaims",
    "TokenError",
    "TokenExpired",
    "TokenInvalid",
    "TokenSigner",
    "TokenVerifier",
    "acl_grants",
    "normalise_path",
    "token_from_request",
]

VERSION = "v1"
QUERY_PARAM = "token"
COOKIE_NAME = "flowcast_token"
MAX_TOKEN_LENGTH = 4096
MIN_SECRET_BYTES = 16
_MAC_DOMAIN = b"flowcast-url-token\x00"
_KID_RE = re.compile(r"[A-Za-z0-9_-]{1,32}")
_EXP_RE = re.compile(r"(0|[1-9][0-9]{0,11})")
_B64URL_RE = re.compile(r"[A-Za-z0-9_-]*")
_MAX_EXP = 10**12


class TokenError(Exception):
    """A token was refused. ``status`` is the HTTP status to answer with, ``reason`` is for
    logs only, ``public_message`` is what the client may see."""

    status: int = 403
    public_message: str = "Forbidden"

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TokenInvalid(TokenError):
    """Malformed, bad signature, unknown kid, wrong path or wrong client: 403."""

    status = 403
    public_message = "Forbidden"


class TokenExpired(TokenError):
    """A genuine token past its expiry: 410, so players know to fetch a fresh token."""

    status = 410
    public_message = "Gone"


@dataclass(frozen=True, slots=True)
class TokenClaims:
    kid: str
    acl: str
    expires: int
    session_id: str | None = None
    client_ip: str | None = None


def _b64e(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64d(text: str) -> bytes:
    if not _B64URL_RE.fullmatch(text) or len(text) % 4 == 1:
        raise TokenInvalid("bad base64url field")
    raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if _b64e(raw) != text:  # non-canonical trailing bits
        raise TokenInvalid("non-canonical base64url field")
    return raw


def _utf8(raw: bytes, what: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise TokenInvalid(f"{what} is not UTF-8") from None


def normalise_path(raw: str) -> str:
    """The request path as tokens see it: query/fragment dropped, percent-decoded once.

    Refuses (``TokenInvalid``) rather than repairs anything a player never sends: a path not
    starting with ``/``, ``.``/``..`` or empty segments, backslashes, control characters,
    invalid UTF-8, and a ``%`` that survives the one decode (double encoding, ``%252e``).
    """
    if not isinstance(raw, str) or len(raw) > MAX_TOKEN_LENGTH:
        raise TokenInvalid("path missing or too long")
    path = raw.split("?", 1)[0].split("#", 1)[0]
    try:
        decoded = unquote_to_bytes(path).decode("utf-8")
    except UnicodeDecodeError:
        raise TokenInvalid("path is not UTF-8 after decoding") from None
    return _check_path(decoded, "path")


def _check_path(path: str, what: str) -> str:
    if not path.startswith("/"):
        raise TokenInvalid(f"{what} is not absolute")
    if "%" in path or "\\" in path:
        raise TokenInvalid(f"{what} has % or backslash after decoding")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in path):
        raise TokenInvalid(f"{what} has control characters")
    segments = path[1:].split("/")
    # A trailing "/" leaves one empty last segment, which is fine (a directory prefix).
    inner = segments[:-1] if segments[-1] == "" else segments
    for seg in inner:
        if seg in ("", ".", ".."):
            raise TokenInvalid(f"{what} has an empty, . or .. segment")
    return path


def acl_grants(acl: str, path: str) -> bool:
    """Whether a (normalised) prefix ACL grants a (normalised) path, on segment boundaries."""
    if acl.endswith("/"):
        return path.startswith(acl)
    return path == acl or path.startswith(acl + "/")


def _check_client(bound: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        return ipaddress.ip_network(bound, strict=False)
    except ValueError:
        raise TokenInvalid("bound client is not an IP address or network") from None


def _canonical_ip(value: str) -> str:
    """An address or network in canonical text, so ``::1`` and ``0:0::1`` sign alike."""
    if "/" in value:
        return str(ipaddress.ip_network(value, strict=False))
    return str(ipaddress.ip_address(value))


class TokenSigner:
    """Signs native tokens with ``keys[current_kid]``."""

    def __init__(self, keys: Mapping[str, bytes], current_kid: str) -> None:
        _check_keys(keys)
        if current_kid not in keys:
            raise ValueError(f"current_kid {current_kid!r} is not among the keys")
        self._kid = current_kid
        self._secret = bytes(keys[current_kid])

    @property
    def kid(self) -> str:
        return self._kid

    def sign(
        self,
        acl: str,
        *,
        ttl: int | None = None,
        expires: int | None = None,
        session_id: str | None = None,
        client_ip: str | None = None,
        now: float | None = None,
    ) -> str:
        """A token granting every path under ``acl`` until ``expires`` (or now + ``ttl``).

        ``client_ip`` may be an address or a CIDR network (``203.0.113.0/24``) for clients
        behind carrier NAT pools.
        """
        if (ttl is None) == (expires is None):
            raise ValueError("give exactly one of ttl or expires")
        if ttl is not None:
            if ttl <= 0:
                raise ValueError("ttl must be positive")
            expires = int(time.time() if now is None else now) + int(ttl)
        assert expires is not None
        if not 0 < int(expires) < _MAX_EXP:
            raise ValueError("expires out of range")
        try:
            acl = _check_path(acl, "acl")
        except TokenInvalid as exc:
            raise ValueError(exc.reason) from None
        if session_id is not None and not session_id:
            raise ValueError("session_id must be non-empty when given")
        ip_text = ""
        if client_ip is not None:
            ip_text = _canonical_ip(client_ip)
        body = ".".join(
            (
                VERSION,
                self._kid,
                str(int(expires)),
                _b64e(acl.encode("utf-8")),
                _b64e(session_id.encode("utf-8")) if session_id else "",
                _b64e(ip_text.encode("ascii")),
            )
        )
        return body + "." + _b64e(_mac(self._secret, body))


def _check_keys(keys: Mapping[str, bytes]) -> None:
    if not keys:
        raise ValueError("no keys")
    for kid, secret in keys.items():
        if not _KID_RE.fullmatch(kid):
            raise ValueError(f"kid {kid!r} must match [A-Za-z0-9_-]{{1,32}}")
        if len(secret) < MIN_SECRET_BYTES:
            raise ValueError(f"secret for kid {kid!r} is shorter than {MIN_SECRET_BYTES} bytes")


def _mac(secret: bytes, body: str) -> bytes:
    return hmac.new(secret, _MAC_DOMAIN + body.encode("ascii"), hashlib.sha256).digest()


class TokenVerifier:
    """Verifies native tokens against every key it holds (current and still-valid old kids)."""

    def __init__(self, keys: Mapping[str, bytes]) -> None:
        _check_keys(keys)
        self._keys = {kid: bytes(secret) for kid, secret in keys.items()}

    def verify(
        self,
        token: str,
        *,
        path: str,
        client_ip: str | None = None,
        now: float,
    ) -> TokenClaims:
        """Claims for a token that grants ``path`` to ``client_ip`` at ``now``, else raise.

        ``path`` is the raw request target path (it is normalised here).
        """
        # Every 403 check runs before the 410 one: "Gone" must mean "only the time is wrong",
        # so a player that refreshes its token on 410 is never sent round in circles.
        claims = self._authenticate(token)
        request_path = normalise_path(path)
        if not acl_grants(claims.acl, request_path):
            raise TokenInvalid("path outside the token's acl")
        if claims.client_ip is not None:
            if client_ip is None:
                raise TokenInvalid("token is bound to a client ip and none was given")
            try:
                addr = ipaddress.ip_address(client_ip)
            except ValueError:
                raise TokenInvalid("request client ip is not an address") from None
            network = _check_client(claims.client_ip)
            if addr.version != network.version or addr not in network:
                raise TokenInvalid("client ip does not match the token")
        _check_expiry(claims, now)
        return claims

    def parse(self, token: str, *, now: float) -> TokenClaims:
        """Check form, key, MAC and expiry; no path or client checks."""
        claims = self._authenticate(token)
        _check_expiry(claims, now)
        return claims

    def _authenticate(self, token: str) -> TokenClaims:
        if not isinstance(token, str) or not token:
            raise TokenInvalid("no token")
        if len(token) > MAX_TOKEN_LENGTH or not token.isascii():
            raise TokenInvalid("token too long or not ASCII")
        fields = token.split(".")
        if len(fields) != 7:
            raise TokenInvalid("wrong number of fields")
        version, kid, exp_text, acl_b64, sid_b64, ip_b64, mac_b64 = fields
        if version != VERSION:
            raise TokenInvalid("unknown token version")
        if not _KID_RE.fullmatch(kid):
            raise TokenInvalid("malformed kid")
        if not _EXP_RE.fullmatch(exp_text):
            raise TokenInvalid("malformed exp")
        secret = self._keys.get(kid)
        if secret is None:
            raise TokenInvalid(f"unknown kid {kid!r}")
        mac = _b64d(mac_b64)
        expected = _mac(secret, token.rpartition(".")[0])
        if not hmac.compare_digest(mac, expected):
            raise TokenInvalid("bad signature")
        # From here the fields are the signer's own; decode failures mean a signer bug.
        acl = _utf8(_b64d(acl_b64), "acl")
        _check_path(acl, "acl")
        sid = _utf8(_b64d(sid_b64), "sid") if sid_b64 else None
        ip = _utf8(_b64d(ip_b64), "ip") if ip_b64 else None
        return TokenClaims(kid=kid, acl=acl, expires=int(exp_text), session_id=sid, client_ip=ip)


def _check_expiry(claims: TokenClaims, now: float) -> None:
    if now >= claims.expires:
        raise TokenExpired(f"expired at {claims.expires}, now {int(now)}")


def token_from_request(query: str, cookie_header: str | None) -> str | None:
    """The token from the query (parameter ``token``) or else the ``flowcast_token`` cookie.

    A query or cookie header carrying the token more than once is refused (``TokenInvalid``)
    rather than resolved: which copy a cache, a proxy and we would each pick differs.
    """
    found: list[str] = []
    for pair in (query or "").lstrip("?").split("&"):
        name, sep, value = pair.partition("=")
        if sep and _pct(name) == QUERY_PARAM:
            found.append(_pct(value.replace("+", " ")))
    if len(found) > 1:
        raise TokenInvalid("token given more than once in the query")
    if found:
        return found[0] or None
    if not cookie_header:
        return None
    cookies: list[str] = []
    for part in cookie_header.split(";"):
        name, sep, value = part.strip().partition("=")
        if sep and name.strip() == COOKIE_NAME:
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
            cookies.append(value)
    if len(cookies) > 1:
        raise TokenInvalid("token cookie given more than once")
    return (cookies[0] or None) if cookies else None


def _pct(text: str) -> str:
    try:
        return unquote_to_bytes(text).decode("utf-8")
    except UnicodeDecodeError:
        raise TokenInvalid("query is not UTF-8") from None
