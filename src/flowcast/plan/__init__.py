"""Kickoff brief -> architecture pack (decisions, runnable config, cost/carbon, documents, IaC).

    from flowcast.plan import build_pack
    result = build_pack("examples/brief_pixel_streaming_brazil.yaml", "pack/", "pt-BR")
"""

from flowcast.plan.brief import Brief, BriefError, load_brief, parse_brief
from flowcast.plan.decide import Plan, decide
from flowcast.plan.messages import LANGS, Msg, UnknownLanguage
from flowcast.plan.pack import PackResult, build_pack
from flowcast.plan.probe import ProbeError, probe_source

__all__ = [
    "LANGS", "Brief", "BriefError", "Msg", "PackResult", "Plan", "ProbeError", "UnknownLanguage",
    "build_pack", "decide", "load_brief", "parse_brief", "probe_source",
]
