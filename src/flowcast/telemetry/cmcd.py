"""CMCD (CTA-5004) parsing, sans-I/O: the `CMCD` query parameter and CMCD-* headers.

Syntax (CTA-5004 section 3, after RFC 8941 dictionaries): `key[=value]` members joined by
commas; a key alone means boolean true (`?0` / `?1` are accepted too); values are integers,
decimals, tokens (unquoted, e.g. `ot=v`, `sf=h`) or strings in double quotes with `\\"` and
`\\\\` escapes. Keys are lower-case and unique; a key repeated is a parse error.
Not supported: inner lists (CMCD v2 `br=(...)`), which raise CmcdError.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final
from urllib.parse import parse_qs

from flowcast.telemetry.schema import OriginRequest

CmcdValue = bool | int | float | str

HEADERS: Final = ("CMCD-Request", "CMCD-Object", "CMCD-Status", "CMCD-Session")

_KEY = re.compile(r"[a-z*][a-z0-9_\-.*]*")
_TOKEN = re.compile(r"[A-Za-z*][A-Za-z0-9!#$%&'*+\-.^_`|~:/]*")
_NUMBER = re.compile(r"-?\d{1,15}(\.\d{1,3})?")


class CmcdError(ValueError):
    """Malformed CMCD data; the message says where."""


class CmcdToken(str):
    """A token value (unquoted), kept apart from strings for round-tripping."""


def parse_cmcd(text: str) -> dict[str, CmcdValue]:
    """Parse one CMCD member list (query value or header value) into a dict."""
    out: dict[str, CmcdValue] = {}
    i, n = 0, len(text)
    while i < n:
        while i < n and text[i] == " ":
            i += 1
        m = _KEY.match(text, i)
        if not m:
            raise CmcdError(f"expected a key at offset {i}")
        key = m.group(0)
        i = m.end()
        if key in out:
            raise CmcdError(f"duplicate key {key!r}")
        value: CmcdValue
        if i < n and text[i] == "=":
            i += 1
            value, i = _parse_value(text, i, key)
        else:
            value = True
        out[key] = value
        while i < n and text[i] == " ":
            i += 1
        if i < n:
            if text[i] != ",":
                raise CmcdError(f"expected ',' at offset {i}")
            i += 1
            if i >= n:
                raise CmcdError("trailing ','")
    return out


def _parse_value(text: str, i: int, key: str) -> tuple[CmcdValue, int]:
    n = len(text)
    if i >= n:
        raise CmcdError(f"missing value for {key!r}")
    c = text[i]
    if c == '"':
        buf: list[str] = []
        i += 1
        while True:
            if i >= n:
                raise CmcdError(f"unterminated string for {key!r}")
            c = text[i]
            if c == "\\":
                if i + 1 >= n or text[i + 1] not in '"\\':
                    raise CmcdError(f"bad escape in string for {key!r}")
                buf.append(text[i + 1])
                i += 2
            elif c == '"':
                return "".join(buf), i + 1
            elif " " <= c <= "~":
                buf.append(c)
                i += 1
            else:
                raise CmcdError(f"non-printable character in string for {key!r}")
    if c == "?":
        if text[i : i + 2] == "?1":
            return True, i + 2
        if text[i : i + 2] == "?0":
            return False, i + 2
        raise CmcdError(f"bad boolean for {key!r}")
    if c == "-" or c.isdigit():
        m = _NUMBER.match(text, i)
        if not m:
            raise CmcdError(f"bad number for {key!r}")
        s = m.group(0)
        return (float(s) if m.group(1) else int(s)), m.end()
    m = _TOKEN.match(text, i)
    if not m:
        raise CmcdError(f"bad value for {key!r}")
    return CmcdToken(m.group(0)), m.end()


def serialize_cmcd(data: Mapping[str, CmcdValue]) -> str:
    """The inverse of parse_cmcd (keys sorted, as CTA-5004 recommends)."""
    parts = []
    for key in sorted(data):
        v = data[key]
        if v is True:
            parts.append(key)
        elif v is False:
            parts.append(f"{key}=?0")
        elif isinstance(v, CmcdToken):
            parts.append(f"{key}={v}")
        elif isinstance(v, str):
            escaped = v.replace("\\", "\\\\").replace('"', '\\"')
            parts.append(f'{key}="{escaped}"')
        elif isinstance(v, float):
            text = f"{v:.3f}".rstrip("0")
            parts.append(f"{key}={text}0" if text.endswith(".") else f"{key}={text}")
        else:
            parts.append(f"{key}={v}")
    return ",".join(parts)


def cmcd_from_request(query: str, headers: Mapping[str, str]) -> dict[str, CmcdValue]:
    """Merge CMCD from a raw query string and the CMCD-* headers (case-insensitive names).

    A key sent in both places is an error: players send CMCD one way or the other.
    """
    out: dict[str, CmcdValue] = {}
    if query:
        values = parse_qs(query, keep_blank_values=True).get("CMCD")
        if values:
            if len(values) > 1:
                raise CmcdError("more than one CMCD query parameter")
            out.update(parse_cmcd(values[0]))
    lowered = {k.lower(): v for k, v in headers.items()}
    for name in HEADERS:
        text = lowered.get(name.lower())
        if text:
            for key, value in parse_cmcd(text).items():
                if key in out:
                    raise CmcdError(f"duplicate key {key!r} across CMCD query and headers")
                out[key] = value
    return out


def _int(v: CmcdValue | None) -> int:
    return int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else 0


def _str(v: CmcdValue | None) -> str:
    return v if isinstance(v, str) else ""


def origin_request(
    *,
    ts: float,
    path: str,
    status: int,
    bytes_sent: int,
    ttfb_ms: float,
    query: str = "",
    headers: Mapping[str, str] | None = None,
    origin_id: str = "",
) -> OriginRequest:
    """Build an origin access event; malformed CMCD is dropped, never fails the request log."""
    try:
        cmcd = cmcd_from_request(query, headers or {})
    except CmcdError:
        cmcd = {}
    return OriginRequest(
        ts=ts,
        path=path,
        status=status,
        bytes=bytes_sent,
        ttfb_ms=ttfb_ms,
        session_id=_str(cmcd.get("sid"))[:64],
        object_type=_str(cmcd.get("ot"))[:4],
        buffer_length_ms=_int(cmcd.get("bl")),
        throughput_kbps=_int(cmcd.get("mtp")),
        bitrate_kbps=_int(cmcd.get("br")),
        content_id=_str(cmcd.get("cid"))[:128],
        origin_id=origin_id,
    )
