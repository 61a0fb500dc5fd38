"""The token gate in front of every media resource: playlists, parts, hinted parts,
segments, init segments, manifests and keys.

Rejections are 403 (bad token) or 410 (expired) with a body that says nothing useful to
an attacker; the log line carries the reason and the correlation id.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from flowcast.protect.devsecret import dev_secret_file
from flowcast.protect.tokens import TokenError, TokenInvalid, TokenSigner, TokenVerifier, token_from_request

log = logging.getLogger("flowcast.access")

SECRET_ENV = "FLOWCAST_TOKEN_SECRET"
SECRET_FILE = "token.secret"
KID = "k1"


def load_or_create_secret(data_dir: Path) -> bytes:
    """The HMAC secret: from $FLOWCAST_TOKEN_SECRET (hex), else a 0600 file in the data dir."""
    env = os.environ.get(SECRET_ENV)
    if env:
        return bytes.fromhex(env)
    return bytes.fromhex(dev_secret_file(Path(data_dir) / SECRET_FILE, SECRET_ENV))


def signer_for(data_dir: Path) -> TokenSigner:
    return TokenSigner({KID: load_or_create_secret(data_dir)}, KID)


@dataclass(frozen=True, slots=True)
class Refusal:
    status: int
    body: bytes


class MediaAccess:
    """Checks the token on one request; sans-I/O apart from the log line."""

    def __init__(self, verifier: TokenVerifier) -> None:
        self.verifier = verifier

    def check(self, path: str, query: str, cookie: str | None, client_ip: str | None, request_id: str | None) -> Refusal | None:
        try:
            token = token_from_request(query, cookie)
            if token is None:
                raise TokenInvalid("no token")
            self.verifier.verify(token, path=path, client_ip=client_ip, now=time.time())
        except TokenError as exc:
            rid = request_id or uuid.uuid4().hex[:16]
            log.warning("token refused (%s): %s path=%s client=%s request_id=%s", exc.status, exc.reason, path, client_ip, rid)
            return Refusal(exc.status, exc.public_message.encode() + b"\n")
        return None
