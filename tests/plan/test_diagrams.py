"""The pack's Mermaid diagrams: SVG through mermaid in Debian's headless Chromium, or .mmd and a note."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from flowcast.plan import build_pack
from flowcast.plan.diagrams import RENDER_ENV, unavailable_reason
from tests.browser import chromium_available
from tests.plan.conftest import DAY, PSS

SVG = "{http://www.w3.org/2000/svg}"


def _texts(svg_path) -> list[str]:
    """Each <text> element's words joined (Mermaid splits labels into tspans)."""
    root = ET.fromstring(svg_path.read_text())
    assert root.tag == f"{SVG}svg"
    out = []
    for el in root.iter(f"{SVG}text"):
        words = "".join(el.itertext())
        out.append(" ".join(words.split()))
    return out


@pytest.mark.skipif(not chromium_available(), reason="Debian chromium is not installed")
def test_diagrams_render_to_svg_with_node_labels(tmp_path, monkeypatch):
    monkeypatch.delenv(RENDER_ENV, raising=False)
    assert unavailable_reason() is None, unavailable_reason()
    res = build_pack(PSS, tmp_path, today=DAY)
    folder = res.files["diagrams"]
    assert folder.name == "stream_diagrams_pss_20261125_v1"
    assert {p.name for p in folder.iterdir()} == {"flow.mmd", "flow.svg", "failover.mmd", "failover.svg"}
    flow = " | ".join(_texts(folder / "flow.svg"))
    # Mermaid wraps long labels into lines (tspans) at widths that depend on the browser's
    # font metrics, and a wrap eats the space it breaks at: compare without whitespace.
    packed = "".join(flow.split())
    n = int(res.plan.origins.count.value)
    for label in ("Source: RTMP / SRT / file", "CMAF packager", f"Origins x{n}", "bunny edges", "Players: LL-HLS / LL-DASH",
                  "cbcs encryption", f"TURN x{int(res.plan.rtc.turn_servers.value)}", "WebRTC viewers", "beacons / CMCD"):
        assert "".join(label.split()) in packed, (label, flow)
    failover = " | ".join(_texts(folder / "failover.svg"))
    assert "Steering server" in failover and "PATHWAY-PRIORITY [B, A]" in failover
    arch = res.files["architecture.md"].read_text()
    assert "rendered to SVG" in arch and "flow.svg" in arch


def test_without_renderer_the_mmd_stays_and_the_pack_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv(RENDER_ENV, "0")
    res = build_pack(PSS, tmp_path, "pt-BR", today=DAY)
    folder = res.files["diagrams"]
    assert {p.name for p in folder.iterdir()} == {"flow.mmd", "failover.mmd"}
    assert (folder / "flow.mmd").read_text().startswith("flowchart LR")
    arch = res.files["architecture.md"].read_text()
    assert "Diagramas não renderizados" in arch and RENDER_ENV in arch
