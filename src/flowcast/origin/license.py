"""The ClearKey license endpoint (W3C EME JSON): only sessions allowed to watch get keys.

The request carries the same token as the media (cookie or query); a KID is released
only when the token grants the stream that KID belongs to.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from flowcast.protect.clearkey import LicenseError, RateLimiter, build_license_response, parse_license_request
from flowcast.protect.keystore import KeyStore
from flowcast.protect.tokens import TokenError, TokenVerifier, token_from_request

log = logging.getLogger("flowcast.license")

MAX_BODY = 4096


@dataclass(frozen=True, slots=True)
class LicenseAnswer:
    status: int
    body: bytes
    retry_after: float | None = None


class ClearKeyLicenseServer:
    def __init__(
        self,
        keystore: KeyStore,
        verifier: TokenVerifier | None,
        *,
        limiter: RateLimiter | None = None,
    ) -> None:
        self.keystore = keystore
        self.verifier = verifier
        # A player asks once per key (and per rotation); 5/s with a burst of 20 is generous.
        self.limiter = limiter or RateLimiter(rate=5.0, burst=20.0)

    def handle(self, body: bytes, *, query: str, cookie: str | None, client_ip: str | None, request_id: str | None) -> LicenseAnswer:
        now = time.time()
        client = client_ip or "?"
        if not self.limiter.allow(client, now):
            log.warning("license rate limited client=%s request_id=%s", client, request_id)
            return LicenseAnswer(429, b'{"error":"too many requests"}', self.limiter.retry_after(client, now))
        try:
            request = parse_license_request(body, max_body=MAX_BODY)
            token = None
            if self.verifier is not None:
                token = token_from_request(query, cookie)
            streams = {e.kid: e.stream for e in self.keystore.entries()}

            def allowed(kid: bytes) -> bool:
                if self.verifier is None:
                    return True
                if token is None or kid not in streams:
                    return False
                try:
                    self.verifier.verify(token, path=f"/live/{streams[kid]}/", client_ip=client_ip, now=now)
                except TokenError as exc:
                    log.warning("license refused: %s client=%s request_id=%s", exc.reason, client, request_id)
                    return False
                return True

            return LicenseAnswer(200, build_license_response(request, self.keystore.find, allowed))
        except LicenseError as exc:
            log.warning("license error %d: %s client=%s request_id=%s", exc.status, exc.reason, client, request_id)
            return LicenseAnswer(exc.status, b'{"error":"license request refused"}')
        except TokenError as exc:
            log.warning("license refused: %s client=%s request_id=%s", exc.reason, client, request_id)
            return LicenseAnswer(403, b'{"error":"license request refused"}')
