"""Signed URLs on every media resource of a running `flowcast up --require-token`."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from flowcast.origin.access import KID, SECRET_ENV
from flowcast.package.m3u8 import parse_media_playlist
from flowcast.protect.tokens import TokenSigner
from tests.browser import chromium_available, launch_chromium, open_player, read_stats, wait_playing

from .livestack import LiveProcess

pytestmark = pytest.mark.slow

SECRET = bytes(range(32))


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveProcess, TokenSigner]]:
    mp = pytest.MonkeyPatch()
    mp.setenv(SECRET_ENV, SECRET.hex())
    signer = TokenSigner({KID: SECRET}, KID)
    live = LiveProcess(tmp_path_factory.mktemp("secured"), "--require-token")
    try:
        live.wait_ready(f"/live/live/master.m3u8?token={signer.sign('/live/live/', ttl=600)}")
        yield live, signer
    finally:
        live.stop()
        mp.undo()


def _resources(live: LiveProcess, token: str) -> list[str]:
    """One URL of each kind: multivariant, MPD, media playlist, init, segment, part, hinted part."""
    text = httpx.get(live.url(f"/live/live/240p/index.m3u8?token={token}"), timeout=10).text
    pl = parse_media_playlist(text)
    seg = pl.segments[-1]
    part = (pl.pending_parts or seg.parts)[0]
    hint = pl.preload_hints[0].uri
    return [
        "/live/live/master.m3u8",
        "/live/live/manifest.mpd",
        "/live/live/240p/index.m3u8",
        "/live/live/240p/init.mp4",
        f"/live/live/240p/{seg.uri}",
        f"/live/live/240p/{part.uri}",
        f"/live/live/240p/{hint}",
    ]


def test_every_resource_needs_a_valid_token(secured) -> None:
    live, signer = secured
    good = signer.sign("/live/live/", ttl=600)
    paths = _resources(live, good)
    bad = {
        "missing": (None, 403),
        "tampered": (good[:-2] + ("A" if good[-2] != "A" else "B") + good[-1], 403),
        "expired": (signer.sign("/live/live/", expires=int(time.time()) - 5), 410),
        "other stream": (signer.sign("/live/other/", ttl=600), 403),
        "wrong ip": (signer.sign("/live/live/", ttl=600, client_ip="192.0.2.7"), 403),
        "other key": (TokenSigner({KID: bytes(32)}, KID).sign("/live/live/", ttl=600), 403),
    }
    for path in paths:
        r = httpx.get(live.url(f"{path}?token={good}"), timeout=10)
        assert r.status_code == 200, (path, r.status_code)
        r = httpx.get(live.url(path), cookies={"flowcast_token": good}, timeout=10)
        assert r.status_code == 200, (path, "cookie", r.status_code)
        for name, (token, status) in bad.items():
            url = live.url(path if token is None else f"{path}?token={token}")
            r = httpx.get(url, timeout=10, headers={"x-request-id": f"req-{name.replace(' ', '-')}"})
            assert r.status_code == status, (path, name, r.status_code)
            assert len(r.content) < 32  # no detail that helps an attacker
    log = live.log()
    assert "request_id=req-wrong-ip" in log and "token refused" in log
    assert SECRET.hex() not in log


@pytest.mark.browser
@pytest.mark.skipif(not chromium_available(), reason="Debian chromium is installed by `make test`")
def test_player_with_token_plays(secured) -> None:
    live, signer = secured
    token = signer.sign("/live/live/", ttl=600)
    with launch_chromium() as browser:
        page = open_player(browser, live.url(f"/?player=hls&token={token}"))
        wait_playing(page, timeout=25)
        page.wait_for_timeout(3000)
        assert read_stats(page)["errors"] == []
        page.close()
        page = open_player(browser, live.url("/?player=hls"))  # a fresh page, no token: refused
        page.context.clear_cookies()
        page.reload()
        page.wait_for_timeout(4000)
        stats = read_stats(page)
        assert not stats["playing"] and stats["errors"], stats
