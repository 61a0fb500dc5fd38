"""The pack's config runs: `flowcast up --config stream_config_...yaml` serves the planned ladder."""

from __future__ import annotations

import httpx
import pytest

from flowcast.plan import build_pack
from tests.browser import chromium_available, launch_chromium, open_player, read_stats, wait_playing
from tests.e2e.livestack import LiveProcess
from tests.plan.conftest import CH247, DAY


@pytest.mark.slow
def test_generated_config_runs_locally(tmp_path):
    res = build_pack(CH247, tmp_path / "pack", today=DAY)
    live = LiveProcess(tmp_path, "--config", str(res.config_path))
    try:
        live.wait_ready("/live/ch247/master.m3u8", timeout=30)
        master = httpx.get(live.url("/live/ch247/master.m3u8"), timeout=5).text
        for rung in ("720p", "360p", "240p"):
            assert f"{rung}/index.m3u8" in master
        assert "1080p" not in master  # scaled down for a 2-core machine, as the config's header says
        if chromium_available():
            # And a real player plays it.
            with launch_chromium() as browser:
                page = open_player(browser, live.url("/?player=hls&stream=ch247&consent=no"))
                stats = wait_playing(page, timeout=40)
                page.wait_for_timeout(3000)
                after = read_stats(page)
                assert after["currentTime"] > stats["currentTime"] and not after["errors"], after
    finally:
        live.stop()
