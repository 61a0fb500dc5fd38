"""hls.js in Debian's headless Chromium fails over between the Content Steering pathways of
two redundant `flowcast up` origins when the one it plays from is SIGKILLed.

The page comes from origin-2 and loads the multivariant playlist from origin-1 (CORS), so
the page itself survives the kill. Same source caveat as test_drills_live: both origins
encode the wall-clock test source, aligned by number, differing in encoder run-in.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from flowcast.origin.server import free_port
from tests.browser import chromium_available, launch_chromium, open_player, read_stats, wait_playing
from tests.e2e.livestack import LiveProcess

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(not chromium_available(), reason="Debian chromium is installed by `make test`"),
]
TD = 2.0

CONFIG = """
ladder:
  rungs:
    - {{name: 360p, width: 640, height: 360, video_bitrate_kbps: 600, profile: main, level: "3.0"}}
origin:
  redundant: ["http://127.0.0.1:{a}", "http://127.0.0.1:{b}"]
telemetry:
  enabled: false
"""

PATHWAY_JS = """() => {
  const h = window.flowcastPlayer;
  if (!h || !h.levels || h.currentLevel < 0) return null;
  const l = h.levels[h.currentLevel];
  return l ? (l.pathwayId || null) : null;
}"""


@pytest.fixture()
def pair(tmp_path: Path) -> Iterator[tuple[LiveProcess, LiveProcess]]:
    a, b = free_port(), free_port()
    while b == a:
        b = free_port()
    cfg = tmp_path / "redundant.yaml"
    cfg.write_text(CONFIG.format(a=a, b=b))
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    procs = [LiveProcess(tmp_path / "a", "--config", str(cfg), port=a), LiveProcess(tmp_path / "b", "--config", str(cfg), port=b)]
    try:
        for p in procs:
            p.wait_ready(timeout=60.0)
        yield procs[0], procs[1]
    finally:
        for p in procs:
            p.stop()


def test_hls_js_fails_over_to_the_other_pathway(pair: tuple[LiveProcess, LiveProcess]) -> None:
    a, b = pair
    with launch_chromium() as browser:
        page = open_player(browser, b.url(f"/?player=hls&telemetry=off&src={a.url('/live/live/master.m3u8')}"))
        try:
            wait_playing(page, timeout=30)
            page.wait_for_timeout(3000)
            assert page.evaluate(PATHWAY_JS) == "origin-1", page.console_log[-10:]
            before = read_stats(page)
            os.kill(a.proc.pid, signal.SIGKILL)
            killed = time.monotonic()
            switched_after = None
            while time.monotonic() - killed < 20:
                page.wait_for_timeout(250)
                if switched_after is None and page.evaluate(PATHWAY_JS) == "origin-2":
                    switched_after = time.monotonic() - killed
                if switched_after is not None and time.monotonic() - killed > switched_after + 8:
                    break
            after = read_stats(page)
            assert switched_after is not None, (after, page.console_log[-20:])
            # playing again from origin-2: the playhead moved on, no fatal error
            assert not after["errors"], after["errors"]
            assert after["currentTime"] - before["currentTime"] > (time.monotonic() - killed) - 2 * TD - 1.0, (before, after)
            # and goes on playing: 2 s of wall time hold > 1 s of media. Once in a loaded run
            # hls.js moved the playhead 2 s back after the switch (a seek into what it had
            # buffered from origin-2); then the next 2 s must show it playing on from there.
            samples = [after["currentTime"]]
            for _ in range(2):
                page.wait_for_timeout(2000)
                samples.append(read_stats(page)["currentTime"])
                if samples[-1] > samples[-2] + 1.0:
                    break
            assert samples[-1] > samples[-2] + 1.0, ("playback must continue on origin-2", samples,
                                                     page.console_log[-20:])
            print(f"hls.js on origin-2 {switched_after:.2f} s after the kill; stalls {after['stalls']}, "
                  f"stall ms {after.get('stallMs')}")
        finally:
            page.close()


def test_dash_js_fails_over_to_the_other_base_url(pair: tuple[LiveProcess, LiveProcess]) -> None:
    a, b = pair
    with launch_chromium() as browser:
        page = open_player(browser, b.url(f"/?player=dash&telemetry=off&src={a.url('/live/live/manifest.mpd')}"))
        try:
            wait_playing(page, timeout=30)
            page.wait_for_timeout(3000)
            before = read_stats(page)
            os.kill(a.proc.pid, signal.SIGKILL)
            killed = time.monotonic()
            page.wait_for_timeout(10000)
            after = read_stats(page)
            elapsed = time.monotonic() - killed
            print(f"dash.js after the kill: played {after['currentTime'] - before['currentTime']:.2f} s of {elapsed:.2f} s, "
                  f"stalls {after['stalls'] - before['stalls']}, errors {after['errors']}")
            # dash.js reports each failed download of the dead BaseURL as a (non-fatal) error
            # event before it excludes that BaseURL; nothing may fail on the live one
            assert all(f":{a.port}/" in e for e in after["errors"]), after["errors"]
            # the other BaseURL took over: at most 2 target durations of playback lost
            assert after["currentTime"] - before["currentTime"] > elapsed - 2 * TD - 1.0, (before, after, page.console_log[-20:])
            page.wait_for_timeout(2000)
            assert read_stats(page)["currentTime"] > after["currentTime"] + 1.0, "playback must continue on origin-2"
        finally:
            page.close()
