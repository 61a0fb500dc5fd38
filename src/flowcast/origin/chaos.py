"""Chaos controls on the origin: admin endpoints that make the live stack misbehave on purpose.

``POST /admin/chaos/hold-publication?seconds=S``
    The media store withholds every new part, segment, playlist and manifest for ``S``
    seconds (0 < S <= 60; a hold in progress is extended to end S seconds from now), then
    publishes everything it held at once, in order (MediaStore.hold_publication). Requests
    keep their normal rules meanwhile: blocking playlist reloads wait (up to 3 target
    durations, then 503), hinted parts wait for the release. To a player this is the
    packager stopping for S seconds; it stalls once its buffer is spent, i.e. for about
    S - (buffer ahead of the playhead) seconds, plus the time to fetch the first part
    after the release. Answers 200 ``{"held_s": S, "until": <epoch s>}``.

``POST /admin/chaos/release-publication``
    Ends a hold now. Answers 200 ``{"released": <publishes applied>}``.

``POST /admin/chaos/license-outage?seconds=S``
    The ClearKey license endpoint answers 503 (Retry-After) for ``S`` seconds (same bounds;
    extends an outage in progress): a license server down. Players already holding the key
    keep playing until they need a new one (the next key period). Answers 200
    ``{"license_outage_s": S, "until": <epoch s>}``.

Authorization: ``Authorization: Bearer <token>`` where the token is the telemetry admin
token (the environment variable named by ``telemetry.admin_token_env``, by default
FLOWCAST_TELEMETRY_ADMIN_TOKEN). Without a configured token every chaos request is refused
(403), even from loopback: these endpoints break playback by design. Wrong or missing
token: 403. Bad ``seconds``: 400 naming the field. Other methods: 405.

Used by the QoE stall test (tests/e2e/test_qoe_browser.py) and by load/chaos drills.
"""

from __future__ import annotations

import hmac
import json
import logging
import time
from typing import Any, Final
from urllib.parse import parse_qs

from .store import MediaStore

log = logging.getLogger(__name__)

PREFIX: Final = "/admin/chaos/"
MAX_HOLD_S: Final = 60.0
_HEADERS: Final = [("content-type", "application/json"), ("cache-control", "no-store")]


class ChaosError(Exception):
    """A refused chaos request, with the HTTP status and the field at fault."""

    def __init__(self, status: int, field: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.field = field


def parse_seconds(query: str) -> float:
    """``seconds=S`` of a query string: a number with 0 < S <= 60, else ChaosError(400)."""
    values = parse_qs(query, keep_blank_values=True).get("seconds")
    if not values:
        raise ChaosError(400, "seconds", "required (seconds=S, 0 < S <= 60)")
    try:
        s = float(values[-1])
    except ValueError:
        raise ChaosError(400, "seconds", "must be a number") from None
    if not 0 < s <= MAX_HOLD_S:  # also refuses nan and inf
        raise ChaosError(400, "seconds", f"must be > 0 and <= {MAX_HOLD_S:g}")
    return s


class ChaosControl:
    """The ``/admin/chaos/`` routes of one origin (see the module docstring)."""

    def __init__(self, store: MediaStore, admin_token: str | None, *others: MediaStore) -> None:
        self.store = store
        # Every store the packager publishes into (e.g. a forensic watermark's variant B)
        # is held and released together, so no viewer sees one advance without the other.
        self.stores = (store, *others)
        self._token = f"Bearer {admin_token}".encode() if admin_token else None
        self._license_down_until = 0.0  # epoch s; the license route answers 503 before it

    def license_down(self) -> float | None:
        """Seconds left of a license-outage drill, or None when the license server is up."""
        left = self._license_down_until - time.time()
        return left if left > 0 else None

    def authorize(self, authorization: str | None) -> None:
        if self._token is None:
            raise ChaosError(403, "authorization", "chaos endpoints need the telemetry admin token to be configured")
        if not authorization or not hmac.compare_digest(authorization.encode(), self._token):
            raise ChaosError(403, "authorization", "admin bearer token required")

    def apply(self, method: str, action: str, query: str, authorization: str | None) -> tuple[int, dict[str, Any]]:
        """Run one chaos request; (status, JSON body). Sans-HTTP, so drills can call it."""
        try:
            if action not in ("hold-publication", "release-publication", "license-outage"):
                raise ChaosError(404, "(path)", "no such chaos action")
            if method != "POST":
                raise ChaosError(405, "(method)", "POST only")
            self.authorize(authorization)
            if action == "license-outage":
                seconds = parse_seconds(query)
                self._license_down_until = max(self._license_down_until, time.time() + seconds)
                log.warning("chaos: license server down for %.3f s", seconds)
                return 200, {"license_outage_s": seconds, "until": self._license_down_until}
            if action == "hold-publication":
                seconds = parse_seconds(query)
                for store in self.stores:
                    store.hold_publication(seconds)
                log.warning("chaos: publication held for %.3f s", seconds)
                return 200, {"held_s": seconds, "until": time.time() + seconds}
            n = sum(store.release_publication() for store in self.stores)
            log.warning("chaos: publication released (%d publishes applied)", n)
            return 200, {"released": n}
        except ChaosError as exc:
            return exc.status, {"error": str(exc), "field": exc.field}

    async def handle(self, scope: Any, proto: Any, method: str, path: str) -> None:
        status, doc = self.apply(method, path[len(PREFIX):], scope.query_string, scope.headers.get("authorization"))
        headers = list(_HEADERS)
        if status == 405:
            headers.append(("allow", "POST"))
        proto.response_bytes(status, headers, json.dumps(doc).encode())
