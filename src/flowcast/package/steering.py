"""Redundant origins: HLS Content Steering pathways and DASH BaseURLs, sans-I/O.

Each origin is a pathway (HLS Content Steering Specification 1.2, Apple; rfc8216bis
4.4.6.2.1 PATHWAY-ID and 4.4.6.6 EXT-X-CONTENT-STEERING): the multivariant playlist lists
every variant once per pathway, with that origin's absolute URIs, and points at a steering
manifest (JSON: VERSION, TTL, RELOAD-URI, PATHWAY-PRIORITY) that players reload every TTL.
DASH lists the same origins as MPD-level BaseURLs with @serviceLocation (ISO/IEC 23009-1
5.6, DASH-IF IOP 4.3 "Multiple Base URLs"); players move to the next one on errors.

The origins' encoders are epoch-locked (transcode/epoch.py): segment N is the same
wall-clock interval with the same decode times on every origin, so a player switching
pathway asks the other origin for the next MSN/part, or the next $Number$, and gets the
media that continues what it had, neither skipping nor repeating.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from urllib.parse import parse_qsl

STEERING_MANIFEST_NAME = "steering.json"
STEERING_VERSION = 1
DEFAULT_TTL_S = 10  # how often players re-ask; small so a changed priority spreads quickly
_PATHWAY_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")  # Content Steering 1.2: [a..z][A..Z][0..9] - . _


class SteeringError(ValueError):
    """A bad pathway list, steering manifest or steering request (HTTP 400 at the edge)."""

    status = 400


@dataclass(frozen=True, slots=True)
class Pathway:
    """One origin as a pathway: `base` is the absolute URL that relative stream URIs
    (``720p/index.m3u8``, ``$RepresentationID$/$Number$.m4s``) resolve against."""

    id: str
    base: str  # ends with "/"


def pathways(origin_urls: tuple[str, ...] | list[str], stream_prefix: str) -> tuple[Pathway, ...]:
    """Pathways ``origin-1``, ``origin-2``... for base URLs like ``http://127.0.0.1:8080``,
    in priority order; `stream_prefix` is the stream's path (``/live/<stream>/``)."""
    if not stream_prefix.startswith("/") or not stream_prefix.endswith("/"):
        raise SteeringError(f"stream prefix {stream_prefix!r} must start and end with '/'")
    out = []
    for i, url in enumerate(origin_urls, 1):
        if not url.startswith(("http://", "https://")):
            raise SteeringError(f"origin {url!r} is not an absolute http(s) URL")
        out.append(Pathway(id=f"origin-{i}", base=url.rstrip("/") + stream_prefix))
    return tuple(out)


def content_steering_attrs(server_uri: str, pathway_id: str) -> str:
    """The attribute list of EXT-X-CONTENT-STEERING: where the steering manifest is, and
    which pathway to start on until it has been loaded."""
    if '"' in server_uri or "\n" in server_uri:
        raise SteeringError("SERVER-URI must not contain quotes or newlines")
    if not _PATHWAY_ID.match(pathway_id):
        raise SteeringError(f"bad PATHWAY-ID {pathway_id!r}")
    return f'SERVER-URI="{server_uri}",PATHWAY-ID="{pathway_id}"'


@dataclass(frozen=True, slots=True)
class SteeringManifest:
    pathway_priority: tuple[str, ...]
    ttl: int = DEFAULT_TTL_S
    reload_uri: str | None = None
    version: int = STEERING_VERSION

    def render(self) -> bytes:
        """JSON, rendered once when the pathway list changes (not per request)."""
        if not self.pathway_priority:
            raise SteeringError("PATHWAY-PRIORITY must list at least one pathway")
        for p in self.pathway_priority:
            if not _PATHWAY_ID.match(p):
                raise SteeringError(f"bad PATHWAY-ID {p!r}")
        doc: dict[str, object] = {"VERSION": self.version, "TTL": self.ttl}
        if self.reload_uri:
            doc["RELOAD-URI"] = self.reload_uri
        doc["PATHWAY-PRIORITY"] = list(self.pathway_priority)
        return json.dumps(doc, separators=(",", ":")).encode()


def parse_steering_manifest(data: bytes) -> SteeringManifest:
    """A steering manifest as a client reads it (our load-test viewers)."""
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise SteeringError(f"steering manifest is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise SteeringError("steering manifest must be a JSON object")
    if doc.get("VERSION") != STEERING_VERSION:
        raise SteeringError(f"steering manifest VERSION {doc.get('VERSION')!r} is not {STEERING_VERSION}")
    ttl = doc.get("TTL")
    if not isinstance(ttl, int) or ttl <= 0:
        raise SteeringError("steering manifest TTL must be a positive integer")
    prio = doc.get("PATHWAY-PRIORITY")
    if not isinstance(prio, list) or not prio or not all(isinstance(p, str) and _PATHWAY_ID.match(p) for p in prio):
        raise SteeringError("steering manifest PATHWAY-PRIORITY must be a non-empty list of pathway ids")
    reload_uri = doc.get("RELOAD-URI")
    if reload_uri is not None and not isinstance(reload_uri, str):
        raise SteeringError("steering manifest RELOAD-URI must be a string")
    return SteeringManifest(tuple(prio), ttl, reload_uri)


@dataclass(frozen=True, slots=True)
class SteeringRequest:
    """What a player says when it reloads the steering manifest (spec 7.2)."""

    pathway: str | None  # _HLS_pathway: the pathway it is on
    throughput: int | None  # _HLS_throughput: its estimate, bits/s


def parse_steering_query(query: str) -> SteeringRequest:
    pathway = throughput = None
    for k, v in parse_qsl(query, keep_blank_values=True):
        if k == "_HLS_pathway":
            if not _PATHWAY_ID.match(v):
                raise SteeringError("_HLS_pathway is not a pathway id")
            pathway = v
        elif k == "_HLS_throughput":
            if not v.isdigit() or len(v) > 15:
                raise SteeringError("_HLS_throughput must be a non-negative integer")
            throughput = int(v)
    return SteeringRequest(pathway, throughput)


def priority_for(pathway_ids: tuple[str, ...], unavailable: frozenset[str] = frozenset()) -> tuple[str, ...]:
    """Configured order with the pathways known to be down moved last (never dropped: a
    player with none left would stop)."""
    return tuple(p for p in pathway_ids if p not in unavailable) + tuple(p for p in pathway_ids if p in unavailable)
