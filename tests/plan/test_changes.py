"""Changing one input changes the right outputs (and only those)."""

from __future__ import annotations

from flowcast.config import parse_config
from flowcast.plan import build_pack, decide, parse_brief
from flowcast.plan.runconfig import render_config
from tests.plan.conftest import DAY, with_

import yaml


def test_lower_budget_switches_cdn_then_caps_ladder(ch_raw):
    base = decide(parse_brief(ch_raw))
    assert base.cdn.name == "cloudfront" and not base.adjustments

    cheaper = decide(parse_brief(with_(ch_raw, "inputs.budget.monthly", 2_000_000)))
    assert cheaper.cdn.name == "bunny"
    assert "switched the CDN to bunny" in str(cheaper.adjustments[0])
    assert cheaper.distribution.ladder.rungs[0].name == "1080p"  # unprotected content keeps picture quality first
    assert cheaper.cost.within_budget

    tight = decide(parse_brief(with_(ch_raw, "inputs.budget.monthly", 1_200_000)))
    assert tight.distribution.ladder.rungs[0].name == "720p"
    assert any("capped the top rung at 720p" in str(a) for a in tight.adjustments)
    # the segmenting and protocol decisions do not depend on the budget
    assert tight.distribution.segment_s == base.distribution.segment_s
    assert tight.distribution.protocols == base.distribution.protocols


def test_over_budget_with_no_lever_left_says_so(ch_raw, tmp_path):
    res = build_pack(parse_brief(with_(ch_raw, "inputs.budget.monthly", 1000)), tmp_path, today=DAY)
    assert not res.plan.cost.within_budget
    cost = res.files["cost_carbon.md"].read_text()
    assert "Over budget" in cost and "Biggest levers" in cost


def test_contracted_cdn_is_kept(ch_raw):
    plan = decide(parse_brief(with_(with_(ch_raw, "constraints.cdn_contracts", ["bunny"]), "inputs.budget.monthly", 2_000_000)))
    assert plan.cdn.name == "bunny" and "contract" in str(plan.cdn.reason)


def test_adding_drm_adds_security_and_cpix(ch_raw, tmp_path):
    drm = with_(ch_raw, "constraints.drm", {"required": True, "systems": ["widevine", "fairplay"], "key_rotation_hours": 6})
    plain = build_pack(parse_brief(ch_raw), tmp_path / "plain", today=DAY)
    prot = build_pack(parse_brief(drm), tmp_path / "drm", today=DAY)
    assert plain.plan.security is None
    assert prot.plan.security.scheme == "cbcs" and prot.plan.security.cpix
    assert "CPIX" not in plain.files["security.md"].read_text()
    sec = prot.files["security.md"].read_text()
    assert "CPIX" in sec and "widevine, fairplay" in sec and "6 h" in sec
    assert "DRM / licence outage" in prot.files["runbooks.md"].read_text()
    assert "DRM / licence outage" not in plain.files["runbooks.md"].read_text()
    assert "cloudfront_key_group" in (prot.files["terraform"] / "cloudfront.tf").read_text()
    assert "cloudfront_key_group" not in (plain.files["terraform"] / "cloudfront.tf").read_text()
    cfg = parse_config(yaml.safe_load(render_config(prot.plan)))
    if "protection" in type(cfg).model_fields:
        assert cfg.protection.scheme == "cbcs" and cfg.protection.require_token
        assert cfg.protection.key_rotation_interval == 6 * 3600 // 6


def test_removing_drm_removes_security(pss_raw):
    plan = decide(parse_brief(with_(with_(pss_raw, "constraints.drm", {"required": False}), "inputs.content_rights.premium_content", False)))
    assert plan.security is None


def test_tighter_near_live_target_shrinks_parts(pss_raw):
    plan = decide(parse_brief(with_(pss_raw, "latency_targets.near_live.glass_to_glass_p95_s", 1.5)))
    near = plan.mode("near-live")
    assert near.part_s.value < 0.5 and near.estimate.value <= 1.5 * 0.8


def test_gpu_missing_is_a_risk(pss_raw):
    plan = decide(parse_brief(with_(pss_raw, "constraints.gpu_available", False)))
    assert any("GPU" in str(r) for r in plan.risks)
    assert "h264_nvenc" not in plan.mode("near-live").ffmpeg


def test_mobile_only_audience_tops_at_720p(ch_raw):
    b = with_(ch_raw, "inputs.audience.devices", {"mobile": 1.0})
    plan = decide(parse_brief(b))
    assert plan.distribution.ladder.rungs[0].height == 720


def test_contracted_cdn_is_priced_at_its_own_rates(ch_raw):
    from flowcast.plan import data
    from flowcast.plan.cost import GB_PER_KBPS_HOUR

    for name in ("fastly", "akamai"):
        plan = decide(parse_brief(with_(ch_raw, "constraints.cdn_contracts", [name])))
        assert plan.cdn.name == name and name in str(plan.cdn.reason) and "CloudFront" not in str(plan.cdn.reason)
        assert all(a.key != "adj_cdn" for a in plan.adjustments)  # a contracted CDN is never swapped for budget reasons
        tiers = data.prices()["cdn"][name]["egress"]
        for line in (x for x in plan.cost.lines if x.item == "CDN egress"):
            share = next(r.share for r in plan.brief.inputs.audience.regions if r.region == line.region)
            gb = plan.viewer_hours.value * share * plan.delivered_kbps.value * GB_PER_KBPS_HOUR
            assert line.usd == data.tiered_cost(gb, tiers[line.region]) and line.price_table == f"cdn.{name}"
    cf = decide(parse_brief(ch_raw))
    fastly = decide(parse_brief(with_(ch_raw, "constraints.cdn_contracts", ["fastly"])))
    assert fastly.cost.total_usd != cf.cost.total_usd
