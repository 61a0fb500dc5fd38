"""Content-key store: CSPRNG keys, envelope-encrypted at rest under a master key.

Each content key is wrapped with AES-256-GCM (or -128/-192, from the KEK length) under a
key-encryption key (KEK). The associated data binds each wrapped key to its KID, stream
and key period, so an entry copied onto another KID fails to unwrap instead of silently
handing out the wrong key. The KEK sits behind the small `MasterKey` protocol so a KMS
(AWS KMS Encrypt/Decrypt, Vault transit) can take the place of `LocalMasterKey`.

The store is one JSON file, replaced atomically (temp file + fsync + rename), so a crash
leaves the old or the new file and never half of one. This module does that one file's I/O
itself: it is the persistence edge of `protect/`, everything else here stays sans-I/O.

Key bytes never appear in `repr`/`str` of anything this module returns.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import re
import secrets
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .cenc import ContentKey

__all__ = [
    "ENV_MASTER_KEY",
    "ENV_MASTER_KEY_FILE",
    "KeyEntry",
    "KeyNotFound",
    "KeyStore",
    "KeyStoreError",
    "LocalMasterKey",
    "MasterKey",
    "MasterKeyMissing",
    "StoredContentKey",
    "WrongMasterKey",
    "load_master_key",
]

ENV_MASTER_KEY = "FLOWCAST_MASTER_KEY"  # hex or base64 of 16/24/32 bytes
ENV_MASTER_KEY_FILE = "FLOWCAST_MASTER_KEY_FILE"  # path to a file holding the same
_FORMAT_VERSION = 1
_NONCE = 12  # AES-GCM nonce size (NIST SP 800-38D 8.2: 96-bit random nonces)
_AAD_PREFIX = b"flowcast/keystore/v1\0"


class KeyStoreError(Exception):
    """The key store cannot be read, written or trusted."""


class MasterKeyMissing(KeyStoreError):
    """No master key configured (env var or file)."""


class WrongMasterKey(KeyStoreError):
    """The store was written under another master key (or a key entry was tampered with)."""


class KeyNotFound(KeyStoreError, KeyError):
    """No content key with that KID."""

    def __str__(self) -> str:  # KeyError quotes its argument; keep the message readable
        return str(self.args[0]) if self.args else "key not found"


@runtime_checkable
class MasterKey(Protocol):
    """What the store needs from a KEK: wrap/unwrap with associated data, and a stable id.

    `key_id` identifies the KEK (never reveals it); the store records it so opening a store
    with another master key fails at once with `WrongMasterKey`.
    """

    @property
    def key_id(self) -> str: ...

    def wrap(self, plaintext: bytes, aad: bytes) -> bytes: ...

    def unwrap(self, blob: bytes, aad: bytes) -> bytes: ...


def _decode_key_text(text: str, source: str) -> bytes:
    """Hex (32/48/64 digits) or base64/base64url of a 16/24/32-byte KEK."""
    t = text.strip()
    raw: bytes | None = None
    if re.fullmatch(r"[0-9a-fA-F]{32}|[0-9a-fA-F]{48}|[0-9a-fA-F]{64}", t):
        raw = bytes.fromhex(t)
    else:
        try:
            norm = t.replace("-", "+").replace("_", "/")
            raw = base64.b64decode(norm + "=" * (-len(norm) % 4), validate=True)
        except (binascii.Error, ValueError):
            raw = None
    if raw is None or len(raw) not in (16, 24, 32):
        # Never echo the value: it may be a real key with a typo.
        raise KeyStoreError(f"master key from {source} must be hex or base64 of 16, 24 or 32 bytes")
    return raw


class LocalMasterKey:
    """A KEK held in process memory (from env, a file, or generated for tests)."""

    __slots__ = ("_aead", "_key_id")

    def __init__(self, kek: bytes) -> None:
        if len(kek) not in (16, 24, 32):
            raise KeyStoreError("master key must be 16, 24 or 32 bytes")
        self._aead = AESGCM(bytes(kek))
        # A fingerprint, not the key: HMAC of a fixed label under the KEK.
        self._key_id = hmac.new(bytes(kek), b"flowcast/kek-id", hashlib.sha256).hexdigest()[:16]

    @classmethod
    def generate(cls) -> LocalMasterKey:
        return cls(secrets.token_bytes(32))

    @classmethod
    def from_text(cls, text: str, source: str = "text") -> LocalMasterKey:
        return cls(_decode_key_text(text, source))

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> LocalMasterKey:
        p = Path(path)
        try:
            data = p.read_bytes()
        except FileNotFoundError:
            raise MasterKeyMissing(f"master key file {p} does not exist") from None
        except OSError as exc:
            raise KeyStoreError(f"cannot read master key file {p}: {exc.strerror}") from None
        if len(data) in (16, 24, 32) and not re.fullmatch(rb"[0-9A-Za-z+/=_\-\s]+", data):
            return cls(data)  # raw binary key file
        try:
            text = data.decode("ascii")
        except UnicodeDecodeError:
            raise KeyStoreError(f"master key file {p} is neither raw 16/24/32 bytes nor hex/base64") from None
        return cls.from_text(text, f"file {p}")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> LocalMasterKey:
        env = os.environ if environ is None else environ
        if env.get(ENV_MASTER_KEY):
            return cls.from_text(env[ENV_MASTER_KEY], f"${ENV_MASTER_KEY}")
        if env.get(ENV_MASTER_KEY_FILE):
            return cls.from_file(env[ENV_MASTER_KEY_FILE])
        raise MasterKeyMissing(f"set {ENV_MASTER_KEY} (hex/base64 of 32 bytes) or {ENV_MASTER_KEY_FILE}")

    @property
    def key_id(self) -> str:
        return self._key_id

    def wrap(self, plaintext: bytes, aad: bytes) -> bytes:
        nonce = secrets.token_bytes(_NONCE)
        return nonce + self._aead.encrypt(nonce, plaintext, aad)

    def unwrap(self, blob: bytes, aad: bytes) -> bytes:
        if len(blob) < _NONCE + 16:
            raise WrongMasterKey("wrapped key too short")
        try:
            return self._aead.decrypt(blob[:_NONCE], blob[_NONCE:], aad)
        except InvalidTag:
            raise WrongMasterKey("content key does not unwrap under this master key") from None

    def __repr__(self) -> str:
        return f"LocalMasterKey(key_id={self._key_id!r})"

    __str__ = __repr__


def load_master_key(
    environ: Mapping[str, str] | None = None, path: str | os.PathLike[str] | None = None
) -> LocalMasterKey:
    """The master key from `path` if given, else from the environment."""
    if path is not None:
        return LocalMasterKey.from_file(path)
    return LocalMasterKey.from_env(environ)


class StoredContentKey(ContentKey):
    """A ContentKey whose repr/str never show the key or IV bytes.

    Compares equal to a plain ContentKey with the same kid/key/iv.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return f"ContentKey(kid={self.kid.hex()}, key=<redacted>, iv=<redacted>)"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ContentKey):
            return (self.kid, self.key, self.iv) == (other.kid, other.key, other.iv)
        return NotImplemented

    def __hash__(self) -> int:
        return hash((self.kid, self.key, self.iv))


@dataclass(frozen=True, slots=True)
class KeyEntry:
    """What the store knows about a key, without the key."""

    kid: bytes
    stream: str
    period: int
    created: float


def _aad(kid: bytes, stream: str, period: int) -> bytes:
    return _AAD_PREFIX + kid + b"\0" + stream.encode("utf-8") + b"\0" + str(period).encode()


class KeyStore:
    """Content keys per (stream, key period), persisted encrypted in one JSON file.

    `key_for(stream, period)` creates the key on first use; `get(kid)` finds it again,
    after a restart too. Thread-safe within one process; one process owns the file.
    """

    def __init__(self, path: str | os.PathLike[str], master: MasterKey, *, iv_size: int = 16) -> None:
        if iv_size not in (8, 16):
            raise KeyStoreError("iv_size must be 8 (cenc) or 16 (cbcs)")
        self._path = Path(path)
        self._master = master
        self._iv_size = iv_size
        self._lock = threading.Lock()
        self._records: dict[str, dict[str, object]] = {}  # kid hex -> record
        self._by_period: dict[tuple[str, int], str] = {}
        self._cache: dict[str, StoredContentKey] = {}
        self._load()

    def __repr__(self) -> str:
        return f"KeyStore(path={str(self._path)!r}, keys={len(self._records)}, master={self._master.key_id!r})"

    @property
    def path(self) -> Path:
        return self._path

    def _load(self) -> None:
        try:
            text = self._path.read_text("utf-8")
        except FileNotFoundError:
            return
        except OSError as exc:
            raise KeyStoreError(f"cannot read key store {self._path}: {exc.strerror}") from None
        try:
            doc = json.loads(text)
            if not isinstance(doc, dict) or doc.get("version") != _FORMAT_VERSION:
                raise KeyStoreError(f"key store {self._path}: unsupported format")
            if doc.get("kek_id") != self._master.key_id:
                raise WrongMasterKey(
                    f"key store {self._path} was written under master key {doc.get('kek_id')!r}, "
                    f"not {self._master.key_id!r}"
                )
            keys = doc["keys"]
            if not isinstance(keys, dict):
                raise KeyStoreError(f"key store {self._path}: 'keys' is not an object")
            for kid_hex, rec in keys.items():
                if not isinstance(rec, dict) or len(bytes.fromhex(kid_hex)) != 16:
                    raise KeyStoreError(f"key store {self._path}: bad entry")
                stream, period = str(rec["stream"]), int(rec["period"])
                base64.b64decode(rec["wrapped"], validate=True)
                bytes.fromhex(str(rec["iv"]))
                self._records[kid_hex] = rec
                held = self._by_period.get((stream, period))
                if held is None or (rec.get("imported") and not self._records[held].get("imported")):
                    self._by_period[(stream, period)] = kid_hex
        except KeyStoreError:
            raise
        except (ValueError, KeyError, TypeError, binascii.Error) as exc:
            raise KeyStoreError(f"key store {self._path} is corrupt: {type(exc).__name__}") from None

    def _save(self) -> None:
        doc = {"version": _FORMAT_VERSION, "kek_id": self._master.key_id, "keys": self._records}
        data = json.dumps(doc, indent=1, sort_keys=True).encode("utf-8")
        directory = self._path.parent
        try:
            directory.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{self._path.name}.", suffix=".tmp", dir=directory)
            try:
                os.fchmod(fd, 0o600)
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, self._path)
            except BaseException:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
                raise
            try:  # make the rename durable
                dfd = os.open(directory, os.O_RDONLY)
                try:
                    os.fsync(dfd)
                finally:
                    os.close(dfd)
            except OSError:
                pass
        except OSError as exc:
            raise KeyStoreError(f"cannot write key store {self._path}: {exc.strerror}") from None

    def _unwrap(self, kid_hex: str) -> StoredContentKey:
        cached = self._cache.get(kid_hex)
        if cached is not None:
            return cached
        rec = self._records[kid_hex]
        kid = bytes.fromhex(kid_hex)
        key = self._master.unwrap(
            base64.b64decode(str(rec["wrapped"])), _aad(kid, str(rec["stream"]), int(str(rec["period"])))
        )
        ck = StoredContentKey(kid, key, bytes.fromhex(str(rec["iv"])))
        self._cache[kid_hex] = ck
        return ck

    def key_for(self, stream: str, period_index: int = 0) -> StoredContentKey:
        """The key of `stream` for key period `period_index`, created on first use."""
        if not stream or period_index < 0:
            raise KeyStoreError("stream must be non-empty and period_index >= 0")
        with self._lock:
            kid_hex = self._by_period.get((stream, period_index))
            if kid_hex is not None:
                return self._unwrap(kid_hex)
            kid = secrets.token_bytes(16)
            while kid.hex() in self._records:  # 2^-128, but cheap to rule out
                kid = secrets.token_bytes(16)
            key = secrets.token_bytes(16)
            iv = secrets.token_bytes(self._iv_size)
            rec: dict[str, object] = {
                "stream": stream,
                "period": period_index,
                "iv": iv.hex(),
                "wrapped": base64.b64encode(self._master.wrap(key, _aad(kid, stream, period_index))).decode(),
                "created": round(time.time(), 3),
            }
            self._records[kid.hex()] = rec
            self._by_period[(stream, period_index)] = kid.hex()
            try:
                self._save()
            except KeyStoreError:
                del self._records[kid.hex()]
                del self._by_period[(stream, period_index)]
                raise
            ck = StoredContentKey(kid, key, iv)
            self._cache[kid.hex()] = ck
            return ck

    def import_key(
        self, stream: str, period_index: int, kid: bytes, key: bytes, iv: bytes | None = None
    ) -> StoredContentKey:
        """Store a key made elsewhere (a DRM vendor's CPIX) for (stream, period), wrapped like
        generated ones. Idempotent for the same KID and key; the first key imported for a
        (stream, period) is the one `key_for` returns. A KID already stored with other key
        bytes is refused: one KID, one key."""
        if not stream or period_index < 0:
            raise KeyStoreError("stream must be non-empty and period_index >= 0")
        kid, value = bytes(kid), bytes(key)
        if len(kid) != 16 or len(value) != 16:
            raise KeyStoreError("KID and key must be 16 bytes")
        # The IV (cbcs constant IV) travels in the clear in tenc; one of the wrong size (or
        # none) is replaced by a fresh random one.
        iv = bytes(iv) if iv is not None and len(iv) == self._iv_size else secrets.token_bytes(self._iv_size)
        with self._lock:
            kid_hex = kid.hex()
            if kid_hex in self._records:
                existing = self._unwrap(kid_hex)
                if existing.key != value:
                    raise KeyStoreError(f"KID {kid_hex} is already stored with another key")
                self._by_period.setdefault((stream, period_index), kid_hex)
                return existing
            rec: dict[str, object] = {
                "stream": stream,
                "period": period_index,
                "iv": iv.hex(),
                "wrapped": base64.b64encode(self._master.wrap(value, _aad(kid, stream, period_index))).decode(),
                "created": round(time.time(), 3),
                "imported": True,
            }
            previous = self._by_period.get((stream, period_index))
            self._records[kid_hex] = rec
            # An import replaces a generated key for the period (its record stays, so media
            # already encrypted with it can still be licensed); a second import does not.
            if previous is None or not self._records[previous].get("imported"):
                self._by_period[(stream, period_index)] = kid_hex
            try:
                self._save()
            except KeyStoreError:
                del self._records[kid_hex]
                if previous is None:
                    self._by_period.pop((stream, period_index), None)
                else:
                    self._by_period[(stream, period_index)] = previous
                raise
            ck = StoredContentKey(kid, value, iv)
            self._cache[kid_hex] = ck
            return ck

    def get(self, kid: bytes) -> StoredContentKey:
        """The key with this KID; `KeyNotFound` if the store never made it."""
        with self._lock:
            kid_hex = bytes(kid).hex()
            if kid_hex not in self._records:
                raise KeyNotFound(f"no content key with KID {kid_hex}")
            return self._unwrap(kid_hex)

    def find(self, kid: bytes) -> StoredContentKey | None:
        """Like `get`, None when unknown (for license servers)."""
        try:
            return self.get(kid)
        except KeyNotFound:
            return None

    def __contains__(self, kid: object) -> bool:
        return isinstance(kid, (bytes, bytearray)) and bytes(kid).hex() in self._records

    def __len__(self) -> int:
        return len(self._records)

    def entries(self, stream: str | None = None) -> list[KeyEntry]:
        """Metadata of every key (of `stream`), ordered by stream then period."""
        with self._lock:
            records = list(self._records.items())
        out = [
            KeyEntry(bytes.fromhex(k), str(r["stream"]), int(str(r["period"])), float(str(r.get("created", 0.0))))
            for k, r in records
            if stream is None or r["stream"] == stream
        ]
        return sorted(out, key=lambda e: (e.stream, e.period))
