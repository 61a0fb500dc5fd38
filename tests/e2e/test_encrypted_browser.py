"""Real decryption by real clients: dash.js and Shaka play the cenc and cbcs LL-DASH streams
with ClearKey, hls.js plays cbcs LL-HLS, all through the token-gated license endpoint."""

from __future__ import annotations

import json

import httpx
import pytest

from flowcast.origin.access import KID, SECRET_ENV
from flowcast.protect.clearkey import b64url_encode
from flowcast.protect.tokens import TokenSigner
from tests.browser import chromium_available, launch_chromium, open_player, read_stats, wait_playing

from .livestack import LiveProcess

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(not chromium_available(), reason="Debian chromium is installed by `make test`"),
]

SECRET = bytes(range(100, 132))
PLAYERS = {
    "cenc": ["player=dash", "player=shaka&drm=clearkey&src=/live/live/manifest.mpd"],
    "cbcs": ["player=dash", "player=shaka&drm=clearkey&src=/live/live/manifest.mpd", "player=hls"],
}


@pytest.mark.parametrize("scheme", ["cenc", "cbcs"])
def test_players_decrypt_clearkey(tmp_path, monkeypatch, scheme: str) -> None:
    monkeypatch.setenv(SECRET_ENV, SECRET.hex())
    token = TokenSigner({KID: SECRET}, KID).sign("/live/live/", ttl=600)
    live = LiveProcess(tmp_path, "--encryption", scheme, "--require-token")
    try:
        live.wait_ready(f"/live/live/master.m3u8?token={token}")
        # The license endpoint checks the same token as the media.
        kid = bytes(16)
        r = httpx.post(live.url("/license/clearkey"), json={"kids": [b64url_encode(kid)]}, timeout=10)
        assert r.status_code in (403, 404)
        with launch_chromium() as browser:
            for query in PLAYERS[scheme]:
                page = open_player(browser, live.url(f"/?{query}&token={token}"))
                try:
                    wait_playing(page, timeout=25)
                    page.wait_for_timeout(5000)
                    stats = read_stats(page)
                    assert stats["playing"] and not stats["errors"], (query, json.dumps(stats))
                    assert stats["framesDecoded"] > 100, (query, json.dumps(stats))
                finally:
                    page.close()
        assert "license refused" not in live.log()
    finally:
        live.stop()
