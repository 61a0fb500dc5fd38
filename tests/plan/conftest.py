from __future__ import annotations

import os
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import yaml

# Packs built by these tests keep their diagrams as .mmd (no Chromium per pack); the diagram
# test switches rendering back on for itself.
os.environ.setdefault("FLOWCAST_PLAN_RENDER", "0")

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
PSS = EXAMPLES / "brief_pixel_streaming_brazil.yaml"
CH247 = EXAMPLES / "brief_247_channel_global.yaml"
DAY = date(2026, 11, 25)


def raw(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def with_(d: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    """A deep copy of a brief mapping with one dotted field set."""
    import copy

    out = copy.deepcopy(d)
    cur = out
    *head, last = dotted.split(".")
    for k in head:
        cur = cur.setdefault(k, {})
    cur[last] = value
    return out


@pytest.fixture
def pss_raw() -> dict[str, Any]:
    return raw(PSS)


@pytest.fixture
def ch_raw() -> dict[str, Any]:
    return raw(CH247)


@pytest.fixture(scope="module")
def packs(tmp_path_factory):
    from flowcast.plan import build_pack

    d = tmp_path_factory.mktemp("packs")
    return {"pss": build_pack(PSS, d / "pss", today=DAY), "ch": build_pack(CH247, d / "ch", today=DAY)}
