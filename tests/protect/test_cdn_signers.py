"""CDN token schemes: CloudFront (botocore as the oracle), Akamai EdgeAuth 2.0, Fastly."""

from __future__ import annotations

import base64
import datetime as dt
import json

import pytest
from botocore.signers import CloudFrontSigner as BotoSigner
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from flowcast.protect.cdn.akamai import EdgeAuthSigner, EdgeAuthVerifier, acl_matches, escape_early
from flowcast.protect.cdn.cloudfront import (
    CloudFrontSigner,
    CloudFrontVerifier,
    canned_policy,
    cf_b64decode,
    cf_b64encode,
    custom_policy,
    resource_matches,
)
from flowcast.protect.cdn.fastly import FastlySigner, FastlyVerifier
from flowcast.protect.tokens import TokenError, TokenExpired, TokenInvalid

NOW = 1_700_000_000
EXP = NOW + 300
KEY_PAIR_ID = "K2JCJMDEHXQW5F"
URL = "https://d111111abcdef8.cloudfront.net/live/live/720p/seg1.m4s"


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def boto(rsa_key: rsa.RSAPrivateKey) -> BotoSigner:
    return BotoSigner(KEY_PAIR_ID, lambda m: rsa_key.sign(m, padding.PKCS1v15(), hashes.SHA1()))


@pytest.fixture(scope="module")
def cf(rsa_key: rsa.RSAPrivateKey) -> CloudFrontSigner:
    return CloudFrontSigner(KEY_PAIR_ID, rsa_key)


@pytest.fixture(scope="module")
def cf_verifier(rsa_key: rsa.RSAPrivateKey) -> CloudFrontVerifier:
    return CloudFrontVerifier({KEY_PAIR_ID: rsa_key.public_key()})


def _utc(ts: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ts, tz=dt.timezone.utc)


def _status(fn, *args, **kw) -> int:  # noqa: ANN001
    with pytest.raises(TokenError) as info:
        fn(*args, **kw)
    return info.value.status


# --- CloudFront -------------------------------------------------------------------------


def test_canned_policy_text_is_exactly_the_fact_sheet() -> None:
    assert canned_policy(URL, EXP) == (
        '{"Statement":[{"Resource":"' + URL + '","Condition":{"DateLessThan":{"AWS:EpochTime":1700000300}}}]}'
    )


def test_cloudfront_base64_alphabet() -> None:
    raw = bytes([0xFB, 0xFF, 0xBF, 0x00])  # "+/+/AA==" in standard base64
    assert base64.b64encode(raw) == b"+/+/AA=="
    assert cf_b64encode(raw) == "-~-~AA__"
    assert cf_b64decode("-~-~AA__") == raw
    with pytest.raises(TokenInvalid):
        cf_b64decode("+/+/AA==")


@pytest.mark.parametrize("url", [URL, URL + "?lang=pt-BR"])
def test_canned_url_matches_botocore_byte_for_byte(url: str, cf: CloudFrontSigner, boto: BotoSigner) -> None:
    ours = cf.canned_url(url, expires=EXP)
    theirs = boto.generate_presigned_url(url, date_less_than=_utc(EXP))
    assert ours == theirs
    assert "Expires=1700000300&Signature=" in ours and ours.endswith(f"&Key-Pair-Id={KEY_PAIR_ID}")


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"ip_address": "203.0.113.7"},
        {"ip_address": "203.0.113.0/24", "date_greater_than": NOW - 60},
        {"date_greater_than": NOW - 60},
    ],
)
def test_custom_policy_url_matches_botocore_byte_for_byte(
    kw: dict, cf: CloudFrontSigner, boto: BotoSigner
) -> None:
    resource = "https://d111111abcdef8.cloudfront.net/live/live/*"
    ours_policy = custom_policy(resource, date_less_than=EXP, **kw)
    boto_kw = {"ip_address": kw.get("ip_address")}
    if "date_greater_than" in kw:
        boto_kw["date_greater_than"] = _utc(kw["date_greater_than"])
    boto_policy = boto.build_policy(resource, _utc(EXP), **boto_kw)
    assert ours_policy == boto_policy
    assert " " not in ours_policy
    assert cf.custom_url(URL, ours_policy) == boto.generate_presigned_url(URL, policy=boto_policy)


def test_canned_url_round_trip_and_failures(cf: CloudFrontSigner, cf_verifier: CloudFrontVerifier) -> None:
    signed = cf.canned_url(URL, expires=EXP)
    policy = cf_verifier.verify_url(signed, now=NOW)
    assert policy.canned and policy.resource == URL and policy.date_less_than == EXP
    assert _status(cf_verifier.verify_url, signed, now=EXP) == 410
    # the signature is for one exact URL
    other = signed.replace("seg1.m4s", "seg2.m4s")
    assert _status(cf_verifier.verify_url, other, now=NOW) == 403
    # extending Expires breaks the signature
    assert _status(cf_verifier.verify_url, signed.replace("Expires=1700000300", "Expires=1800000000"), now=NOW) == 403
    # unknown key pair id
    assert _status(cf_verifier.verify_url, signed.replace(KEY_PAIR_ID, "KOTHER"), now=NOW) == 403
    # a signature made with another key
    stranger = CloudFrontSigner(KEY_PAIR_ID, rsa.generate_private_key(public_exponent=65537, key_size=2048))
    assert _status(cf_verifier.verify_url, stranger.canned_url(URL, expires=EXP), now=NOW) == 403


def test_custom_url_wildcard_ip_and_start(cf: CloudFrontSigner, cf_verifier: CloudFrontVerifier) -> None:
    policy = custom_policy(
        "https://d111111abcdef8.cloudfront.net/live/live/*",
        date_less_than=EXP,
        date_greater_than=NOW - 10,
        ip_address="203.0.113.0/24",
    )
    signed = cf.custom_url(URL, policy)
    got = cf_verifier.verify_url(signed, client_ip="203.0.113.99", now=NOW)
    assert not got.canned and got.source_ip == "203.0.113.0/24" and got.date_greater_than == NOW - 10
    # the same Policy/Signature serves every URL under the wildcard
    query = signed.partition("?")[2]
    sibling = "https://d111111abcdef8.cloudfront.net/live/live/1080p/seg9.m4s?" + query
    assert cf_verifier.verify_url(sibling, client_ip="203.0.113.99", now=NOW)
    assert _status(cf_verifier.verify_url, sibling.replace("/live/live/", "/live/other/"), client_ip="203.0.113.99", now=NOW) == 403
    traversal = "https://d111111abcdef8.cloudfront.net/live/live/../../secret/key?" + query
    assert _status(cf_verifier.verify_url, traversal, client_ip="203.0.113.99", now=NOW) == 403
    assert _status(cf_verifier.verify_url, signed, client_ip="198.51.100.1", now=NOW) == 403
    assert _status(cf_verifier.verify_url, signed, client_ip=None, now=NOW) == 403
    assert _status(cf_verifier.verify_url, signed, client_ip="203.0.113.99", now=NOW - 11) == 403
    assert _status(cf_verifier.verify_url, signed, client_ip="203.0.113.99", now=EXP) == 410


def test_sha256_signatures_verify_with_cryptography(rsa_key: rsa.RSAPrivateKey, cf_verifier: CloudFrontVerifier) -> None:
    signer = CloudFrontSigner(KEY_PAIR_ID, rsa_key, hash_algorithm="SHA256")
    signed = signer.canned_url(URL, expires=EXP)
    assert signed.endswith(f"&Key-Pair-Id={KEY_PAIR_ID}&Hash-Algorithm=SHA256")
    params = dict(p.split("=", 1) for p in signed.partition("?")[2].split("&"))
    signature = cf_b64decode(params["Signature"])
    message = canned_policy(URL, EXP).encode()
    rsa_key.public_key().verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
    with pytest.raises(InvalidSignature):
        rsa_key.public_key().verify(signature, message, padding.PKCS1v15(), hashes.SHA1())
    assert cf_verifier.verify_url(signed, now=NOW).hash_algorithm == "SHA256"
    # claiming SHA1 for a SHA-256 signature fails, and SHA-1 can be switched off
    assert _status(cf_verifier.verify_url, signed.replace("&Hash-Algorithm=SHA256", ""), now=NOW) == 403
    strict = CloudFrontVerifier({KEY_PAIR_ID: rsa_key.public_key()}, allow_sha1=False)
    assert strict.verify_url(signed, now=NOW)
    sha1 = CloudFrontSigner(KEY_PAIR_ID, rsa_key).canned_url(URL, expires=EXP)
    assert _status(strict.verify_url, sha1, now=NOW) == 403


def test_signed_cookies(rsa_key: rsa.RSAPrivateKey, cf: CloudFrontSigner, cf_verifier: CloudFrontVerifier) -> None:
    policy = custom_policy("https://d111111abcdef8.cloudfront.net/live/live/*", date_less_than=EXP)
    cookies = cf.custom_cookies(policy)
    assert set(cookies) == {"CloudFront-Policy", "CloudFront-Signature", "CloudFront-Key-Pair-Id"}
    assert json.loads(cf_b64decode(cookies["CloudFront-Policy"])) == json.loads(policy)
    header = "; ".join(f"{k}={v}" for k, v in cookies.items())
    assert cf_verifier.verify_cookies(URL, header, now=NOW)
    assert cf_verifier.verify_cookies(URL, cookies, now=NOW)
    assert _status(cf_verifier.verify_cookies, URL.replace("/live/live/", "/vod/"), cookies, now=NOW) == 403
    assert _status(cf_verifier.verify_cookies, URL, cookies, now=EXP) == 410
    tampered = dict(cookies, **{"CloudFront-Policy": cf_b64encode(policy.replace("/live/live/*", "/*").encode())})
    assert _status(cf_verifier.verify_cookies, URL, tampered, now=NOW) == 403

    canned = cf.canned_cookies(URL, expires=EXP)
    assert set(canned) == {"CloudFront-Expires", "CloudFront-Signature", "CloudFront-Key-Pair-Id"}
    assert canned["CloudFront-Expires"] == str(EXP)
    assert cf_verifier.verify_cookies(URL, canned, now=NOW).canned
    assert _status(cf_verifier.verify_cookies, URL.replace("seg1", "seg2"), canned, now=NOW) == 403

    sha256 = CloudFrontSigner(KEY_PAIR_ID, rsa_key, hash_algorithm="SHA256").custom_cookies(policy)
    assert sha256["CloudFront-Hash-Algorithm"] == "SHA256"
    assert cf_verifier.verify_cookies(URL, sha256, now=NOW).hash_algorithm == "SHA256"


def test_resource_wildcards() -> None:
    assert resource_matches("https://d/live/*", "https://d/live/a/b.m4s")
    assert resource_matches("https://d/live/seg?.m4s", "https://d/live/seg1.m4s")
    assert not resource_matches("https://d/live/seg?.m4s", "https://d/live/seg12.m4s")
    assert resource_matches("*", "anything")
    assert not resource_matches("https://d/live/*", "https://d/vod/a")
    assert resource_matches("a*b*c", "a" + "x" * 5000 + "b" + "y" * 5000 + "c")


# --- Akamai EdgeAuth 2.0 ----------------------------------------------------------------

AKAMAI_KEY = "aabbccddeeff00112233445566778899"
AKAMAI_VECTOR = (
    "st=1700000000~exp=1700000300~acl=/live/*"
    "~hmac=59a998480f80251b8cd7b502df2a441ee4bc8c35eafb4fadb4d3357b7b5fab75"
)


def test_akamai_vector_exactly() -> None:
    token = EdgeAuthSigner(AKAMAI_KEY).acl_token("/live/*", start=1700000000, expires=1700000300)
    assert token == AKAMAI_VECTOR
    claims = EdgeAuthVerifier(AKAMAI_KEY).verify(AKAMAI_VECTOR, path="/live/ch1/seg.m4s", now=NOW + 1)
    assert claims.acl == ("/live/*",) and claims.start == NOW and claims.expires == EXP


def test_akamai_field_order_and_refusals() -> None:
    signer = EdgeAuthSigner(AKAMAI_KEY)
    verifier = EdgeAuthVerifier(AKAMAI_KEY)
    token = signer.acl_token(
        ["/live/a/*", "/live/b/*"], start=NOW, expires=EXP, ip="203.0.113.7", session_id="s1", data="d"
    )
    names = [f.split("=", 1)[0] for f in token.split("~")]
    assert names == ["ip", "st", "exp", "acl", "id", "data", "hmac"]
    assert "acl=/live/a/*!/live/b/*" in token
    ok = verifier.verify(token, path="/live/b/x.m4s", client_ip="203.0.113.7", now=NOW)
    assert ok.acl == ("/live/a/*", "/live/b/*") and ok.session_id == "s1" and ok.data == "d"
    assert _status(verifier.verify, token, path="/live/c/x.m4s", client_ip="203.0.113.7", now=NOW) == 403
    assert _status(verifier.verify, token, path="/live/b/x.m4s", client_ip="203.0.113.8", now=NOW) == 403
    assert _status(verifier.verify, token, path="/live/b/x.m4s", client_ip="203.0.113.7", now=NOW - 1) == 403
    assert _status(verifier.verify, token, path="/live/b/x.m4s", client_ip="203.0.113.7", now=EXP) == 410
    assert _status(verifier.verify, token, path="/live/b/../../x", client_ip="203.0.113.7", now=NOW) == 403
    widened = token.replace("acl=/live/a/*!/live/b/*", "acl=/*")
    assert _status(verifier.verify, widened, path="/live/b/x.m4s", client_ip="203.0.113.7", now=NOW) == 403
    extended = token.replace(f"exp={EXP}", f"exp={EXP + 999}")
    assert _status(verifier.verify, extended, path="/live/b/x.m4s", client_ip="203.0.113.7", now=EXP) == 403
    reordered = "~".join([token.split("~")[1], token.split("~")[0]] + token.split("~")[2:])
    assert _status(verifier.verify, reordered, path="/live/b/x.m4s", client_ip="203.0.113.7", now=NOW) == 403
    with pytest.raises(ValueError):
        signer.acl_token("/live/~x", expires=EXP)


def test_akamai_url_token_signs_url_but_does_not_carry_it() -> None:
    signer = EdgeAuthSigner(AKAMAI_KEY, algorithm="sha1")
    verifier = EdgeAuthVerifier(AKAMAI_KEY, algorithm="sha1")
    token = signer.url_token("/vod/movie/seg1.m4s", expires=EXP)
    assert "url=" not in token and "acl=" not in token
    assert len(token.rsplit("hmac=", 1)[1]) == 40
    assert verifier.verify(token, path="/vod/movie/seg1.m4s?x=1", now=NOW).url == "/vod/movie/seg1.m4s"
    assert _status(verifier.verify, token, path="/vod/movie/seg2.m4s", now=NOW) == 403
    # an md5 verifier does not take a sha1 token
    assert _status(EdgeAuthVerifier(AKAMAI_KEY, algorithm="md5").verify, token, path="/vod/movie/seg1.m4s", now=NOW) == 403


def test_akamai_escape_early_mirrors_reference() -> None:
    # quote_plus with no safe characters, then lower-case %XX hex; ACLs are never escaped.
    # Python 3's quote_plus treats "~" as unreserved, so it survives escaping (as in the
    # reference) and would collide with the field delimiter: the signer refuses it.
    assert escape_early("/a b/c~d") == "%2fa+b%2fc~d"
    signer = EdgeAuthSigner(AKAMAI_KEY, escape_early=True)
    token = signer.acl_token("/live/*", expires=EXP, session_id="user 1/x", data="k=v&w")
    assert "acl=/live/*" in token and "id=user+1%2fx" in token and "data=k%3dv%26w" in token
    claims = EdgeAuthVerifier(AKAMAI_KEY, escape_early=True).verify(token, path="/live/a", now=NOW)
    assert claims.session_id == "user 1/x" and claims.data == "k=v&w"
    with pytest.raises(ValueError):
        signer.acl_token("/live/*", expires=EXP, session_id="a~b")
    url_signer = EdgeAuthSigner(AKAMAI_KEY, escape_early=True)
    url_token = url_signer.url_token("/vod/a b.m4s", expires=EXP)
    assert EdgeAuthVerifier(AKAMAI_KEY, escape_early=True).verify(url_token, path="/vod/a b.m4s", now=NOW)
    # without escaping, the HMAC input differs
    assert _status(EdgeAuthVerifier(AKAMAI_KEY).verify, url_token, path="/vod/a b.m4s", now=NOW) == 403


def test_akamai_acl_wildcards() -> None:
    assert acl_matches("/live/*", "/live/a/b/c.m4s")
    assert acl_matches("/live/seg?.ts", "/live/seg1.ts")
    assert not acl_matches("/live/seg?.ts", "/live/seg10.ts")
    assert not acl_matches("/live/*", "/vod/a")


# --- Fastly -----------------------------------------------------------------------------

FASTLY_KEY = base64.b64encode(b"fastly-shared-secret-0123456789").decode()


def test_fastly_token_shape_and_round_trip() -> None:
    import hashlib
    import hmac

    signer = FastlySigner(FASTLY_KEY)
    token = signer.token("/live/a.m3u8", expires=EXP)
    expected = hmac.new(b"fastly-shared-secret-0123456789", b"/live/a.m3u81700000300", hashlib.sha1).hexdigest()
    assert token == f"1700000300_{expected}"
    assert signer.sign_url("/live/a.m3u8", expires=EXP) == f"/live/a.m3u8?token={token}"
    verifier = FastlyVerifier(FASTLY_KEY)
    assert verifier.verify(token, path="/live/a.m3u8?token=" + token, now=NOW).expires == EXP


def test_fastly_expired_410_tampered_403() -> None:
    token = FastlySigner(FASTLY_KEY).token("/live/a.m3u8", expires=EXP)
    verifier = FastlyVerifier(FASTLY_KEY)
    assert _status(verifier.verify, token, path="/live/a.m3u8", now=EXP) == 410
    assert _status(verifier.verify, token, path="/live/b.m3u8", now=NOW) == 403
    assert _status(verifier.verify, f"{EXP + 1}" + token[10:], path="/live/a.m3u8", now=NOW) == 403
    flipped = token[:-1] + ("0" if token[-1] != "0" else "1")
    assert _status(verifier.verify, flipped, path="/live/a.m3u8", now=NOW) == 403
    assert _status(verifier.verify, token.upper(), path="/live/a.m3u8", now=NOW) == 403
    other_key = FastlyVerifier(base64.b64encode(b"another-secret").decode())
    assert _status(other_key.verify, token, path="/live/a.m3u8", now=NOW) == 403
    # a forged expiry on an expired token is a 403, never a 410
    old = FastlySigner(FASTLY_KEY).token("/live/a.m3u8", expires=NOW - 100)
    assert _status(verifier.verify, f"{NOW - 50}" + old[10:], path="/live/a.m3u8", now=NOW) == 403


# --- fuzz: random input only ever gives the specific errors ----------------------------


@settings(max_examples=300, deadline=None)
@given(token=st.text(max_size=300), path=st.text(max_size=80), ip=st.one_of(st.none(), st.text(max_size=40)))
def test_fuzz_akamai_and_fastly(token: str, path: str, ip: str | None) -> None:
    for verify in (
        lambda: EdgeAuthVerifier(AKAMAI_KEY).verify(token, path=path, client_ip=ip, now=NOW),
        lambda: EdgeAuthVerifier(AKAMAI_KEY, escape_early=True).verify(token, path=path, client_ip=ip, now=NOW),
        lambda: FastlyVerifier(FASTLY_KEY).verify(token, path=path, now=NOW),
    ):
        try:
            verify()
        except (TokenInvalid, TokenExpired):
            pass


@settings(max_examples=200, deadline=None)
@given(
    query=st.lists(
        st.tuples(
            st.sampled_from(["Expires", "Policy", "Signature", "Key-Pair-Id", "Hash-Algorithm", "x"]),
            st.one_of(st.text(max_size=60), st.from_regex(r"[A-Za-z0-9~_-]{0,64}", fullmatch=True)),
        ),
        max_size=6,
    ),
    tail=st.text(max_size=40),
    ip=st.one_of(st.none(), st.text(max_size=20)),
)
def test_fuzz_cloudfront(query: list[tuple[str, str]], tail: str, ip: str | None, cf_verifier: CloudFrontVerifier) -> None:
    url = "https://d/" + tail + "?" + "&".join(f"{k}={v}" for k, v in query)
    try:
        cf_verifier.verify_url(url, client_ip=ip, now=NOW)
    except (TokenInvalid, TokenExpired):
        pass
    cookies = {f"CloudFront-{k}": v for k, v in query}
    try:
        cf_verifier.verify_cookies(url, cookies, client_ip=ip, now=NOW)
    except (TokenInvalid, TokenExpired):
        pass


@settings(max_examples=150, deadline=None)
@given(policy=st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=20)),
    lambda children: st.one_of(st.lists(children, max_size=3), st.dictionaries(st.sampled_from(
        ["Statement", "Resource", "Condition", "DateLessThan", "DateGreaterThan", "IpAddress",
         "AWS:EpochTime", "AWS:SourceIp", "x"]), children, max_size=3)),
    max_leaves=12,
))
def test_fuzz_signed_but_odd_policies(policy: object, rsa_key: rsa.RSAPrivateKey, cf_verifier: CloudFrontVerifier) -> None:
    # A validly signed policy with arbitrary JSON must still only give the specific errors.
    text = json.dumps(policy, separators=(",", ":"))
    signed = CloudFrontSigner(KEY_PAIR_ID, rsa_key).custom_url(URL, text)
    try:
        cf_verifier.verify_url(signed, client_ip="203.0.113.1", now=NOW)
    except (TokenInvalid, TokenExpired):
        pass
