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
