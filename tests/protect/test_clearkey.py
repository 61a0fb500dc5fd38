"""ClearKey license logic (W3C EME 9.1.3/9.1.4) and the per-client rate limiter."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flowcast.protect.cenc import ContentKey
from flowcast.protect.clearkey import (
    LicenseError,
    LicenseRequest,
    RateLimiter,
    b64url_decode,
    b64url_encode,
    build_license_response,
    parse_license_request,
)
from flowcast.protect.keystore import KeyStore, LocalMasterKey

# Golden vector (standards.md section 3, shaka-packager tests)
KID = bytes.fromhex("31323334353637383930313233343536")
KEY = bytes.fromhex("32333435363738393021323334353637")
KID_B64URL = "MTIzNDU2Nzg5MDEyMzQ1Ng"
KEY_B64URL = "MjM0NTY3ODkwITIzNDU2Nw"
CK = ContentKey(KID, KEY, b"\0" * 16)


def test_b64url_golden() -> None:
    assert b64url_encode(KID) == KID_B64URL and b64url_encode(KEY) == KEY_B64URL
    assert b64url_decode(KID_B64URL) == KID
    assert b64url_decode(KID_B64URL + "==") == KID  # padded also accepted
    for bad in ("MTIz+NDU2", "MTIz/NDU2", "a", "ab cd", "MTIz=NDU2"):
        with pytest.raises(ValueError):
            b64url_decode(bad)


def test_parse_the_eme_example_request() -> None:
    body = json.dumps({"kids": [KID_B64URL], "type": "temporary"}).encode()
    assert parse_license_request(body) == LicenseRequest((KID,), "temporary")
    # type is optional; duplicates collapse; order kept
    other = bytes(range(16))
    req = parse_license_request(json.dumps({"kids": [b64url_encode(other), KID_B64URL, b64url_encode(other)]}))
    assert req.kids == (other, KID) and req.type == "temporary"


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        (b"{not json", 400, "not JSON"),
        (b"\xff\xfe", 400, "not JSON"),
        (b"[]", 400, "JSON object"),
        (b'{"type":"temporary"}', 400, "'kids'"),
        (b'{"kids":[]}', 400, "'kids'"),
        (b'{"kids":"MTIz"}', 400, "'kids'"),
        (b'{"kids":[123]}', 400, "must be a string"),
        (b'{"kids":["!!!"]}', 400, "not base64url"),
        (b'{"kids":["MTIzNDU2Nzg5MDEyMzQ1Ng+"]}', 400, "not base64url"),
        (b'{"kids":["MTIzNDU2Nzg5MDEy"]}', 400, "a KID is 16"),
        (b'{"kids":["MTIzNDU2Nzg5MDEyMzQ1NjE"]}', 400, "a KID is 16"),
        (b'{"kids":["MTIzNDU2Nzg5MDEyMzQ1Ng"],"type":7}', 400, "'type'"),
        (b'{"kids":["MTIzNDU2Nzg5MDEyMzQ1Ng"],"type":"persistent-license"}', 400, "not supported"),
        (b"[" * 100000 + b"]" * 100000, 413, "larger"),
    ],
)
def test_malformed_requests(body: bytes, status: int, fragment: str) -> None:
    with pytest.raises(LicenseError) as info:
        parse_license_request(body, max_body=10**6 if status != 413 else 4096)
    assert info.value.status == status and fragment in info.value.reason


def test_deep_nesting_is_a_400_not_a_crash() -> None:
    with pytest.raises(LicenseError) as info:
        parse_license_request(b"[" * 100000 + b"]" * 100000, max_body=10**6)
    assert info.value.status == 400


def test_too_many_kids() -> None:
    body = json.dumps({"kids": [b64url_encode(bytes([i]) * 16) for i in range(17)]})
    with pytest.raises(LicenseError) as info:
        parse_license_request(body, max_body=10**5)
    assert info.value.status == 400 and "too many" in info.value.reason
    assert len(parse_license_request(body, max_body=10**5, max_kids=17).kids) == 17


def test_persistent_license_when_enabled() -> None:
    body = b'{"kids":["MTIzNDU2Nzg5MDEyMzQ1Ng"],"type":"persistent-license"}'
    req = parse_license_request(body, session_types=("temporary", "persistent-license"))
    out = json.loads(build_license_response(req, {KID: CK}))
    assert out["type"] == "persistent-license"


def test_response_is_the_eme_jwk_set() -> None:
    req = parse_license_request(json.dumps({"kids": [KID_B64URL], "type": "temporary"}))
    body = build_license_response(req, {KID: CK})
    assert json.loads(body) == {"keys": [{"kty": "oct", "k": KEY_B64URL, "kid": KID_B64URL}], "type": "temporary"}
    assert b"=" not in body  # base64url without padding


def test_unknown_and_forbidden_kids() -> None:
    unknown = bytes(range(16))
    # a subset is answered with the keys we have (EME: the rest stay unusable)
    body = build_license_response(LicenseRequest((KID, unknown)), {KID: CK})
    assert [k["kid"] for k in json.loads(body)["keys"]] == [KID_B64URL]
    with pytest.raises(LicenseError) as info:
        build_license_response(LicenseRequest((unknown,)), {KID: CK})
    assert info.value.status == 404
    with pytest.raises(LicenseError) as info:
        build_license_response(LicenseRequest((KID,)), {KID: CK}, allowed=set())
    assert info.value.status == 403
    # allowed as a predicate
    assert build_license_response(LicenseRequest((KID,)), {KID: CK}, allowed=lambda k: k == KID)


def test_with_the_key_store(tmp_path) -> None:  # type: ignore[no-untyped-def]
    store = KeyStore(tmp_path / "keys.json", LocalMasterKey.generate())
    ck = store.key_for("live", 0)
    req = parse_license_request(json.dumps({"kids": [b64url_encode(ck.kid)]}))
    out = json.loads(build_license_response(req, store.find))
    assert b64url_decode(out["keys"][0]["k"]) == ck.key


@given(st.binary(max_size=600))
def test_parser_only_raises_license_error(body: bytes) -> None:
    try:
        parse_license_request(body)
    except LicenseError as exc:
        assert exc.status in (400, 413)


@given(st.lists(st.binary(min_size=16, max_size=16), min_size=1, max_size=16))
def test_round_trip_any_kids(kids: list[bytes]) -> None:
    body = json.dumps({"kids": [b64url_encode(k) for k in kids], "type": "temporary"})
    assert parse_license_request(body).kids == tuple(dict.fromkeys(kids))


# --- rate limiter --------------------------------------------------------------------


def test_token_bucket_burst_then_rate() -> None:
    rl = RateLimiter(rate=2.0, burst=3)
    assert [rl.allow("a", 0.0) for _ in range(4)] == [True, True, True, False]
    assert rl.allow("b", 0.0)  # per client
    assert rl.retry_after("a", 0.0) == pytest.approx(0.5)
    assert not rl.allow("a", 0.4)
    assert rl.allow("a", 0.5 + 0.4)  # refilled 0.5 s after the failed attempt state
    assert rl.allow("a", 100.0) and rl.allow("a", 100.0) and rl.allow("a", 100.0)  # capped at burst
    assert not rl.allow("a", 100.0)


def test_clock_going_backwards_adds_nothing() -> None:
    rl = RateLimiter(rate=1.0, burst=1)
    assert rl.allow("a", 10.0)
    assert not rl.allow("a", 5.0)
    assert not rl.allow("a", 10.5)


def test_check_raises_429() -> None:
    rl = RateLimiter(rate=1.0, burst=1)
    rl.check("a", 0.0)
    with pytest.raises(LicenseError) as info:
        rl.check("a", 0.0)
    assert info.value.status == 429 and "retry after 1s" in info.value.reason


def test_memory_is_bounded() -> None:
    rl = RateLimiter(rate=1.0, burst=1, max_clients=10)
    for i in range(100):
        rl.allow(f"c{i}", 0.0)
    assert len(rl._buckets) == 10


@pytest.mark.parametrize(("rate", "burst"), [(0, 1), (-1, 1), (1, 0), (float("inf"), 1)])
def test_rate_limiter_rejects_bad_config(rate: float, burst: float) -> None:
    with pytest.raises(ValueError):
        RateLimiter(rate, burst)
