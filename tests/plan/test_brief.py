"""Invalid briefs: each error names the dotted field and says what is allowed."""

from __future__ import annotations

import pytest

from flowcast.plan import BriefError, load_brief, parse_brief
from tests.plan.conftest import CH247, PSS, with_


@pytest.mark.parametrize("path", [PSS, CH247])
def test_examples_are_valid(path):
    assert load_brief(path).pipeline


@pytest.mark.parametrize(
    "field,value,expect",
    [
        ("inputs.audience.regions", [{"region": "mars", "share": 1.0}], ["inputs.audience.regions.0.region", "south-america"]),
        ("inputs.budget.currency", "GBP", ["inputs.budget.currency", "'USD', 'BRL' or 'EUR'"]),
        ("inputs.audience.networks", {"wifi": 0.5}, ["inputs.audience", "networks shares must add up to 1.0"]),
        ("inputs.audience.devices", {"watch": 1.0}, ["inputs.audience.devices.watch", "desktop"]),
        ("constraints.drm", {"required": True}, ["constraints.drm", "systems must list at least one"]),
        ("latency_targets.near_live.glass_to_glass_p95_s", 0.1, ["latency_targets.near_live.glass_to_glass_p95_s", "greater than 0.5"]),
        ("pipeline", "Bad Name!", ["pipeline", "pattern"]),
        ("inputs.codecs_allowed", ["vp9"], ["inputs.codecs_allowed.0", "'h264', 'h265' or 'av1'"]),
        ("constraints.gpu", True, ["constraints.gpu", "unknown field"]),
    ],
)
def test_invalid_field_is_named(pss_raw, field, value, expect):
    with pytest.raises(BriefError) as exc:
        parse_brief(with_(pss_raw, field, value))
    msg = str(exc.value)
    for e in expect:
        assert e in msg, msg


def test_missing_required_field(pss_raw):
    del pss_raw["inputs"]["budget"]
    with pytest.raises(BriefError, match=r"inputs\.budget: Field required"):
        parse_brief(pss_raw)


def test_interactive_needs_sessions(pss_raw):
    with pytest.raises(BriefError, match="peak_interactive_sessions"):
        parse_brief(with_(pss_raw, "inputs.audience.peak_interactive_sessions", 0))


def test_not_a_mapping():
    with pytest.raises(BriefError, match="mapping"):
        parse_brief(["a"])
