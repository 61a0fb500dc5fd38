"""Shared Chromium harness for the e2e tests and the latency benchmark.

Drives Debian's /usr/bin/chromium through the Python ``playwright`` package; Playwright's
own browser download never runs. Both APIs are offered:

sync (pytest)::

    with launch_chromium() as browser:
        page = open_player(browser, f"{base}/?player=hls")
        wait_playing(page, 20)
        stats = read_stats(page)

async (benchmarks)::

    async with launch_chromium_async() as browser:
        page = await open_player_async(browser, url)
        await wait_playing_async(page, 20)

``browser`` is a Playwright ``BrowserContext`` (a persistent context on a fresh temporary
profile). Pages expose ``window.flowcastStats`` (see src/flowcast/web/player.js).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

# Must be set before playwright is imported anywhere: no browser download, ever.
os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS: tuple[str, ...] = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
)
VIEWPORT = {"width": 1280, "height": 800}


class PlayerTimeout(AssertionError):
    """The player did not reach the awaited state in time; carries the last stats."""

    def __init__(self, message: str, stats: dict[str, Any] | None) -> None:
        super().__init__(f"{message}; last stats: {stats}")
        self.stats = stats


def chromium_available() -> bool:
    return Path(CHROMIUM).exists() and os.access(CHROMIUM, os.X_OK)


def _launch_kwargs() -> dict[str, Any]:
    # headless=False so that Playwright adds no headless flag of its own; ours
    # (--headless=new) is the only one on the command line.
    return {
        "executable_path": CHROMIUM,
        "headless": False,
        "args": list(CHROMIUM_FLAGS),
        "viewport": VIEWPORT,
        "env": {**os.environ, "PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD": "1"},
    }


# ---- sync API ------------------------------------------------------------------------


@contextlib.contextmanager
def launch_chromium() -> Iterator[Any]:
    """A Chromium BrowserContext on a fresh temporary --user-data-dir."""
    from playwright.sync_api import sync_playwright

    profile = tempfile.mkdtemp(prefix="flowcast-chromium-")
    try:
        with sync_playwright() as pw:
            context = pw.chromium.launch_persistent_context(profile, **_launch_kwargs())
            try:
                yield context
            finally:
                context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def open_player(browser: Any, url: str) -> Any:
    """Open the player page at ``url`` in a new tab; console errors land in page.console_log."""
    page = browser.new_page()
    page.console_log = []  # type: ignore[attr-defined]
    page.on("console", lambda m: page.console_log.append(f"{m.type}: {m.text}"))
    page.on("pageerror", lambda e: page.console_log.append(f"pageerror: {e}"))
    page.goto(url, wait_until="domcontentloaded")
    return page


def read_stats(page: Any) -> dict[str, Any]:
    """A snapshot of window.flowcastStats ({} before the page script ran)."""
    return page.evaluate("() => JSON.parse(JSON.stringify(window.flowcastStats || {}))")


def wait_playing(page: Any, timeout: float = 20.0) -> dict[str, Any]:
    """Wait until the first frame is out and playback is progressing; returns the stats."""
    deadline = time.monotonic() + timeout
    stats: dict[str, Any] | None = None
    while time.monotonic() < deadline:
        stats = read_stats(page)
        if stats.get("playing") and stats.get("startupMs") is not None and stats.get("currentTime", 0) > 0:
            return stats
        page.wait_for_timeout(200)
    raise PlayerTimeout(f"not playing after {timeout}s", stats)


def wait_stats(page: Any, predicate: Any, timeout: float = 10.0) -> dict[str, Any]:
    """Poll the stats until ``predicate(stats)`` is true."""
    deadline = time.monotonic() + timeout
    stats: dict[str, Any] | None = None
    while time.monotonic() < deadline:
        stats = read_stats(page)
        if predicate(stats):
            return stats
        page.wait_for_timeout(200)
    raise PlayerTimeout(f"condition not met after {timeout}s", stats)


_CANVAS_NONEMPTY_JS = """(sel) => {
  const el = document.querySelector(sel);
  if (!el) return false;
  let canvas = el;
  if (el.tagName === 'VIDEO') {
    if (!el.videoWidth) return false;
    canvas = document.createElement('canvas');
    canvas.width = 64; canvas.height = 36;
    canvas.getContext('2d').drawImage(el, 0, 0, 64, 36);
  }
  const ctx = canvas.getContext('2d');
  if (!ctx) return false;
  const d = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
  let min = 255, max = 0;
  for (let i = 0; i < d.length; i += 4) {
    const y = (d[i] + d[i + 1] + d[i + 2]) / 3;
    if (d[i + 3] === 0) continue;
    if (y < min) min = y;
    if (y > max) max = y;
  }
  return max - min > 16;
}"""


def canvas_nonempty(page: Any, selector: str) -> bool:
    """True if the <canvas> (or <video> frame) at ``selector`` shows more than one flat colour."""
    return bool(page.evaluate(_CANVAS_NONEMPTY_JS, selector))


def screenshot(page: Any, path: str | os.PathLike[str], selector: str | None = None) -> Path:
    """Save a PNG of the page (or of one element) and return its path."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    if selector:
        page.locator(selector).screenshot(path=str(out))
    else:
        page.screenshot(path=str(out))
    return out


# ---- async API -----------------------------------------------------------------------


@contextlib.asynccontextmanager
async def launch_chromium_async() -> AsyncIterator[Any]:
    """Async twin of launch_chromium()."""
    from playwright.async_api import async_playwright

    profile = tempfile.mkdtemp(prefix="flowcast-chromium-")
    try:
        async with async_playwright() as pw:
            context = await pw.chromium.launch_persistent_context(profile, **_launch_kwargs())
            try:
                yield context
            finally:
                await context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


async def open_player_async(browser: Any, url: str) -> Any:
    page = await browser.new_page()
    page.console_log = []  # type: ignore[attr-defined]
    page.on("console", lambda m: page.console_log.append(f"{m.type}: {m.text}"))
    page.on("pageerror", lambda e: page.console_log.append(f"pageerror: {e}"))
    await page.goto(url, wait_until="domcontentloaded")
    return page


async def read_stats_async(page: Any) -> dict[str, Any]:
    return await page.evaluate("() => JSON.parse(JSON.stringify(window.flowcastStats || {}))")


async def wait_playing_async(page: Any, timeout: float = 20.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    stats: dict[str, Any] | None = None
    while time.monotonic() < deadline:
        stats = await read_stats_async(page)
        if stats.get("playing") and stats.get("startupMs") is not None and stats.get("currentTime", 0) > 0:
            return stats
        await page.wait_for_timeout(200)
    raise PlayerTimeout(f"not playing after {timeout}s", stats)


async def canvas_nonempty_async(page: Any, selector: str) -> bool:
    return bool(await page.evaluate(_CANVAS_NONEMPTY_JS, selector))


async def screenshot_async(page: Any, path: str | os.PathLike[str], selector: str | None = None) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    if selector:
        await page.locator(selector).screenshot(path=str(out))
    else:
        await page.screenshot(path=str(out))
    return out
