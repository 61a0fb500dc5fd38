"""Native URL tokens: every refusal carries the right status, nothing else escapes."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowcast.protect.tokens import (
    TokenClaims,
    TokenError,
    TokenExpired,
    TokenInvalid,
    TokenSigner,
    TokenVerifier,
    acl_grants,
    normalise_path,
    token_from_request,
)

KEYS = {"k2024": b"\x01" * 32, "k2025": b"\x02" * 32}
NOW = 1_700_000_000
EXP = NOW + 300
ACL = "/live/live/"


@pytest.fixture
def signer() -> TokenSigner:
    return TokenSigner(KEYS, "k2025")


@pytest.fixture
def verifier() -> TokenVerifier:
    return TokenVerifier(KEYS)


def _refused(verifier: TokenVerifier, token: str, status: int, **kw: object) -> TokenError:
    args = {"path": "/live/live/720p/seg1.m4s", "client_ip": "203.0.113.7", "now": NOW}
    args.update(kw)
    with pytest.raises(TokenError) as info:
        verifier.verify(token, **args)  # type: ignore[arg-type]
    assert info.value.status == status
    assert info.value.reason  # internal detail for logs
    # The public message is the same for every failure of a status: it tells nothing.
    assert info.value.public_message in ("Forbidden", "Gone")
    assert info.value.reason not in info.value.public_message
    return info.value


def test_round_trip_with_all_claims(signer: TokenSigner, verifier: TokenVerifier) -> None:
    token = signer.sign(ACL, expires=EXP, session_id="sess-1", client_ip="203.0.113.7")
    assert token.startswith("v1.k2025.1700000300.")
    assert all(c.isalnum() or c in "._-" for c in token)  # URL and cookie safe as is
    claims = verifier.verify(token, path="/live/live/720p/seg1.m4s", client_ip="203.0.113.7", now=NOW)
    assert claims == TokenClaims("k2025", ACL, EXP, "sess-1", "203.0.113.7")


def test_ttl_uses_now(signer: TokenSigner, verifier: TokenVerifier) -> None:
    token = signer.sign(ACL, ttl=60, now=NOW)
    assert verifier.verify(token, path="/live/live/a.m3u8", now=NOW).expires == NOW + 60
    with pytest.raises(ValueError):
        signer.sign(ACL, ttl=60, expires=EXP)
    with pytest.raises(ValueError):
        signer.sign(ACL)


def test_old_kid_still_verifies_after_rotation(verifier: TokenVerifier) -> None:
    old = TokenSigner(KEYS, "k2024").sign(ACL, expires=EXP)
    assert verifier.verify(old, path="/live/live/a.m3u8", now=NOW).kid == "k2024"


def test_unknown_kid_is_403(signer: TokenSigner) -> None:
    token = signer.sign(ACL, expires=EXP)
    err = _refused(TokenVerifier({"k2024": KEYS["k2024"]}), token, 403, client_ip=None)
    assert "kid" in err.reason


def test_expired_is_410(signer: TokenSigner, verifier: TokenVerifier) -> None:
    token = signer.sign(ACL, expires=EXP)
    assert verifier.verify(token, path="/live/live/a.m3u8", now=EXP - 1)
    err = _refused(verifier, token, 410, now=EXP)
    assert isinstance(err, TokenExpired) and err.public_message == "Gone"


@pytest.mark.parametrize("field", range(7))
def test_tampering_any_field_is_403(field: int, signer: TokenSigner, verifier: TokenVerifier) -> None:
    token = signer.sign(ACL, expires=EXP, session_id="s", client_ip="203.0.113.7")
    parts = token.split(".")
    replacements = {
        0: "v2",
        1: "k2024",  # a known kid, but not the one that signed
        2: str(EXP + 86400),  # extend the expiry
        3: "L2xpdmUv",  # "/live/": widen the acl
        4: "",  # drop the session
        5: "",  # drop the ip binding
        6: parts[6][:-2] + ("AA" if parts[6][-2:] != "AA" else "BA"),
    }
    parts[field] = replacements[field]
    err = _refused(verifier, ".".join(parts), 403)
    assert isinstance(err, TokenInvalid)


def test_extending_expiry_of_an_expired_token_is_403_not_410(
    signer: TokenSigner, verifier: TokenVerifier
) -> None:
    parts = signer.sign(ACL, expires=NOW - 10).split(".")
    parts[2] = str(NOW - 5)  # still expired, but forged: must not read as "expired"
    _refused(verifier, ".".join(parts), 403, client_ip=None)


def test_wrong_path_and_replay_on_another_stream(signer: TokenSigner, verifier: TokenVerifier) -> None:
    token = signer.sign("/live/channel-a/", expires=EXP)
    assert verifier.verify(token, path="/live/channel-a/index.m3u8", now=NOW)
    _refused(verifier, token, 403, path="/live/channel-b/index.m3u8", client_ip=None)
    _refused(verifier, token, 403, path="/vod/channel-a/index.m3u8", client_ip=None)


@pytest.mark.parametrize("acl", ["/live/live", "/live/live/"])
def test_sibling_prefix_is_refused(acl: str, signer: TokenSigner, verifier: TokenVerifier) -> None:
    token = signer.sign(acl, expires=EXP)
    assert verifier.verify(token, path="/live/live/x.m4s", now=NOW)
    _refused(verifier, token, 403, path="/live/live2/x.m4s", client_ip=None)
    _refused(verifier, token, 403, path="/live/livex", client_ip=None)


def test_wrong_ip_is_403_and_network_binding(signer: TokenSigner, verifier: TokenVerifier) -> None:
    token = signer.sign(ACL, expires=EXP, client_ip="203.0.113.7")
    _refused(verifier, token, 403, client_ip="203.0.113.8")
    _refused(verifier, token, 403, client_ip=None)
    _refused(verifier, token, 403, client_ip="not-an-ip")
    net = signer.sign(ACL, expires=EXP, client_ip="2001:db8::/32")
    assert verifier.verify(net, path="/live/live/a", client_ip="2001:db8:0:0::99", now=NOW)
    _refused(verifier, net, 403, client_ip="2001:db9::1")
    _refused(verifier, net, 403, client_ip="203.0.113.7")


@pytest.mark.parametrize(
    "path",
    [
        "/live/live/../secret/key.bin",
        "/live/live/%2e%2e/secret/key.bin",
        "/live/live/%2E%2E/%2e%2e/etc/passwd",
        "/live/live/..%2fsecret",
        "/live/live/%252e%252e/secret",  # double encoding
        "/live/live/..\\secret",
        "/live/live/%5c..%5csecret",
        "/live/live/./seg.m4s",
        "/live/live//seg.m4s",
        "/live/live/seg%00.m4s",
        "/live/live/%ff",
        "live/live/seg.m4s",
        "",
    ],
)
def test_traversal_attempts_are_403(path: str, signer: TokenSigner, verifier: TokenVerifier) -> None:
    token = signer.sign(ACL, expires=EXP)
    _refused(verifier, token, 403, path=path, client_ip=None)


def test_path_normalisation() -> None:
    assert normalise_path("/live/live/seg%201.m4s?x=1#f") == "/live/live/seg 1.m4s"
    assert normalise_path("/live/live%2Fa.m4s") == "/live/live/a.m4s"
    assert acl_grants("/", "/anything")
    assert not acl_grants("/live/live", "/live/live2")


def test_signer_refuses_bad_input() -> None:
    with pytest.raises(ValueError):
        TokenSigner(KEYS, "nope")
    with pytest.raises(ValueError):
        TokenSigner({"k": b"short"}, "k")
    with pytest.raises(ValueError):
        TokenSigner({"bad.kid": b"x" * 32}, "bad.kid")
    signer = TokenSigner(KEYS, "k2025")
    for acl in ["live/", "/live/../", "/live//x/"]:
        with pytest.raises(ValueError):
            signer.sign(acl, expires=EXP)
    with pytest.raises(ValueError):
        signer.sign(ACL, expires=EXP, client_ip="nope")


@pytest.mark.parametrize(
    "token",
    ["", "v1", "v1.k2025.1.x.x.x", "v1.k2025.01.L2xpdmUv..." + "A" * 43, "v1.k2025.-1.a.b.c.d", "é" * 7],
)
def test_malformed_is_403(token: str, verifier: TokenVerifier) -> None:
    _refused(verifier, token, 403)


def test_token_from_request() -> None:
    assert token_from_request("a=1&token=v1.abc&b=2", None) == "v1.abc"
    assert token_from_request("?token=v1.abc", "flowcast_token=v1.cookie") == "v1.abc"
    assert token_from_request("a=1", "x=1; flowcast_token=v1.cookie; y=2") == "v1.cookie"
    assert token_from_request("a=1", 'flowcast_token="v1.q"') == "v1.q"
    assert token_from_request("", None) is None
    assert token_from_request("tokenx=1", "other=1") is None
    with pytest.raises(TokenInvalid):
        token_from_request("token=a&token=b", None)
    with pytest.raises(TokenInvalid):
        token_from_request("", "flowcast_token=a; flowcast_token=b")


@settings(max_examples=300, deadline=None)
@given(token=st.text(max_size=300), path=st.text(max_size=100), ip=st.one_of(st.none(), st.text(max_size=40)))
def test_random_input_only_raises_token_errors(token: str, path: str, ip: str | None) -> None:
    verifier = TokenVerifier(KEYS)
    try:
        verifier.verify(token, path=path, client_ip=ip, now=NOW)
    except TokenError as exc:
        assert exc.status in (403, 410)


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_mutated_real_tokens_never_verify_or_crash(data: st.DataObject) -> None:
    token = TokenSigner(KEYS, "k2025").sign(ACL, expires=EXP, session_id="s", client_ip="203.0.113.7")
    i = data.draw(st.integers(0, len(token) - 1))
    c = data.draw(st.sampled_from("AB_-.0123456789vk"))
    mutated = token[:i] + c + token[i + 1 :]
    if mutated == token:
        return
    with pytest.raises(TokenInvalid):
        TokenVerifier(KEYS).verify(mutated, path="/live/live/a.m4s", client_ip="203.0.113.7", now=NOW)


@settings(max_examples=200, deadline=None)
@given(query=st.text(max_size=200), cookie=st.one_of(st.none(), st.text(max_size=200)))
def test_token_from_request_never_crashes(query: str, cookie: str | None) -> None:
    try:
        token_from_request(query, cookie)
    except TokenInvalid:
        pass


def test_expired_on_wrong_path_is_403_not_410(signer: TokenSigner, verifier: TokenVerifier) -> None:
    # 410 means "only the time is wrong": an expired token used elsewhere is still a 403.
    token = signer.sign(ACL, expires=EXP, client_ip="203.0.113.7")
    _refused(verifier, token, 403, path="/live/other/a.m4s", now=EXP + 1)
    _refused(verifier, token, 403, client_ip="198.51.100.1", now=EXP + 1)
    _refused(verifier, token, 410, now=EXP + 1)
    with pytest.raises(TokenExpired):
        verifier.parse(token, now=EXP)
    assert verifier.parse(token, now=NOW).acl == ACL
