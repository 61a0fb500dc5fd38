"""Serving the forensic A/B watermark live: which variant a session gets for each media path.

The origin asks `SessionVariants.variant` for every media request of the marked rendition.
The answer depends only on the path's segment number and on the *signed* token's claims:

- the session id is the token's ``sid`` (HMAC-signed, so a viewer can neither pick another
  session's sequence nor make a capture accuse someone else); a token without one is refused
  for the marked rendition (`NoSessionId`, a 403 at the edge);
- the timestamp carried in the payload is the token's expiry in ``timestamp_unit_s`` units
  (hours by default): coarse, the same for every request of one token, and known to whoever
  minted the token (issue time = expiry - TTL), so the forensic service can list candidates
  with it, and a blind decode over a whole cycle recovers it;
- the segment index is the Media Sequence Number (HLS) = ``$Number$`` (DASH), so every part of
  a segment, and its preload-hinted parts, come from one variant.

Also here, at the persistence edge of ``protect/`` (like `keystore`): the secret (from the
environment or a 0600 file) and the pattern frame file the encoder reads.
"""

from __future__ import annotations

import functools
import os
import re
import stat
from pathlib import Path

from flowcast.protect.devsecret import dev_secret_file
from flowcast.protect.tokens import TokenClaims
from flowcast.protect.watermark import Variant, WatermarkCodec, WatermarkError, WatermarkPattern

__all__ = [
    "NoSessionId",
    "SessionVariants",
    "WatermarkSecretError",
    "load_or_create_secret",
    "token_timestamp",
    "write_pattern_file",
]


SECRET_FILE = "watermark.secret"
MIN_SECRET_BYTES = 16
# "<msn>.m4s" (segment) and "<msn>.<part>.m4s" (part, hinted or not): the packager's names.
_MEDIA_NAME = re.compile(r"(0|[1-9][0-9]{0,17})(?:\.(?:0|[1-9][0-9]{0,5}))?\.m4s")


class WatermarkSecretError(Exception):
    """The watermark secret is unusable; the message names the variable or the file."""


class NoSessionId(Exception):
    """A marked-rendition request whose (valid) token carries no session id: 403."""

    status = 403


def token_timestamp(claims: TokenClaims, unit_s: int = 3600) -> int:
    """The payload's timestamp for a token: its expiry in ``unit_s`` units (16 bits are carried)."""
    return claims.expires // unit_s


class SessionVariants:
    """Variant A or B of the marked rendition, per media path and token (sans-I/O)."""

    def __init__(self, secret: bytes, *, stream: str, rendition: str, timestamp_unit_s: int = 3600) -> None:
        self.codec = WatermarkCodec(secret)
        self.rendition = rendition
        self.prefix = f"{stream}/{rendition}/"
        self.timestamp_unit_s = timestamp_unit_s
        # One sequence per (session, timestamp), built once (~1 ms: HMACs and 124
        # convolutional steps); a viewer asks for ~5 objects a second.
        # As bytes (992 per entry): 16 MB for the 16384 most recent sessions.
        self._word = functools.lru_cache(maxsize=16384)(self._sequence)

    def _sequence(self, session_id: str, timestamp: int) -> bytes:
        return bytes(self.codec.sequence(session_id, timestamp))

    def segment_index(self, key: str) -> int | None:
        """The MSN of a segment or part path (``<stream>/<rendition>/12.m4s``, ``12.3.m4s``)
        of the marked rendition; None for anything else (init, playlists, other renditions)."""
        if not key.startswith(self.prefix):
            return None
        m = _MEDIA_NAME.fullmatch(key[len(self.prefix):])
        return int(m.group(1)) if m else None

    def variant(self, key: str, claims: TokenClaims | None) -> Variant | None:
        """"A"/"B" for a marked media path, None when the path is not marked (serve as is).

        Raises NoSessionId when it is marked but the token names no session.
        """
        index = self.segment_index(key)
        if index is None:
            return None
        if claims is None or not claims.session_id:
            raise NoSessionId("the forensic watermark needs a token with a session id")
        word = self._word(claims.session_id, token_timestamp(claims, self.timestamp_unit_s))
        return "B" if word[index % self.codec.period] else "A"


# ---- persistence edge: the secret and the pattern file ------------------------------------


def load_or_create_secret(data_dir: Path, env_var: str) -> bytes:
    """The watermark secret: ``$env_var`` (hex), else ``data_dir/watermark.secret`` (0600,
    made on first use). A file readable by group or others is refused: whoever holds the
    secret can forge or strip the mark."""
    raw = os.environ.get(env_var)
    if raw:
        try:
            secret = bytes.fromhex(raw.strip())
        except ValueError:
            raise WatermarkSecretError(f"{env_var} must be hex") from None
        if len(secret) < MIN_SECRET_BYTES:
            raise WatermarkSecretError(f"{env_var} must hold at least {MIN_SECRET_BYTES} bytes (hex)")
        return secret
    path = Path(data_dir) / SECRET_FILE
    dev_secret_file(path, env_var)
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise WatermarkSecretError(f"{path} must be mode 0600, not {mode:04o}")
    try:
        secret = bytes.fromhex(path.read_text().strip())
    except ValueError:
        raise WatermarkSecretError(f"{path} must hold the secret in hex") from None
    if len(secret) < MIN_SECRET_BYTES:
        raise WatermarkSecretError(f"{path} must hold at least {MIN_SECRET_BYTES} bytes (hex)")
    return secret


def write_pattern_file(secret: bytes, width: int, height: int, directory: Path, name: str) -> Path:
    """Write the keyed pattern frame (y4m, 0600) at a rendition's size for the encoder's
    ``blend``; the file would let a pirate subtract the mark, so it stays private."""
    try:
        frame = WatermarkPattern(secret).y4m(width, height)
    except WatermarkError as exc:
        raise WatermarkSecretError(f"protection.watermark.forensic.rendition {name}: {exc}") from None
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    path = directory / f"pattern-{name}-{width}x{height}.y4m"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(frame)
    os.chmod(path, 0o600)
    return path
