"""Broadcast mode: 6 s segments, no parts, plain HLS and DASH that FFmpeg decodes."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import httpx
import pytest

from flowcast.package import conformance
from flowcast.package.m3u8 import parse_media_playlist
from flowcast.package.mpd import parse_mpd

from .livestack import LiveProcess

pytestmark = pytest.mark.slow


def test_broadcast_mode(tmp_path: Path) -> None:
    live = LiveProcess(tmp_path, "--mode", "broadcast")
    try:
        live.wait_ready(timeout=30)
        deadline = time.monotonic() + 30
        while True:
            r = httpx.get(live.url("/live/live/720p/index.m3u8"), timeout=5)
            text = r.text
            if r.status_code == 200 and len((pl := parse_media_playlist(text)).segments) >= 2:
                break
            assert time.monotonic() < deadline, text
            time.sleep(0.5)
        assert "#EXT-X-PART" not in text and "#EXT-X-PRELOAD-HINT" not in text
        assert pl.target_duration == 6
        assert all(abs(s.duration - 6.0) < 0.05 for s in pl.segments)
        assert conformance.errors(conformance.check_media_playlist(text)) == []
        # A blocking reload works on segments alone (no parts to wait for).
        msn = pl.segments[-1].msn + 1
        t0 = time.monotonic()
        r = httpx.get(live.url(f"/live/live/720p/index.m3u8?_HLS_msn={msn}"), timeout=20)
        assert r.status_code == 200 and parse_media_playlist(r.text).segments[-1].msn >= msn
        assert time.monotonic() - t0 < 7
        mpd_text = httpx.get(live.url("/live/live/manifest.mpd"), timeout=5).text
        assert "availabilityTimeOffset" not in mpd_text
        assert conformance.errors(conformance.check_mpd(mpd_text, low_latency=False)) == []
        assert parse_mpd(mpd_text).type == "dynamic"
        out = subprocess.run(
            ["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-i", live.url("/live/live/master.m3u8"),
             "-t", "4", "-f", "null", "-"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert out.returncode == 0 and out.stderr.strip() == "", out.stderr
    finally:
        live.stop()
