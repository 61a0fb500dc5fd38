"""Amazon CloudFront signed URLs and signed cookies (trusted key groups), sans-I/O.

What CloudFront checks, and so what this module writes and verifies:

- The signed text is a policy statement, JSON with no white space, keys in this order::

      {"Statement":[{"Resource":"<url>","Condition":{"DateLessThan":{"AWS:EpochTime":<n>}}}]}

  A *canned* policy is exactly that, rebuilt by CloudFront from the request URL and the
  ``Expires`` parameter. A *custom* policy travels as ``Policy`` and may add ``IpAddress``
  (``{"AWS:SourceIp":"a.b.c.d/n"}``, a bare address gets ``/32``) and ``DateGreaterThan``,
  and its ``Resource`` may hold the wildcards ``*`` (any run, also empty) and ``?`` (one
  character). Condition order follows botocore's ``CloudFrontSigner.build_policy`` so our
  URLs are byte-identical to the AWS SDK's.
- The signature is RSASSA-PKCS1-v1_5 over the policy bytes with SHA-1 (the default) or with
  SHA-256, which the URL announces as ``Hash-Algorithm=SHA256`` (cookie
  ``CloudFront-Hash-Algorithm``).
- Binary values use CloudFront's base64: standard base64, then ``+`` -> ``-``, ``=`` -> ``_``,
  ``/`` -> ``~``.
- URL parameters: ``Expires`` or ``Policy``, then ``Signature``, ``Key-Pair-Id`` (and
  ``Hash-Algorithm``). Cookies: ``CloudFront-Expires`` or ``CloudFront-Policy``,
  ``CloudFront-Signature``, ``CloudFront-Key-Pair-Id`` (and ``CloudFront-Hash-Algorithm``).

``CloudFrontVerifier`` lets the origin enforce the same rules when it is reached as if it
were CloudFront, and lets tests check round trips. It raises ``TokenInvalid`` (403) and
``TokenExpired`` (410; CloudFront itself answers 403 for both, the edge may map it).
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from flowcast.protect.cdn.wildcard import wildcard_match
from flowcast.protect.tokens import TokenExpired, TokenInvalid, normalise_path

__all__ = [
    "CloudFrontPolicy",
    "CloudFrontSigner",
    "CloudFrontVerifier",
    "HashAlgorithm",
    "canned_policy",
    "cf_b64decode",
    "cf_b64encode",
    "custom_policy",
    "resource_matches",
]

HashAlgorithm = Literal["SHA1", "SHA256"]
_URL_PARAMS = ("Expires", "Policy", "Signature", "Key-Pair-Id", "Hash-Algorithm")
_COOKIE_PREFIX = "CloudFront-"
MAX_POLICY_CHARS = 8192
_CF_B64_RE = re.compile(r"[A-Za-z0-9~_-]*")
_INT_RE = re.compile(r"(0|[1-9][0-9]{0,11})")
_KEY_PAIR_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,128}")


def cf_b64encode(data: bytes) -> str:
    """CloudFront's URL-safe base64 (``+``->``-``, ``=``->``_``, ``/``->``~``)."""
    return (
        base64.b64encode(data).decode("ascii").replace("+", "-").replace("=", "_").replace("/", "~")
    )


def cf_b64decode(text: str) -> bytes:
    """Inverse of ``cf_b64encode``; ``TokenInvalid`` on anything it would not have written."""
    if not _CF_B64_RE.fullmatch(text) or len(text) % 4:
        raise TokenInvalid("not CloudFront base64")
    std = text.replace("-", "+").replace("_", "=").replace("~", "/")
    try:
        raw = base64.b64decode(std, validate=True)
    except (binascii.Error, ValueError):
        raise TokenInvalid("not CloudFront base64") from None
    if cf_b64encode(raw) != text:
        raise TokenInvalid("non-canonical CloudFront base64")
    return raw


def _source_ip(ip_address: str) -> str:
    # botocore's rule: a bare address means that one host.
    return ip_address if "/" in ip_address else ip_address + "/32"


def canned_policy(resource: str, expires: int) -> str:
    """The canned policy statement CloudFront rebuilds from ``Expires`` (no white space)."""
    return custom_policy(resource, date_less_than=expires)


def custom_policy(
    resource: str,
    *,
    date_less_than: int,
    date_greater_than: int | None = None,
    ip_address: str | None = None,
) -> str:
    """A policy statement; ``resource`` may contain ``*`` and ``?`` wildcards."""
    condition: dict[str, object] = {"DateLessThan": {"AWS:EpochTime": int(date_less_than)}}
    if ip_address:
        ipaddress.ip_network(_source_ip(ip_address), strict=False)  # validate early
        condition["IpAddress"] = {"AWS:SourceIp": _source_ip(ip_address)}
    if date_greater_than is not None:
        condition["DateGreaterThan"] = {"AWS:EpochTime": int(date_greater_than)}
    statement = {"Statement": [{"Resource": resource, "Condition": condition}]}
    return json.dumps(statement, separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class CloudFrontPolicy:
    """A verified policy: what the request was allowed by."""

    key_pair_id: str
    resource: str
    date_less_than: int
    date_greater_than: int | None = None
    source_ip: str | None = None
    canned: bool = False
    hash_algorithm: HashAlgorithm = "SHA1"


def _hash(name: HashAlgorithm) -> hashes.HashAlgorithm:
    if name == "SHA1":
        return hashes.SHA1()
    if name == "SHA256":
        return hashes.SHA256()
    raise ValueError(f"unsupported hash algorithm {name!r}")


class CloudFrontSigner:
    """Signs URLs and cookies with one trusted key group's RSA private key."""

    def __init__(
        self,
        key_pair_id: str,
        private_key: rsa.RSAPrivateKey | bytes,
        *,
        hash_algorithm: HashAlgorithm = "SHA1",
    ) -> None:
        if not _KEY_PAIR_ID_RE.fullmatch(key_pair_id):
            raise ValueError("key_pair_id must be [A-Za-z0-9_-]{1,128}")
        if isinstance(private_key, bytes):
            private_key = serialization.load_pem_private_key(private_key, password=None)  # type: ignore[assignment]
        if not isinstance(private_key, rsa.RSAPrivateKey):
            raise ValueError("CloudFront signing here needs an RSA private key")
        self.key_pair_id = key_pair_id
        self.hash_algorithm: HashAlgorithm = hash_algorithm
        self._key = private_key
        self._hash = _hash(hash_algorithm)

    def sign(self, policy: str | bytes) -> bytes:
        data = policy.encode("utf-8") if isinstance(policy, str) else policy
        return self._key.sign(data, padding.PKCS1v15(), self._hash)

    def _tail(self, policy: str) -> list[tuple[str, str]]:
        params = [("Signature", cf_b64encode(self.sign(policy))), ("Key-Pair-Id", self.key_pair_id)]
        if self.hash_algorithm != "SHA1":
            params.append(("Hash-Algorithm", self.hash_algorithm))
        return params

    def canned_url(self, url: str, *, expires: int) -> str:
        """``url`` + ``Expires``, ``Signature``, ``Key-Pair-Id`` (one exact URL)."""
        params = [("Expires", str(int(expires)))] + self._tail(canned_policy(url, expires))
        return _append(url, params)

    def custom_url(self, url: str, policy: str) -> str:
        """``url`` + ``Policy``, ``Signature``, ``Key-Pair-Id``; build ``policy`` with
        ``custom_policy`` (its Resource may be a wildcard covering ``url``)."""
        params = [("Policy", cf_b64encode(policy.encode("utf-8")))] + self._tail(policy)
        return _append(url, params)

    def canned_cookies(self, resource: str, *, expires: int) -> dict[str, str]:
        params = [("Expires", str(int(expires)))] + self._tail(canned_policy(resource, expires))
        return {_COOKIE_PREFIX + k: v for k, v in params}

    def custom_cookies(self, policy: str) -> dict[str, str]:
        """Cookies for a whole stream: pass a policy whose Resource is e.g. ``https://d/live/*``."""
        params = [("Policy", cf_b64encode(policy.encode("utf-8")))] + self._tail(policy)
        return {_COOKIE_PREFIX + k: v for k, v in params}


def _append(url: str, params: list[tuple[str, str]]) -> str:
    separator = "&" if "?" in url else "?"
    return url + separator + "&".join(f"{k}={v}" for k, v in params)


def resource_matches(pattern: str, url: str) -> bool:
    """CloudFront wildcard match: ``*`` any run (also empty), ``?`` exactly one character."""
    return wildcard_match(pattern, url)


def _load_public(key: rsa.RSAPublicKey | bytes) -> rsa.RSAPublicKey:
    if isinstance(key, bytes):
        key = serialization.load_pem_public_key(key)  # type: ignore[assignment]
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("CloudFront verification here needs RSA public keys")
    return key


class CloudFrontVerifier:
    """Checks signed URLs and cookies the way CloudFront does, against a trusted key group."""

    def __init__(
        self,
        public_keys: Mapping[str, rsa.RSAPublicKey | bytes],
        *,
        allow_sha1: bool = True,
    ) -> None:
        if not public_keys:
            raise ValueError("no public keys")
        self._keys = {kid: _load_public(k) for kid, k in public_keys.items()}
        self._allow_sha1 = allow_sha1

    def verify_url(self, url: str, *, client_ip: str | None = None, now: float) -> CloudFrontPolicy:
        """Verify a signed URL (as requested: scheme, host, path, query)."""
        if not isinstance(url, str) or len(url) > 2 * MAX_POLICY_CHARS:
            raise TokenInvalid("url missing or too long")
        base, sep, query = url.partition("?")
        signing: dict[str, str] = {}
        kept: list[str] = []
        for pair in query.split("&") if sep else []:
            name, _, value = pair.partition("=")
            if name in _URL_PARAMS:
                if name in signing:
                    raise TokenInvalid(f"{name} given twice")
                signing[name] = value
            else:
                kept.append(pair)
        resource_url = base + ("?" + "&".join(kept) if kept else "")
        return self._verify(signing, resource_url, client_ip=client_ip, now=now, is_url=True)

    def verify_cookies(
        self,
        url: str,
        cookies: Mapping[str, str] | str,
        *,
        client_ip: str | None = None,
        now: float,
    ) -> CloudFrontPolicy:
        """Verify signed cookies (a mapping or a raw ``Cookie`` header) for request ``url``."""
        if isinstance(cookies, str):
            cookies = _parse_cookie_header(cookies)
        signing = {
            name[len(_COOKIE_PREFIX):]: value
            for name, value in cookies.items()
            if name.startswith(_COOKIE_PREFIX) and name[len(_COOKIE_PREFIX):] in _URL_PARAMS
        }
        if not isinstance(url, str) or len(url) > 2 * MAX_POLICY_CHARS:
            raise TokenInvalid("url missing or too long")
        return self._verify(signing, url, client_ip=client_ip, now=now, is_url=False)

    def _verify(
        self,
        signing: Mapping[str, str],
        request_url: str,
        *,
        client_ip: str | None,
        now: float,
        is_url: bool,
    ) -> CloudFrontPolicy:
        expires_text = signing.get("Expires")
        policy_text = signing.get("Policy")
        if (expires_text is None) == (policy_text is None):
            raise TokenInvalid("need exactly one of Expires or Policy")
        key_pair_id = signing.get("Key-Pair-Id")
        signature_text = signing.get("Signature")
        if key_pair_id is None or signature_text is None:
            raise TokenInvalid("Signature or Key-Pair-Id missing")
        algorithm_text = signing.get("Hash-Algorithm", "SHA1")
        if algorithm_text not in ("SHA1", "SHA256"):
            raise TokenInvalid("unknown Hash-Algorithm")
        algorithm: HashAlgorithm = algorithm_text  # type: ignore[assignment]
        if algorithm == "SHA1" and not self._allow_sha1:
            raise TokenInvalid("SHA-1 signatures refused by configuration")
        key = self._keys.get(key_pair_id)
        if key is None:
            raise TokenInvalid("unknown Key-Pair-Id")
        if len(signature_text) > 2048:
            raise TokenInvalid("signature too long")
        signature = cf_b64decode(signature_text)

        if expires_text is not None:
            if not _INT_RE.fullmatch(expires_text):
                raise TokenInvalid("malformed Expires")
            policy_bytes = canned_policy(request_url, int(expires_text)).encode("utf-8")
        else:
            assert policy_text is not None
            if len(policy_text) > MAX_POLICY_CHARS:
                raise TokenInvalid("policy too long")
            policy_bytes = cf_b64decode(policy_text)

        try:
            key.verify(signature, policy_bytes, padding.PKCS1v15(), _hash(algorithm))
        except (InvalidSignature, UnsupportedAlgorithm, ValueError):
            raise TokenInvalid("bad signature") from None

        if expires_text is not None:
            policy = CloudFrontPolicy(
                key_pair_id=key_pair_id,
                resource=request_url,
                date_less_than=int(expires_text),
                canned=True,
                hash_algorithm=algorithm,
            )
        else:
            policy = _parse_policy(policy_bytes, key_pair_id, algorithm, request_url, is_url)

        # The wildcard grants a prefix, so refuse traversal before matching (CloudFront
        # normalises; our origin must not serve /live/../secret under /live/*).
        normalise_path(urlsplit(request_url).path or "/")
        if not resource_matches(policy.resource, request_url):
            raise TokenInvalid("url outside the policy resource")
        if policy.date_greater_than is not None and now < policy.date_greater_than:
            raise TokenInvalid("policy not yet valid")
        if policy.source_ip is not None:
            _check_ip(policy.source_ip, client_ip)
        if now >= policy.date_less_than:
            raise TokenExpired(f"expired at {policy.date_less_than}")
        return policy


def _check_ip(source_ip: str, client_ip: str | None) -> None:
    if client_ip is None:
        raise TokenInvalid("policy is bound to a source ip and none was given")
    try:
        network = ipaddress.ip_network(source_ip, strict=False)
        addr = ipaddress.ip_address(client_ip)
    except ValueError:
        raise TokenInvalid("bad source ip") from None
    if addr.version != network.version or addr not in network:
        raise TokenInvalid("client ip outside the policy")


def _epoch(condition: object, what: str) -> int:
    if not isinstance(condition, dict) or set(condition) != {"AWS:EpochTime"}:
        raise TokenInvalid(f"malformed {what}")
    value = condition["AWS:EpochTime"]
    if type(value) is not int or not 0 <= value < 10**12:
        raise TokenInvalid(f"malformed {what}")
    return value


def _parse_policy(
    raw: bytes, key_pair_id: str, algorithm: HashAlgorithm, request_url: str, is_url: bool
) -> CloudFrontPolicy:
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise TokenInvalid("policy is not JSON") from None
    if not isinstance(doc, dict) or set(doc) != {"Statement"}:
        raise TokenInvalid("policy needs exactly a Statement")
    statements = doc["Statement"]
    if not isinstance(statements, list) or len(statements) != 1 or not isinstance(statements[0], dict):
        raise TokenInvalid("policy needs exactly one statement")
    statement = statements[0]
    if not set(statement) <= {"Resource", "Condition"} or "Condition" not in statement:
        raise TokenInvalid("unexpected statement keys")
    resource = statement.get("Resource")
    if resource is None and is_url:
        resource = request_url  # a URL policy may omit Resource: it then covers that URL
    if not isinstance(resource, str) or not resource:
        raise TokenInvalid("policy Resource missing")
    condition = statement["Condition"]
    if not isinstance(condition, dict) or not set(condition) <= {
        "DateLessThan",
        "DateGreaterThan",
        "IpAddress",
    }:
        raise TokenInvalid("unexpected condition keys")
    if "DateLessThan" not in condition:
        raise TokenInvalid("DateLessThan missing")
    less = _epoch(condition["DateLessThan"], "DateLessThan")
    greater = (
        _epoch(condition["DateGreaterThan"], "DateGreaterThan")
        if "DateGreaterThan" in condition
        else None
    )
    source_ip = None
    if "IpAddress" in condition:
        ip_cond = condition["IpAddress"]
        if not isinstance(ip_cond, dict) or set(ip_cond) != {"AWS:SourceIp"}:
            raise TokenInvalid("malformed IpAddress")
        source_ip = ip_cond["AWS:SourceIp"]
        if not isinstance(source_ip, str):
            raise TokenInvalid("malformed IpAddress")
    return CloudFrontPolicy(
        key_pair_id=key_pair_id,
        resource=resource,
        date_less_than=less,
        date_greater_than=greater,
        source_ip=source_ip,
        canned=False,
        hash_algorithm=algorithm,
    )


def _parse_cookie_header(header: str) -> dict[str, str]:
    cookies: dict[str, str] = {}
    for part in header.split(";"):
        name, sep, value = part.strip().partition("=")
        name = name.strip()
        if not sep or not name.startswith(_COOKIE_PREFIX):
            continue
        if name in cookies:
            raise TokenInvalid(f"cookie {name} given twice")
        cookies[name] = value.strip()
    return cookies
