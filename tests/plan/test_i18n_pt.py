"""A pt-BR pack carries no English prose: formula text, cost items, levers and CDN text come from the catalogue."""

from __future__ import annotations

import re

import pytest

from flowcast.plan import build_pack, parse_brief
from tests.plan.conftest import CH247, DAY, PSS, raw, with_

# Phrases of the English pack's prose (formula text, cost and carbon items, levers, cache
# policies, security steps, load plan); code, HCL, YAML and product names are not prose.
ENGLISH = (
    "tiered list price", "session-h", "warm pool", "always on", "live h", "largest part in", "largest segment in",
    "scene-cut off", "reorder delay", "no B-frames", "top rung", "bottom rung", "fits the worst network",
    "sum over device x network shares", "CDN fetchers", "per 2-core origin", "viewer-h/month", "instance-h",
    "GB-month", "CDN egress", "CDN requests", "transcode CPU", "recording storage", "TURN relay egress",
    "TURN + SFU instances", "WebRTC egress", "network transmission", "grid intensity", "commit-based pricing",
    "USD/month", "names never reused", "never cached", "init segments", "plain playlist", "blocking playlist",
    "Key server generates", "Packager encrypts", "Forensic watermark on premium", "Keys rotate every",
    "token authentication", "stereo", "instances", "frames", "capture+NVENC", "data channel", "spread over 2 zones",
    "Price sources", "Checked on the page", "N+1 origins across two availability zones", "clipped to",
    "Viewer ramp", "not automated", "shielding POP", "tiered distribution", "carries the traffic",
)


def _prose(text: str) -> str:
    text = re.sub(r"```.*?```", "", text, flags=re.S)  # code blocks (shell, Mermaid)
    return re.sub(r"`[^`]*`", "", text)  # inline code


def _pack_prose(res) -> str:
    return "\n".join(_prose(p.read_text()) for k, p in res.files.items() if k.endswith(".md"))


@pytest.mark.parametrize("brief", ["pss", "ch", "pss-multi-cdn"])
def test_pt_br_pack_has_no_english_prose(tmp_path, brief):
    b = {"pss": raw(PSS), "ch": raw(CH247), "pss-multi-cdn": with_(raw(PSS), "constraints.cdn_contracts", ["fastly", "akamai"])}[brief]
    en = _pack_prose(build_pack(parse_brief(b), tmp_path / "en", "en", today=DAY))
    pt = _pack_prose(build_pack(parse_brief(b), tmp_path / "pt", "pt-BR", today=DAY))
    present = [p for p in ENGLISH if p in en]
    assert len(present) >= 25, present  # the list really is the English pack's prose
    leaked = [p for p in present if p in pt]
    assert not leaked, leaked
    # grouped numbers inside translated sentences use the Brazilian thousands separator
    if brief == "pss":
        assert re.search(r"Acima do orçamento em \d{1,3}(\.\d{3})+ BRL", pt) and re.search(r"\[\d{1,3}(\.\d{3})+ USD/mês\]", pt)
