"""The player kit page (src/flowcast/web) against a live stream FFmpeg makes in the test.

Until the flowcast origin serves /live/..., FFmpeg writes the stream itself: the test
source with the burned-in timecode strip, as HLS fMP4 (720p and the 426x240 @ 300 kbps
lowest rung) and chunked LL-DASH, served with a small threaded http.server that also
serves the page and the npm players. DASH segments are written while they are being
requested (availabilityTimeOffset), so the server delivers growing files with chunked
transfer encoding, as an LL origin does.
"""

from __future__ import annotations

import datetime as dt
import http.server
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import browser  # noqa: E402  (tests/browser.py, the shared harness)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not browser.chromium_available(), reason="needs /usr/bin/chromium"),
    pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg"),
]

WEB = Path(__file__).resolve().parents[2] / "src" / "flowcast" / "web"
VENDOR = {name: WEB / "node_modules" / name / "dist" for name in ("hls.js", "dashjs", "shaka-player")}
PAGE_FILES = {"/": "index.html", "/index.html": "index.html", "/player.js": "player.js",
              "/timecode.js": "timecode.js", "/player.css": "player.css"}
STREAM_SECONDS = 90  # cap; the fixture stops FFmpeg when the module is done
OBSERVE_S = 8.0

DASH_SEGMENT = re.compile(r"^chunk-stream(\d+)-(\d+)\.m4s$")


def timecode_filter() -> str:
    """The burned-in timecode recipe (contract in src/flowcast/web/timecode.js)."""
    bits = ",".join(
        f"drawbox=x={(i + 2) * 36}:y=0:w=36:h=48:c=white:t=fill:"
        f"enable='mod(floor(t*1000/pow(2,{31 - i})),2)'"
        for i in range(32)
    )
    return (
        "realtime,settb=1/1000,setpts='RTCTIME/1000',"
        "drawbox=x=0:y=0:w=1224:h=48:c=black:t=fill,"
        "drawbox=x=0:y=0:w=36:h=48:c=white:t=fill,"
        f"{bits},setpts=PTS-STARTPTS"
    )


def ffmpeg_args(out: Path, time_url: str) -> list[str]:
    x264 = ["-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-g", "30",
            "-keyint_min", "30", "-sc_threshold", "0", "-pix_fmt", "yuv420p"]
    hls = ["-f", "hls", "-hls_segment_type", "fmp4", "-hls_time", "1", "-hls_playlist_type", "event",
           "-hls_flags", "program_date_time", "-master_pl_name", "master.m3u8",
           "-hls_fmp4_init_filename", "init.mp4"]
    return [
        "ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin",
        "-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=30", "-t", str(STREAM_SECONDS),
        "-filter_complex", f"[0:v]{timecode_filter()},split=3[hd][low][dash];[low]scale=426:240,setsar=1[low240]",
        "-map", "[hd]", *x264, "-b:v", "2000k", *hls,
        "-hls_segment_filename", str(out / "hls720" / "seg%05d.m4s"), str(out / "hls720" / "index.m3u8"),
        "-map", "[low240]", *x264, "-b:v", "300k", "-maxrate", "300k", "-bufsize", "300k", *hls,
        "-hls_segment_filename", str(out / "hls240" / "seg%05d.m4s"), str(out / "hls240" / "index.m3u8"),
        "-map", "[dash]", *x264, "-b:v", "2000k",
        "-f", "dash", "-seg_duration", "1", "-streaming", "1", "-ldash", "1",
        "-use_template", "1", "-use_timeline", "0", "-window_size", "10", "-target_latency", "1.5",
        "-utc_timing_url", time_url, str(out / "dash" / "manifest.mpd"),
    ]


class _Handler(http.server.SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    media_root: Path
    ffmpeg: subprocess.Popen[bytes] | None = None
    extensions_map = {
        **http.server.SimpleHTTPRequestHandler.extensions_map,
        ".js": "text/javascript", ".mjs": "text/javascript", ".css": "text/css",
        ".html": "text/html", ".m3u8": "application/vnd.apple.mpegurl",
        ".mpd": "application/dash+xml", ".m4s": "video/iso.segment", ".mp4": "video/mp4",
    }

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass

    def end_headers(self) -> None:
        self.send_header("Cache-Control", "no-store")
        super().end_headers()

    def translate_path(self, path: str) -> str:
        path = path.split("?", 1)[0].split("#", 1)[0]
        if path in PAGE_FILES:
            return str(WEB / PAGE_FILES[path])
        if path.startswith("/vendor/"):
            name, _, rest = path[len("/vendor/"):].partition("/")
            if name in VENDOR:
                return str(VENDOR[name] / rest)
        if path.startswith("/media/"):
            return str(self.media_root / path[len("/media/"):])
        return str(self.media_root / "__missing__")

    def do_GET(self) -> None:  # noqa: N802
        path = self.path.split("?", 1)[0]
        if path == "/time":
            now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
            body = now.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        target = Path(self.translate_path(self.path))
        match = DASH_SEGMENT.match(target.name)
        if path.startswith("/media/dash/") and match:
            self._send_growing(target, match)
            return
        super().do_GET()

    def _segment_done(self, target: Path, match: re.Match[str]) -> bool:
        rep, number = match.group(1), int(match.group(2))
        nxt = target.with_name(f"chunk-stream{rep}-{number + 1:05d}.m4s")
        return nxt.exists() or (self.ffmpeg is not None and self.ffmpeg.poll() is not None)

    def _send_growing(self, target: Path, match: re.Match[str]) -> None:
        # FFmpeg closes segment N before it opens N+1, so N is complete once N+1 exists.
        deadline = time.monotonic() + 3.0
        while not target.exists():
            if time.monotonic() > deadline:
                self.send_error(404)
                return
            time.sleep(0.02)
        self.send_response(200)
        self.send_header("Content-Type", "video/iso.segment")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            self._copy_growing(target, match)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the player gave up on this request (e.g. page closed)

    def _copy_growing(self, target: Path, match: re.Match[str]) -> None:
        sent = 0
        deadline = time.monotonic() + 5.0
        with open(target, "rb") as f:
            while True:
                done = self._segment_done(target, match)
                f.seek(sent)
                data = f.read()
                if data:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                    self.wfile.flush()
                    sent += len(data)
                if done or time.monotonic() > deadline:
                    break
                time.sleep(0.02)
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


@pytest.fixture(scope="module")
def origin() -> Iterator[str]:
    """Base URL of a test origin serving the page, the players and a live FFmpeg stream."""
    root = Path(tempfile.mkdtemp(prefix="flowcast-kit-"))
    for sub in ("hls720", "hls240", "dash"):
        (root / sub).mkdir()
    handler = type("Handler", (_Handler,), {"media_root": root})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    log = open(root / "ffmpeg.log", "wb")
    proc = subprocess.Popen(ffmpeg_args(root, f"{base}/time"), stdout=log, stderr=log, cwd=root)
    handler.ffmpeg = proc
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"ffmpeg exited {proc.returncode}: {(root / 'ffmpeg.log').read_text()[-2000:]}")
            hls = root / "hls720" / "index.m3u8"
            if (hls.exists() and hls.read_text().count("#EXTINF") >= 2
                    and (root / "dash" / "manifest.mpd").exists()):
                break
            time.sleep(0.2)
        else:
            pytest.fail("ffmpeg produced no stream within 20 s")
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        server.shutdown()
        server.server_close()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    with browser.launch_chromium() as context:
        yield context


def _watch(page: Any, seconds: float) -> dict[str, Any]:
    page.wait_for_timeout(seconds * 1000)
    return browser.read_stats(page)


def _check_live_playback(chromium: Any, url: str, player: str) -> dict[str, Any]:
    page = browser.open_player(chromium, url)
    try:
        try:
            stats = browser.wait_playing(page, 25)
        except browser.PlayerTimeout as e:
            raise AssertionError(f"{e}\nconsole: {page.console_log[-20:]}") from None
        assert stats["player"] == player
        assert stats["startupMs"] is not None and 0 < stats["startupMs"] < 25000
        stats = browser.wait_stats(page, lambda s: s.get("latencySource") == "timecode", 5)
        stalls_at_start = stats["stalls"]
        stats = _watch(page, OBSERVE_S)
        assert stats["errors"] == [], stats["errors"]
        assert stats["stalls"] == stalls_at_start == 0, {k: v for k, v in stats.items() if k != "latencySamples"}
        assert stats["latencySource"] == "timecode", stats
        samples = stats["latencySamples"]
        assert len(samples) >= 30, stats  # ~30 fps decoded for 8 s, ring keeps the last 120
        assert all(0 <= s <= 10000 for s in samples), samples
        assert stats["width"] == 1280 and stats["height"] == 720
        assert stats["bufferS"] > 0
        assert stats["bitrateKbps"] and stats["bitrateKbps"] > 0
        assert browser.canvas_nonempty(page, "video")
        print(player, {k: v for k, v in stats.items() if k != "latencySamples"})
        return stats
    finally:
        page.close()


def test_hls_js_plays_live_with_timecode_latency(origin: str, chromium: Any) -> None:
    _check_live_playback(chromium, f"{origin}/?player=hls&src=/media/hls720/master.m3u8", "hls")


def test_dash_js_plays_low_latency_with_timecode_latency(origin: str, chromium: Any) -> None:
    _check_live_playback(chromium, f"{origin}/?player=dash&src=/media/dash/manifest.mpd", "dash")


@pytest.mark.parametrize("src", ["/media/dash/manifest.mpd", "/media/hls720/master.m3u8"], ids=["dash", "hls"])
def test_shaka_plays(origin: str, chromium: Any, src: str) -> None:
    page = browser.open_player(chromium, f"{origin}/?player=shaka&src={src}")
    try:
        try:
            stats = browser.wait_playing(page, 25)
        except browser.PlayerTimeout as e:
            raise AssertionError(f"{e}\nconsole: {page.console_log[-20:]}") from None
        assert stats["player"] == "shaka"
        stats = browser.wait_stats(
            page, lambda s: s.get("latencySource") == "timecode" and len(s.get("latencySamples", [])) >= 20, 6
        )
        print("shaka", src, stats["latencySamples"][-5:], stats["bufferS"], stats["bitrateKbps"], stats["width"])
        assert all(0 <= s <= 10000 for s in stats["latencySamples"]), stats
        assert stats["errors"] == [], stats["errors"]
    finally:
        page.close()


@pytest.mark.parametrize(
    "player,src,source",
    [
        ("hls", "/media/hls720/master.m3u8", "pdt"),
        # FFmpeg's -ldash MPD carries a ProducerReferenceTime: dash.js latency is PRT-based.
        ("dash", "/media/dash/manifest.mpd", "prt"),
        ("shaka", "/media/dash/manifest.mpd", "pdt"),
    ],
)
def test_wall_clock_latency_fallback(origin: str, chromium: Any, player: str, src: str, source: str) -> None:
    """Without the timecode each player's own wall-clock estimate (PDT / PRT) is used."""
    page = browser.open_player(chromium, f"{origin}/?player={player}&src={src}&timecode=off")
    try:
        browser.wait_playing(page, 25)
        stats = browser.wait_stats(page, lambda s: len(s.get("latencySamples", [])) >= 4, 6)
        print(player, "fallback", stats["latencySource"], stats["latencySamples"][-4:])
        assert stats["latencySource"] == source, stats
        assert all(0 <= s <= 10000 for s in stats["latencySamples"]), stats
    finally:
        page.close()


def test_timecode_decodes_on_lowest_rung(origin: str, chromium: Any, tmp_path: Path) -> None:
    page = browser.open_player(chromium, f"{origin}/?player=hls&src=/media/hls240/master.m3u8")
    try:
        browser.wait_playing(page, 25)
        stats = browser.wait_stats(
            page, lambda s: s.get("latencySource") == "timecode" and len(s.get("latencySamples", [])) >= 20, 6
        )
        assert (stats["width"], stats["height"]) == (426, 240)
        assert all(0 <= s <= 10000 for s in stats["latencySamples"]), stats
        # Consecutive frames decode to consistent latencies: a misread bit would jump by
        # a power of two (>= 1 s for the high bits), so the spread stays small.
        samples = stats["latencySamples"]
        assert max(samples) - min(samples) < 3000, samples
        shot = browser.screenshot(page, tmp_path / "lowest.png", "video")
        assert shot.stat().st_size > 0
    finally:
        page.close()


def test_timecode_decoder_contract(origin: str, chromium: Any) -> None:
    """decodeLevels/latencyFromCode on synthetic levels, including the 2**32 wrap."""
    page = browser.open_player(chromium, f"{origin}/?player=none")
    try:
        result = page.evaluate(
            """async () => {
              const tc = await import('/timecode.js');
              const levels = (code, white = 235, black = 16) => {
                const l = [white, black];
                for (let i = 31; i >= 0; i--) l.push(Math.floor(code / 2 ** i) % 2 ? white : black);
                return l;
              };
              return {
                a: tc.decodeLevels(levels(0xDEADBEEF)),
                flat: tc.decodeLevels(levels(0x12345678, 120, 100)),
                lat: tc.latencyFromCode(2 ** 32 - 100, 2 ** 32 * 5 + 150),
                future: tc.latencyFromCode(1000, 2 ** 32 * 5 + 900),
                p: [tc.percentile([5, 1, 3, 2, 4], 50), tc.percentile([1, 2, 3, 4, 100], 95)],
              };
            }"""
        )
        assert result["a"] == 0xDEADBEEF
        assert result["flat"] is None  # references too close: no timecode
        assert result["lat"] == 250
        assert result["future"] is None  # negative latency wraps to ~49 days: discarded
        assert result["p"] == [3, 100]
    finally:
        page.close()
