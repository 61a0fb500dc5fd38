"""Key store: CSPRNG keys, envelope encryption at rest, restart, redaction, clear errors."""

from __future__ import annotations

import base64
import json
import logging
import os
from pathlib import Path

import pytest

from flowcast.protect.cenc import ContentKey
from flowcast.protect.keystore import (
    ENV_MASTER_KEY,
    ENV_MASTER_KEY_FILE,
    KeyNotFound,
    KeyStore,
    KeyStoreError,
    LocalMasterKey,
    MasterKey,
    MasterKeyMissing,
    WrongMasterKey,
    load_master_key,
)

KEK_HEX = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"


@pytest.fixture
def master() -> LocalMasterKey:
    return LocalMasterKey(bytes.fromhex(KEK_HEX))


def test_key_for_creates_once_and_get_finds_it(tmp_path: Path, master: LocalMasterKey) -> None:
    store = KeyStore(tmp_path / "keys.json", master)
    k0 = store.key_for("live", 0)
    assert isinstance(k0, ContentKey)
    assert len(k0.kid) == 16 and len(k0.key) == 16 and len(k0.iv) == 16
    assert store.key_for("live", 0) == k0
    k1 = store.key_for("live", 1)
    other = store.key_for("other", 0)
    assert len({k0.kid, k1.kid, other.kid}) == 3
    assert len({k0.key, k1.key, other.key}) == 3
    assert store.get(k1.kid) == k1
    assert k1.kid in store and len(store) == 3
    # equal to a plain ContentKey with the same bytes, both ways
    plain = ContentKey(k1.kid, k1.key, k1.iv)
    assert plain == k1 and k1 == plain and hash(plain) == hash(k1)


def test_cenc_iv_size(tmp_path: Path, master: LocalMasterKey) -> None:
    assert len(KeyStore(tmp_path / "k.json", master, iv_size=8).key_for("s").iv) == 8


def test_survives_restart(tmp_path: Path, master: LocalMasterKey) -> None:
    path = tmp_path / "data" / "keys.json"
    first = KeyStore(path, master)
    keys = [first.key_for("live", p) for p in range(3)]
    again = KeyStore(path, LocalMasterKey(bytes.fromhex(KEK_HEX)))
    assert [again.key_for("live", p) for p in range(3)] == keys
    assert again.get(keys[2].kid) == keys[2]
    assert [e.period for e in again.entries("live")] == [0, 1, 2]


def test_at_rest_the_file_holds_no_key_bytes(tmp_path: Path, master: LocalMasterKey) -> None:
    path = tmp_path / "keys.json"
    store = KeyStore(path, master)
    k = store.key_for("live", 0)
    raw = path.read_bytes()
    for form in (k.key.hex(), k.key.hex().upper(), base64.b64encode(k.key).decode(),
                 base64.urlsafe_b64encode(k.key).decode().rstrip("=")):
        assert form.encode() not in raw
    assert k.key not in raw
    doc = json.loads(raw)
    assert doc["kek_id"] == master.key_id and KEK_HEX not in raw.decode()
    assert os.stat(path).st_mode & 0o077 == 0  # owner-only
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # temp file renamed away


def test_repr_and_logs_never_show_key_bytes(
    tmp_path: Path, master: LocalMasterKey, caplog: pytest.LogCaptureFixture
) -> None:
    store = KeyStore(tmp_path / "keys.json", master)
    k = store.key_for("live", 0)
    texts = [repr(k), str(k), f"{k}", f"{k!r}", repr(store), repr(master), str(master), repr(store.entries())]
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("flowcast.test").info("key %s %r store %s", k, k, store)
    texts.append(caplog.text)
    for text in texts:
        assert k.key.hex() not in text.lower()
        assert base64.b64encode(k.key).decode() not in text
        assert KEK_HEX not in text.lower()
        assert k.iv.hex() not in text.lower()
    assert k.kid.hex() in repr(k)  # the KID is not secret and helps debugging


def test_wrong_master_key_is_a_specific_error(tmp_path: Path, master: LocalMasterKey) -> None:
    path = tmp_path / "keys.json"
    KeyStore(path, master).key_for("live", 0)
    with pytest.raises(WrongMasterKey):
        KeyStore(path, LocalMasterKey.generate())


class _Kms:
    """A stand-in KMS: the MasterKey protocol is all the store needs."""

    def __init__(self, inner: LocalMasterKey, key_id: str) -> None:
        self.inner, self._id, self.calls = inner, key_id, 0

    @property
    def key_id(self) -> str:
        return self._id

    def wrap(self, plaintext: bytes, aad: bytes) -> bytes:
        self.calls += 1
        return self.inner.wrap(plaintext, aad)

    def unwrap(self, blob: bytes, aad: bytes) -> bytes:
        self.calls += 1
        return self.inner.unwrap(blob, aad)


def test_a_kms_can_take_the_master_keys_place(tmp_path: Path) -> None:
    kms = _Kms(LocalMasterKey.generate(), "arn:aws:kms:example")
    assert isinstance(kms, MasterKey)
    store = KeyStore(tmp_path / "keys.json", kms)
    k = store.key_for("live", 0)
    assert kms.calls == 1
    assert KeyStore(tmp_path / "keys.json", kms).get(k.kid) == k
    assert kms.calls == 2


def test_tampered_entry_fails_to_unwrap(tmp_path: Path, master: LocalMasterKey) -> None:
    path = tmp_path / "keys.json"
    store = KeyStore(path, master)
    a, b = store.key_for("live", 0), store.key_for("live", 1)
    doc = json.loads(path.read_text())
    # move b's wrapped key onto a's KID: AAD binds it to b's KID, so it must not unwrap
    doc["keys"][a.kid.hex()]["wrapped"] = doc["keys"][b.kid.hex()]["wrapped"]
    path.write_text(json.dumps(doc))
    with pytest.raises(WrongMasterKey):
        KeyStore(path, master).get(a.kid)


def test_unknown_kid(tmp_path: Path, master: LocalMasterKey) -> None:
    store = KeyStore(tmp_path / "keys.json", master)
    with pytest.raises(KeyNotFound):
        store.get(b"\x00" * 16)
    assert store.find(b"\x00" * 16) is None
    with pytest.raises(KeyError):  # KeyNotFound is a KeyError too
        store.get(b"\x01" * 16)


@pytest.mark.parametrize("content", ["not json", '{"version": 99}', '{"version": 1, "kek_id": "x", "keys": []}', "[]"])
def test_corrupt_store_is_a_clear_error(tmp_path: Path, master: LocalMasterKey, content: str) -> None:
    path = tmp_path / "keys.json"
    path.write_text(content.replace('"x"', f'"{master.key_id}"'))
    with pytest.raises(KeyStoreError):
        KeyStore(path, master)


def test_master_key_from_env_hex_and_base64() -> None:
    kek = bytes.fromhex(KEK_HEX)
    a = load_master_key({ENV_MASTER_KEY: KEK_HEX})
    b = load_master_key({ENV_MASTER_KEY: base64.b64encode(kek).decode()})
    c = load_master_key({ENV_MASTER_KEY: base64.urlsafe_b64encode(kek).decode().rstrip("=")})
    assert a.key_id == b.key_id == c.key_id == LocalMasterKey(kek).key_id


def test_master_key_from_file(tmp_path: Path) -> None:
    f = tmp_path / "kek"
    f.write_text(KEK_HEX + "\n")
    assert load_master_key({ENV_MASTER_KEY_FILE: str(f)}).key_id == LocalMasterKey(bytes.fromhex(KEK_HEX)).key_id
    f.write_bytes(bytes(range(32)))  # raw binary
    assert load_master_key(path=f).key_id == LocalMasterKey(bytes(range(32))).key_id


def test_master_key_missing_and_bad() -> None:
    with pytest.raises(MasterKeyMissing):
        load_master_key({})
    with pytest.raises(MasterKeyMissing):
        load_master_key({ENV_MASTER_KEY_FILE: "/nonexistent/kek"})
    secret_typo = KEK_HEX[:-1]
    with pytest.raises(KeyStoreError) as info:
        load_master_key({ENV_MASTER_KEY: secret_typo})
    assert secret_typo not in str(info.value)  # never echo a near-key
    with pytest.raises(KeyStoreError):
        LocalMasterKey(b"short")


def test_write_failure_leaves_store_usable(tmp_path: Path, master: LocalMasterKey) -> None:
    store = KeyStore(tmp_path / "d" / "keys.json", master)
    (tmp_path / "d").write_text("x")  # the data dir is now a file: cannot write
    with pytest.raises(KeyStoreError):
        store.key_for("live", 0)
    assert len(store) == 0


def test_bad_arguments(tmp_path: Path, master: LocalMasterKey) -> None:
    store = KeyStore(tmp_path / "keys.json", master)
    with pytest.raises(KeyStoreError):
        store.key_for("", 0)
    with pytest.raises(KeyStoreError):
        store.key_for("live", -1)
    with pytest.raises(KeyStoreError):
        KeyStore(tmp_path / "k.json", master, iv_size=12)


def test_concurrent_first_use_creates_one_key(tmp_path: Path, master: LocalMasterKey) -> None:
    from concurrent.futures import ThreadPoolExecutor

    store = KeyStore(tmp_path / "keys.json", master)
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda _: store.key_for("live", 7), range(32)))
    assert len({k.kid for k in got}) == 1 and len(store) == 1
