"""`flowcast up --tls self-signed`: HTTPS with HTTP/2 and HSTS on every response."""

from __future__ import annotations

import ssl
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from .livestack import LiveProcess

pytestmark = pytest.mark.slow


def test_https_http2_and_hsts(tmp_path: Path) -> None:
    live = LiveProcess(tmp_path, "--tls", "self-signed")
    live.base = live.base.replace("http://", "https://")
    cert = tmp_path / "data" / "tls" / "selfsigned.crt"
    try:
        deadline = time.monotonic() + 30
        while not cert.exists():
            assert time.monotonic() < deadline, live.log()
            time.sleep(0.1)
        time.sleep(0.2)  # the key is written just after the certificate
        trust = ssl.create_default_context(cafile=str(cert))
        while True:
            try:
                r = httpx.get(live.url("/live/live/master.m3u8"), verify=trust, timeout=5)
                if r.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, live.log()
            time.sleep(0.3)
        assert r.headers["strict-transport-security"].startswith("max-age=")
        # Plain HTTP on the TLS port is not served.
        with pytest.raises(httpx.HTTPError):
            httpx.get(live.url("/live/live/master.m3u8").replace("https://", "http://"), timeout=5)
        # HTTP/2 through ALPN, as a CDN or a browser would negotiate it.
        out = subprocess.run(
            ["curl", "-sS", "--http2", "--cacert", str(cert), "-o", "/dev/null", "-w", "%{http_version} %{http_code}",
             live.url("/live/live/720p/init.mp4")],
            capture_output=True, text=True, timeout=20,
        )  # fmt: skip
        assert out.stdout == "2 200", (out.stdout, out.stderr)
        assert "self-signed" in live.log()
    finally:
        live.stop()
