"""Epic's Pixel Streaming frontend (npm, bundled by `make web`) in headless Chromium against
`flowcast pixelstreaming` and the simulated streamer, both real processes: it connects,
negotiates, plays the test source (burned-in clock decoded in the page), and keyboard,
mouse, touch and UI-interaction input arrives decoded on the streamer; two players share
one streamer; the streamer dies and comes back."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from flowcast.origin.server import free_port
from tests.browser import chromium_available, launch_chromium, open_player, read_stats

WEB = Path(__file__).resolve().parents[2] / "src" / "flowcast" / "web"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not chromium_available(), reason="needs Debian's chromium"),
    pytest.mark.skipif(not (WEB / "pixelstreaming.bundle.js").exists(), reason="run `make web` to bundle Epic's frontend"),
]


class PSStack:
    """`flowcast pixelstreaming` (signalling + page) and a separate simulated streamer process."""

    def __init__(self, tmp: Path, *server_args: str) -> None:
        self.tmp = tmp
        self.port = free_port()
        self.streamer_port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.input_log = tmp / "input.jsonl"
        self.server_log = tmp / "signalling.log"
        self.server = self._spawn(self.server_log, "--port", str(self.port), "--streamer-port", str(self.streamer_port), *server_args)
        self.streamer: subprocess.Popen[bytes] | None = None
        self._wait_line(self.server_log, "pixelstreaming  http://")

    def _spawn(self, log: Path, *args: str) -> subprocess.Popen[bytes]:
        out = log.open("ab")
        cmd = [sys.executable, "-m", "flowcast.cli", "pixelstreaming", *args]
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    def _wait_line(self, log: Path, needle: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if needle in log.read_text(errors="replace"):
                return
            time.sleep(0.1)
        raise TimeoutError(f"{needle!r} not in {log}:\n{log.read_text(errors='replace')[-3000:]}")

    def start_streamer(self, *extra: str) -> None:
        log = self.tmp / "streamer.log"
        start = log.stat().st_size if log.exists() else 0
        self.streamer = self._spawn(
            log, "--connect", f"ws://127.0.0.1:{self.streamer_port}", "--input-log", str(self.input_log), "--ice-host", "127.0.0.1", *extra
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if "streaming as 'DefaultStreamer'" in log.read_bytes()[start:].decode(errors="replace"):
                return
            time.sleep(0.1)
        raise TimeoutError(f"streamer did not identify:\n{log.read_text(errors='replace')[-3000:]}")

    def kill_streamer(self) -> None:
        """A crash, not a shutdown: SIGKILL to the streamer and its FFmpeg."""
        assert self.streamer is not None
        os.killpg(self.streamer.pid, signal.SIGKILL)
        self.streamer.wait(10)
        self.streamer = None

    def inputs(self) -> list[dict[str, Any]]:
        if not self.input_log.exists():
            return []
        return [json.loads(line) for line in self.input_log.read_text().splitlines() if line.strip()]

    def stop(self) -> None:
        for proc in (self.streamer, self.server):
            if proc is not None and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()


def wait_for(page, predicate, timeout: float, what: str) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    stats: dict[str, Any] = {}
    while time.monotonic() < deadline:
        stats = read_stats(page)
        if predicate(stats):
            return stats
        page.wait_for_timeout(200)
    stats.pop("latencySamples", None)
    raise AssertionError(f"{what} not reached in {timeout} s; stats {stats}; console {page.console_log[-10:]}")


def wait_playing(page, timeout: float = 30.0) -> dict[str, Any]:
    first = wait_for(page, lambda s: s.get("playing") and s.get("videoWidth", 0) > 0 and s.get("dataChannelOpen"), timeout, "playing")
    # currentTime advances and the burned-in clock decodes: real frames of our test source
    return wait_for(
        page,
        lambda s: s["currentTime"] > first["currentTime"] + 0.5 and s.get("framesDecoded", 0) >= 10,
        timeout, "frames advancing with a readable timecode",
    )


def wait_inputs(stack: PSStack, predicate, timeout: float = 10.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    events: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        events = stack.inputs()
        if predicate(events):
            return events
        time.sleep(0.1)
    raise AssertionError(f"inputs not seen in {timeout} s: {[(e['name'], e['fields']) for e in events][-30:]}")


@pytest.fixture
def stack(tmp_path: Path):
    s = PSStack(tmp_path)
    try:
        s.start_streamer()
        yield s
    finally:
        s.stop()


def _near(value: int, expected: float, tol: float = 0.03 * 65535) -> bool:
    return abs(value - expected) <= tol


def test_epic_frontend_plays_and_sends_input(stack: PSStack):
    with launch_chromium() as browser:
        page = open_player(browser, stack.base + "/")
        stats = wait_playing(page)
        assert stats["videoWidth"] == 1280 and stats["videoHeight"] == 720
        assert stats["playerCount"] == 1
        assert stats["messages"].get("offer") == 1 and stats["messages"].get("config") == 1
        assert 0 < stats["latencyP50"] < 2000, stats["latencyP50"]
        # H.264 video and the test tone as Opus, as an Unreal streamer sends them
        stats = wait_for(page, lambda s: s.get("audioPacketsReceived", 0) > 50, 10, "Opus audio arriving")
        assert stats["videoCodec"] == "video/H264" and stats["audioCodec"] == "audio/opus"

        rect = page.evaluate("() => { const r = document.getElementById('player').getBoundingClientRect(); return {x: r.x, y: r.y, w: r.width, h: r.height}; }")
        cx, cy = rect["x"] + rect["w"] / 2, rect["y"] + rect["h"] / 2
        # keyboard
        page.keyboard.press("KeyA")
        page.keyboard.down("Shift")
        page.keyboard.up("Shift")
        # mouse: a click in the centre, then one a quarter of the way across
        page.mouse.move(cx, cy)
        page.mouse.click(cx, cy)
        page.mouse.click(rect["x"] + rect["w"] / 4, cy, button="right")
        page.mouse.wheel(0, 120)
        # touch: Epic's TouchController listens on the <video> it creates for TouchEvents
        page.evaluate(
            """([x, y]) => {
              const el = document.querySelector('#player video');
              const t = new Touch({identifier: 7, target: el, clientX: x, clientY: y, force: 0.5});
              el.dispatchEvent(new TouchEvent('touchstart', {touches: [t], changedTouches: [t], bubbles: true, cancelable: true}));
              const t2 = new Touch({identifier: 7, target: el, clientX: x + 40, clientY: y, force: 0.5});
              el.dispatchEvent(new TouchEvent('touchmove', {touches: [t2], changedTouches: [t2], bubbles: true, cancelable: true}));
              el.dispatchEvent(new TouchEvent('touchend', {touches: [], changedTouches: [t2], bubbles: true, cancelable: true}));
            }""",
            [cx, cy],
        )
        # UI interaction and the latency test through the library's public API
        page.evaluate("() => window.flowcastPixelStreaming.emitUIInteraction({action: 'jump', height: 3})")
        page.evaluate(
            "() => { window.latencyResult = null; window.flowcastPixelStreaming.addEventListener('latencyTestResult', e => { window.latencyResult = e.data.latencyTimings; }); window.flowcastPixelStreaming.requestLatencyTest(); }"
        )

        names_needed = {"KeyDown", "KeyUp", "KeyPress", "MouseDown", "MouseUp", "MouseWheel", "TouchStart", "TouchMove", "TouchEnd", "UIInteraction", "LatencyTest"}
        events = wait_inputs(stack, lambda ev: names_needed <= {e["name"] for e in ev})
        by = lambda name: [e["fields"] for e in events if e["name"] == name]  # noqa: E731
        assert {"keyCode": 65, "repeat": 0} in by("KeyDown")
        assert {"keyCode": 16, "repeat": 0} in by("KeyDown")  # Shift
        assert {"keyCode": 65} in by("KeyUp") and {"charCode": ord("a")} in by("KeyPress")
        downs = by("MouseDown")
        assert downs[0]["button"] == 0 and _near(downs[0]["x"], 32767) and _near(downs[0]["y"], 32767), downs
        assert downs[1]["button"] == 2 and _near(downs[1]["x"], 65535 / 4) and _near(downs[1]["y"], 32767), downs
        assert [u["button"] for u in by("MouseUp")][:2] == [0, 2]
        assert by("MouseWheel")[0]["delta"] == -120
        start, move, end = by("TouchStart")[0], by("TouchMove")[0], by("TouchEnd")[0]
        assert start["count"] == 1 and start["valid"] == 1 and _near(start["x"], 32767) and _near(start["y"], 32767)
        assert start["finger"] == move["finger"] == end["finger"]
        assert move["x"] > start["x"] and _near(move["x"] - start["x"], 40 / rect["w"] * 65535)
        assert json.loads(by("UIInteraction")[0]["descriptor"]) == {"action": "jump", "height": 3}
        assert "StartTime" in json.loads(by("LatencyTest")[0]["payload"])
        assert all(e["player"] == "1" for e in events)
        # Epic's library logged no error (its Logger is at Warning level in our page)
        assert not [line for line in page.console_log if line.startswith(("error", "pageerror"))], page.console_log[-20:]

        result = wait_for(page, lambda s: page.evaluate("() => window.latencyResult") is not None, 10, "latency test result")
        assert result is not None
        timings = page.evaluate("() => window.latencyResult")
        assert timings["ReceiptTimeMs"] > 0 and timings["latencyExcludingDecode"] >= 0


def test_two_players_then_the_streamer_dies_and_comes_back(stack: PSStack):
    with launch_chromium() as browser:
        pages = [open_player(browser, stack.base + "/") for _ in range(2)]
        for page in pages:
            wait_playing(page)
        for page in pages:
            wait_for(page, lambda s: s.get("playerCount") == 2, 10, "playerCount 2")
        # both players' input is told apart on the streamer
        pages[0].keyboard.press("KeyB")
        pages[1].keyboard.press("KeyC")
        events = wait_inputs(stack, lambda ev: {("1", 66), ("2", 67)} <= {(e["player"], e["fields"].get("keyCode")) for e in ev if e["name"] == "KeyDown"})
        assert not [e for e in events if e["name"] == "KeyDown" and (e["player"], e["fields"]["keyCode"]) in {("1", 67), ("2", 66)}]

        stack.kill_streamer()
        for page in pages:
            stats = wait_for(page, lambda s: s.get("streamerDisconnected", 0) >= 1 and s.get("disconnects"), 15, "told the streamer is gone")
            assert any("streamer disconnected" in d for d in stats["disconnects"]), stats["disconnects"]
        log = stack.server_log.read_text()
        assert "streamer 'DefaultStreamer' left" in log

        stack.start_streamer()
        for page in pages:
            stats = wait_for(page, lambda s: s.get("connects", 0) >= 2 and s.get("playing") and s.get("dataChannelOpen"), 40, "playing again")
            before = stats["currentTime"]
            wait_for(page, lambda s: s["currentTime"] > before + 0.5, 15, "video advancing after the comeback")
        pages[0].keyboard.press("KeyD")
        wait_inputs(stack, lambda ev: any(e["name"] == "KeyDown" and e["fields"]["keyCode"] == 68 for e in ev))


def test_player_limit_and_token_in_the_page(tmp_path: Path):
    from flowcast.origin.access import signer_for

    data = tmp_path / "data"
    signer = signer_for(data)  # creates the secret the server will load
    s = PSStack(tmp_path, "--max-players", "1", "--require-token", "--data-dir", str(data))
    try:
        s.start_streamer()
        token = signer.sign("/live/DefaultStreamer/", ttl=600)
        with launch_chromium() as browser:
            first = open_player(browser, f"{s.base}/?token={token}")
            wait_playing(first)
            second = open_player(browser, f"{s.base}/?token={token}")
            stats = wait_for(second, lambda st: st.get("subscribeFailed"), 15, "subscribeFailed")
            assert stats["subscribeFailed"][0] == "Streamer DefaultStreamer is full. Max players = 1."
            assert not stats["playing"]
            # a page without a token never gets a signalling connection
            third = open_player(browser, f"{s.base}/")
            third.wait_for_timeout(2000)
            assert read_stats(third)["messages"] == {}
        log = s.server_log.read_text()
        assert "player refused (403): no token" in log
        assert token not in log and not re.search(r"v1\.k1\.\d+\.", log)
    finally:
        s.stop()


def test_one_command_demo_with_the_simulated_streamer_in_process(tmp_path: Path):
    """`flowcast pixelstreaming --simulated-streamer`: what a user runs to try it."""
    s = PSStack(tmp_path, "--simulated-streamer", "--input-log", str(tmp_path / "input.jsonl"), "--ice-host", "127.0.0.1")
    try:
        s._wait_line(s.server_log, "streaming as 'DefaultStreamer'")
        with launch_chromium() as browser:
            page = open_player(browser, s.base + "/")
            wait_playing(page)
            page.keyboard.press("KeyZ")
            wait_inputs(s, lambda ev: any(e["name"] == "KeyDown" and e["fields"]["keyCode"] == 90 for e in ev))
    finally:
        s.stop()


def test_relay_only_through_coturn_with_minted_credentials(tmp_path: Path):
    """ForceTURN in Epic's frontend: media flows only through Debian's coturn, with the TURN
    REST credentials our `config` message minted."""
    import shutil
    import socket

    from flowcast.webrtc.turn import coturn_config

    if shutil.which("turnserver") is None:
        pytest.skip("coturn is installed by `make test`")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        turn_port = sock.getsockname()[1]
    secret = "ps-test-" + os.urandom(8).hex()
    conf = tmp_path / "turnserver.conf"
    conf.write_text(coturn_config(
        secret, port=turn_port, min_port=50300, max_port=50400, allow_loopback_peers=True, pidfile=str(tmp_path / "turn.pid")
    ))
    turn_log = (tmp_path / "turn.log").open("wb")
    turn = subprocess.Popen(["turnserver", "-c", str(conf)], stdout=turn_log, stderr=subprocess.STDOUT)
    os.environ["FLOWCAST_TURN_SECRET"] = secret  # inherited by the signalling server only
    try:
        s = PSStack(tmp_path, "--turn-url", f"turn:127.0.0.1:{turn_port}?transport=udp")
    finally:
        del os.environ["FLOWCAST_TURN_SECRET"]
    try:
        s.start_streamer()
        with launch_chromium() as browser:
            page = open_player(browser, s.base + "/?forceTurn=1")
            wait_playing(page, 45)
            stats = wait_for(page, lambda st: st.get("localCandidateType"), 10, "selected candidate pair")
            assert stats["localCandidateType"] == "relay", stats
        # coturn only allocates for credentials minted from its secret (use-auth-secret),
        # so a selected relay candidate means the config message's credentials worked
        assert secret not in s.server_log.read_text()
    finally:
        s.stop()
        turn.terminate()
        turn.wait(10)
        turn_log.close()
