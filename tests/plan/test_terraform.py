"""Terraform from the pack parses with python-hcl2 and has what the plan decided."""

from __future__ import annotations

import hcl2  # test dependency: python-hcl2==8.1.4


def _unquote(x):
    if isinstance(x, dict):
        return {k.strip('"'): _unquote(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_unquote(v) for v in x]
    if isinstance(x, str):
        return x.strip('"')
    return x


def _resources(tf_dir):
    out = {}
    for f in tf_dir.glob("*.tf"):
        doc = _unquote(hcl2.loads(f.read_text()))
        for block in doc.get("resource", []):
            for rtype, named in block.items():
                for name, body in named.items():
                    out[f"{rtype}.{name}"] = body
    return out


def test_terraform_origins_two_zones_with_health_checks(packs):
    for res in packs.values():
        r = _resources(res.files["terraform"])
        asg = r["aws_autoscaling_group.origin"]
        assert asg["vpc_zone_identifier"] == "${var.subnet_ids}" and asg["health_check_type"] == "ELB"
        assert r["aws_lb_target_group.origin"]["health_check"][0]["path"] == "/time"
        variables = _unquote(hcl2.loads((res.files["terraform"] / "variables.tf").read_text()))["variable"]
        count = next(v["origin_count"] for v in variables if "origin_count" in v)
        assert count["default"] == res.plan.origins.count.value >= 2


def test_terraform_cloudfront(packs):
    r = _resources(packs["ch"].files["terraform"])
    dist = r["aws_cloudfront_distribution.live"]
    assert dist["origin"][0]["origin_shield"][0]["enabled"] is True
    patterns = {b["path_pattern"]: b["cache_policy_id"] for b in dist["ordered_cache_behavior"]}
    assert patterns["*.m3u8"].endswith("cache_policy.playlist.id}") and patterns["*.m4s"].endswith("cache_policy.media.id}")
    assert r["aws_cloudfront_cache_policy.playlist"]["max_ttl"] == 36  # 6 x 6 s target duration
    # the Brazil pack moved to bunny: no CloudFront resources, a note instead
    assert not (packs["pss"].files["terraform"] / "cloudfront.tf").exists()
    assert (packs["pss"].files["terraform"] / "cdn.md").exists()


# ---- Fastly and Akamai -------------------------------------------------------------------

import json
import re

import pytest

from flowcast.origin.cache import CachePolicy
from flowcast.origin.store import ResourceKind
from flowcast.protect.cdn.akamai import TOKEN_NAME, EdgeAuthSigner, EdgeAuthVerifier
from flowcast.protect.cdn.fastly import QUERY_PARAM, FastlySigner


@pytest.fixture(scope="module")
def multi_cdn(tmp_path_factory):
    """The Brazil brief with Fastly and Akamai contracts: Fastly primary, Akamai second pathway."""
    from flowcast.plan import build_pack, parse_brief
    from tests.plan.conftest import DAY, PSS, raw, with_

    brief = parse_brief(with_(raw(PSS), "constraints.cdn_contracts", ["fastly", "akamai"]))
    return build_pack(brief, tmp_path_factory.mktemp("multi"), today=DAY)


def _origin_max_age(cc: str) -> int:
    return int(cc.rsplit("max-age=", 1)[1])


def _origin_ttls(td: float) -> dict[str, int]:
    """What `flowcast up` itself sends, computed here from the origin's policy."""
    p = CachePolicy()
    return {
        "playlist": _origin_max_age(p.playlist(td, blocking=False, ended=False)),
        "playlist_blocking": _origin_max_age(p.playlist(td, blocking=True, ended=False)),
        "manifest": _origin_max_age(p.media(ResourceKind.MANIFEST, held=False, target_duration=td)),
        "media": _origin_max_age(p.media(ResourceKind.SEGMENT, held=False, target_duration=td)),
        "init": _origin_max_age(p.media(ResourceKind.INIT, held=False, target_duration=td)),
    }


def test_multi_cdn_pack_says_which_and_why(multi_cdn):
    plan = multi_cdn.plan
    assert plan.cdn.name == "fastly" and plan.cdn.secondary == ("akamai",)
    tf = multi_cdn.files["terraform"]
    assert {"fastly.tf", "akamai.tf", "akamai_rules.json"} <= {p.name for p in tf.iterdir()}
    assert not (tf / "cloudfront.tf").exists() and not (tf / "cdn.md").exists()
    versions = _unquote(hcl2.loads((tf / "versions.tf").read_text()))
    providers = versions["terraform"][0]["required_providers"][0]
    assert providers["fastly"]["source"] == "fastly/fastly" and providers["akamai"]["source"] == "akamai/akamai"
    decisions = multi_cdn.files["decisions.md"].read_text()
    assert "**fastly**" in decisions and "fastly.tf" in decisions and "Multi-CDN" in decisions and "akamai" in decisions
    assert "shielding POP GRU" in decisions
    arch = multi_cdn.files["architecture.md"].read_text()
    assert 'SH["Shielding POP<br/>GRU"]' in arch and "akamai edges<br/>steering pathway B" in arch


def test_fastly_backends_health_checks_and_ttls(multi_cdn):
    r = _resources(multi_cdn.files["terraform"])
    svc = r["fastly_service_vcl.live"]
    (backend,) = svc["backend"]
    (hc,) = svc["healthcheck"]
    assert backend["address"] == "${aws_lb.origin.dns_name}" and backend["healthcheck"] == hc["name"]
    assert backend["shield"] == "${local.fastly_shield}"
    assert hc["path"] == "/time" and hc["expected_response"] == 200
    td = multi_cdn.plan.distribution.segment_s.value
    want = _origin_ttls(td)
    ttls = {c["name"]: c["ttl"] for c in svc["cache_setting"] if c["action"] == "cache"}
    assert ttls == want, (ttls, want)
    assert want["playlist_blocking"] == 12 and want["playlist"] == 1  # 2 s target duration
    conds = {c["name"]: c["statement"] for c in svc["condition"]}
    assert "_HLS_msn" in conds["playlist_blocking"] and "m3u8" in conds["playlist"]
    assert any(c["action"] == "pass" and c["cache_condition"] == "license" for c in svc["cache_setting"])


def test_fastly_vcl_token_check_matches_the_signer(multi_cdn):
    r = _resources(multi_cdn.files["terraform"])
    svc = r["fastly_service_vcl.live"]
    (snippet,) = svc["snippet"]
    vcl = snippet["content"]
    assert snippet["type"] == "recv"
    # the same query parameter and token grammar as FastlySigner
    assert f'subfield(req.url.qs, "{QUERY_PARAM}", "&")' in vcl
    grammar = re.search(r'var\.token !~ "\^(.+?)\$"', vcl).group(1)
    signer = FastlySigner("c2VjcmV0LWtleS0xMjM0NQ==")
    token = signer.token("/live/pss/720p/part_1_0.m4s", expires=1_900_000_000)
    m = re.fullmatch(grammar, token)
    assert m and m.group(1) == "1900000000" and m.group(2) == token.split("_")[1]
    assert not re.fullmatch(grammar, token + "0") and not re.fullmatch(grammar, "01_" + "a" * 40)
    # HMAC-SHA1 over path + exp with the base64-decoded secret, hex, 403 / 410 as the verifier
    assert 'digest.hmac_sha1(digest.base64_decode(table.lookup(token_secrets, "secret")), req.url.path var.exp)' in vcl
    assert 'regsub(' in vcl and '"^0x"' in vcl and "digest.secure_is_equal" in vcl
    assert 'error 403' in vcl and 'error 410' in vcl
    assert "!time.is_after(std.integer2time(std.atoi(var.exp)), now)" in vcl  # expired at now >= exp
    # checked at the edge only: the shield POP sees the URL after the edge stripped the token
    assert "fastly.ff.visits_this_service == 0" in vcl.split("subfield(")[0]
    # the secret is a sensitive variable in a write-only dictionary, never in the VCL
    assert svc["dictionary"][0]["write_only"] is True
    items = r["fastly_service_dictionary_items.token_secrets"]
    assert items["items"]["secret"] == "${var.fastly_token_secret_b64}"
    text = (multi_cdn.files["terraform"] / "fastly.tf").read_text()
    assert re.search(r'variable "fastly_token_secret_b64" \{[^}]*sensitive\s*=\s*true', text)


def _render_rules(text: str, **values) -> dict:
    """Terraform's templatefile(), for the placeholders the rule tree uses."""
    out = re.sub(r"\$\{(\w+)\}", lambda m: str(values[m.group(1)]), text)
    return json.loads(out)


def _walk(rule):
    yield rule
    for child in rule.get("children", []):
        yield from _walk(child)


def test_akamai_property_rules_and_edgeauth(multi_cdn):
    tf = multi_cdn.files["terraform"]
    r = _resources(tf)
    prop = r["akamai_property.live"]
    eh = r["akamai_edge_hostname.live"]
    assert prop["hostnames"][0]["cname_to"] == "${akamai_edge_hostname.live.edge_hostname}"
    assert "akamai_rules.json" in prop["rules"] and eh["edge_hostname"].endswith(".akamaized.net")
    raw_rules = (tf / "akamai_rules.json").read_text()
    assert "${edgeauth_key_hex}" in raw_rules  # the key is filled in at apply time, not in the pack
    tree = _render_rules(raw_rules, origin_hostname="origin.example", cp_code_id=12345, edgeauth_key_hex="00ff")
    root = tree["rules"]
    beh = {b["name"]: b["options"] for b in root["behaviors"]}
    assert beh["origin"]["hostname"] == "origin.example" and beh["cpCode"]["value"]["id"] == 12345
    assert beh["tieredDistribution"]["enabled"] is True and beh["tieredDistribution"]["tieredDistributionMap"]
    tok = beh["verifyTokenAuthorization"]
    verifier = EdgeAuthVerifier("00ff")  # the defaults our signer and verifier use
    assert tok["locationId"] == TOKEN_NAME and tok["location"] == "QUERY_STRING"
    assert tok["algorithm"] == verifier.algorithm.upper() == "SHA256"
    assert tok["escapeHmacInputs"] is verifier.escape_early is False and tok["key"] == "00ff"
    # a token from our signer carries exactly the fields the behavior checks
    t = EdgeAuthSigner("00ff").acl_token("/live/pss/*", expires=1_900_000_000)
    assert verifier.verify(t, path="/live/pss/720p/index.m3u8", now=1_800_000_000).acl == ("/live/pss/*",)
    # caching per path = the origin's Cache-Control
    want = _origin_ttls(multi_cdn.plan.distribution.segment_s.value)
    ttl = {}
    for rule in _walk(root):
        for b in rule.get("behaviors", []):
            if b["name"] == "caching" and b["options"]["behavior"] == "MAX_AGE":
                ttl[rule["name"]] = int(b["options"]["ttl"].rstrip("s"))
    assert ttl == {"playlists": want["playlist"], "blocking playlists": want["playlist_blocking"],
                   "manifests": want["manifest"], "media": want["media"], "init segments": want["init"]}


def test_unsigned_fastly_has_no_token_check(tmp_path):
    from flowcast.plan import build_pack, parse_brief
    from tests.plan.conftest import CH247, DAY, raw, with_

    res = build_pack(parse_brief(with_(raw(CH247), "constraints.cdn_contracts", ["fastly"])), tmp_path, today=DAY)
    r = _resources(res.files["terraform"])
    vcl = r["fastly_service_vcl.live"]["snippet"][0]["content"]
    assert "hmac" not in vcl and "_HLS_throughput" in vcl
    assert "fastly_service_dictionary_items.token_secrets" not in r
    ttls = {c["name"]: c["ttl"] for c in r["fastly_service_vcl.live"]["cache_setting"] if c["action"] == "cache"}
    assert ttls["playlist"] == 3 and ttls["media"] == 86400  # 6 s broadcast segments
