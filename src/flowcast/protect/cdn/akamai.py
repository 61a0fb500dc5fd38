"""Akamai EdgeAuth Token 2.0 (Auth Token 2.0 / "Token Auth"), sans-I/O.

The token (default name ``__token__``, in the query or a cookie) is ``~``-joined fields in
this fixed order, absent ones left out::

    ip=<addr>~st=<start>~exp=<end>~acl=<acl>[!<acl>...]~id=<session>~data=<payload>~hmac=<hex>

- ``hmac`` is hex HMAC (SHA-256 by default; SHA-1 and MD5 allowed) keyed with the
  hex-decoded secret, over the token text before ``~hmac=`` — for a URL token with
  ``~url=<path>`` appended (the URL is signed but not carried) and, where configured,
  ``~salt=<salt>``.
- ACL entries are matched with ``*`` (any run, ``/`` included) and ``?`` (one character).

Escaping mirrors Akamai's reference generator (akamai/EdgeAuth-Token-Python): nothing is
escaped by default; with ``escape_early=True`` the ``ip``, ``id``, ``data`` and ``url``
values are form-encoded (``quote_plus``, no safe characters) and the hex digits of each
``%XX`` escape are lower-cased, before going into both the token and the HMAC input. ACLs
are never escaped, so an ACL may not contain the delimiters ``~`` or ``!``. Python 3's
``quote_plus`` leaves ``~`` unescaped (it is unreserved), so the signer refuses any value
that would still contain ``~`` rather than emit a token that parses differently.

Verification raises ``TokenInvalid`` (403) or ``TokenExpired`` (410).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal
from urllib.parse import quote_plus, unquote_plus

from flowcast.protect.cdn.wildcard import wildcard_match
from flowcast.protect.tokens import TokenExpired, TokenInvalid, normalise_path

__all__ = [
    "TOKEN_NAME",
    "EdgeAuthClaims",
    "EdgeAuthSigner",
    "EdgeAuthVerifier",
    "acl_matches",
    "escape_early",
]

TOKEN_NAME = "__token__"
Algorithm = Literal["sha256", "sha1", "md5"]
FIELD_DELIMITER = "~"
ACL_DELIMITER = "!"
MAX_TOKEN_LENGTH = 4096
_FIELD_ORDER = ("ip", "st", "exp", "acl", "id", "data", "hmac")
_INT_RE = re.compile(r"(0|[1-9][0-9]{0,11})")
_HEX_DIGEST_LEN = {"sha256": 64, "sha1": 40, "md5": 32}
_PCT_RE = re.compile(r"%[0-9A-F]{2}")


def escape_early(text: str) -> str:
    """The reference generator's escape: ``quote_plus`` then lower-case ``%XX`` hex."""
    return _PCT_RE.sub(lambda m: m.group(0).lower(), quote_plus(text))


@dataclass(frozen=True, slots=True)
class EdgeAuthClaims:
    expires: int
    start: int | None = None
    acl: tuple[str, ...] = ()
    url: str | None = None
    ip: str | None = None
    session_id: str | None = None
    data: str | None = None


def _digest(algorithm: str):  # noqa: ANN202 - a hashlib constructor
    name = algorithm.lower()
    if name not in _HEX_DIGEST_LEN:
        raise ValueError("algorithm must be sha256, sha1 or md5")
    return getattr(hashlib, name)


def _key(key_hex: str) -> bytes:
    try:
        key = bytes.fromhex(key_hex)
    except ValueError:
        raise ValueError("the EdgeAuth key must be hex") from None
    if not key:
        raise ValueError("empty key")
    return key


class _Base:
    def __init__(
        self,
        key_hex: str,
        *,
        algorithm: Algorithm = "sha256",
        escape_early: bool = False,
        salt: str | None = None,
    ) -> None:
        self._key = _key(key_hex)
        self._digest = _digest(algorithm)
        self.algorithm = algorithm.lower()
        self.escape_early = escape_early
        self.salt = salt

    def _esc(self, text: str) -> str:
        return escape_early(text) if self.escape_early else text

    def _mac(self, signed_fields: str, url: str | None) -> str:
        source = signed_fields
        if url is not None:
            source += f"{FIELD_DELIMITER}url={self._esc(url)}"
        if self.salt:
            source += f"{FIELD_DELIMITER}salt={self.salt}"
        return hmac.new(self._key, source.encode("utf-8"), self._digest).hexdigest()


class EdgeAuthSigner(_Base):
    """Generates ACL tokens (a stream's path patterns) and URL tokens (one exact path)."""

    def acl_token(
        self,
        acl: str | Sequence[str],
        *,
        expires: int,
        start: int | None = None,
        ip: str | None = None,
        session_id: str | None = None,
        data: str | None = None,
    ) -> str:
        entries = [acl] if isinstance(acl, str) else list(acl)
        if not entries or any(not a for a in entries):
            raise ValueError("give at least one non-empty acl")
        for entry in entries:
            if FIELD_DELIMITER in entry or ACL_DELIMITER in entry:
                raise ValueError("an acl may not contain ~ or !")
        return self._token(ACL_DELIMITER.join(entries), None, expires, start, ip, session_id, data)

    def url_token(
        self,
        url: str,
        *,
        expires: int,
        start: int | None = None,
        ip: str | None = None,
        session_id: str | None = None,
        data: str | None = None,
    ) -> str:
        if not url:
            raise ValueError("give a url path")
        return self._token(None, url, expires, start, ip, session_id, data)

    def _token(
        self,
        acl: str | None,
        url: str | None,
        expires: int,
        start: int | None,
        ip: str | None,
        session_id: str | None,
        data: str | None,
    ) -> str:
        if start is not None and int(expires) <= int(start):
            raise ValueError("token would already have expired")
        if int(expires) <= 0 or (start is not None and int(start) <= 0):
            raise ValueError("times must be positive")
        fields: list[str] = []
        if ip:
            fields.append(f"ip={self._esc(ip)}")
        if start is not None:
            fields.append(f"st={int(start)}")
        fields.append(f"exp={int(expires)}")
        if acl is not None:
            fields.append(f"acl={acl}")
        if session_id:
            fields.append(f"id={self._esc(session_id)}")
        if data:
            fields.append(f"data={self._esc(data)}")
        for value in fields:
            if value.count(FIELD_DELIMITER):
                raise ValueError("a field may not contain ~ (use escape_early=True)")
        signed = FIELD_DELIMITER.join(fields)
        return f"{signed}{FIELD_DELIMITER}hmac={self._mac(signed, url)}"


def acl_matches(pattern: str, path: str) -> bool:
    """EdgeAuth ACL wildcards: ``*`` any run (``/`` included, also empty), ``?`` one char."""
    return wildcard_match(pattern, path)


class EdgeAuthVerifier(_Base):
    """Checks a token value (without the ``__token__=`` name) for a request."""

    def verify(
        self,
        token: str,
        *,
        path: str,
        client_ip: str | None = None,
        now: float,
    ) -> EdgeAuthClaims:
        """``path`` is the raw request path. An ACL token must have an entry matching the
        normalised path; a token without ``acl`` is a URL token for exactly ``path``."""
        if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_LENGTH:
            raise TokenInvalid("no token or too long")
        if not token.isascii():
            raise TokenInvalid("token not ASCII")
        signed, sep, mac = token.rpartition(f"{FIELD_DELIMITER}hmac=")
        if not sep:
            raise TokenInvalid("no hmac field")
        values = _parse_fields(signed)
        if len(mac) != _HEX_DIGEST_LEN[self.algorithm] or not re.fullmatch(r"[0-9a-f]+", mac):
            raise TokenInvalid("malformed hmac")
        if "exp" not in values:
            raise TokenInvalid("no exp field")
        for name in ("st", "exp"):
            if name in values and not _INT_RE.fullmatch(values[name]):
                raise TokenInvalid(f"malformed {name}")

        request_path = normalise_path(path)
        url: str | None = None
        if "acl" not in values:
            # URL token: the client cannot choose the signed URL, it is the request path.
            url = path.split("?", 1)[0]
        expected = self._mac(signed, url)
        if not hmac.compare_digest(mac, expected):
            raise TokenInvalid("bad signature")

        acl = tuple(values["acl"].split(ACL_DELIMITER)) if "acl" in values else ()
        if acl and not any(acl_matches(a, request_path) for a in acl):
            raise TokenInvalid("path outside the token's acl")
        start = int(values["st"]) if "st" in values else None
        expires = int(values["exp"])
        if start is not None and now < start:
            raise TokenInvalid("token not yet valid")
        ip = values.get("ip")
        if ip is not None:
            _check_ip(self._unesc(ip), client_ip)
        if now >= expires:
            raise TokenExpired(f"expired at {expires}")
        return EdgeAuthClaims(
            expires=expires,
            start=start,
            acl=acl,
            url=url,
            ip=self._unesc(ip) if ip is not None else None,
            session_id=self._unesc(values["id"]) if "id" in values else None,
            data=self._unesc(values["data"]) if "data" in values else None,
        )

    def _unesc(self, text: str) -> str:
        return unquote_plus(text) if self.escape_early else text


def _parse_fields(signed: str) -> dict[str, str]:
    values: dict[str, str] = {}
    last = -1
    for part in signed.split(FIELD_DELIMITER):
        name, sep, value = part.partition("=")
        if not sep or name not in _FIELD_ORDER or name == "hmac":
            raise TokenInvalid("unknown or malformed field")
        index = _FIELD_ORDER.index(name)
        if index <= last:
            raise TokenInvalid("fields out of order or repeated")
        last = index
        if not value:
            raise TokenInvalid(f"empty {name}")
        values[name] = value
    return values


def _check_ip(bound: str, client_ip: str | None) -> None:
    if client_ip is None:
        raise TokenInvalid("token is bound to an ip and none was given")
    try:
        same = ipaddress.ip_address(bound) == ipaddress.ip_address(client_ip)
    except ValueError:
        same = hmac.compare_digest(bound.encode(), client_ip.encode())
    if not same:
        raise TokenInvalid("client ip does not match the token")
