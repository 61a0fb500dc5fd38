"""Forensic A/B watermark live in `flowcast up`: per-session variants over HTTP, extraction of
re-encoded captures with `flowcast watermark extract`, PSNR A vs B, and hls.js playback.

One `flowcast up` (one marked 360p rung, 1 s segments, tokens required) for the module. Three
sessions fetch init + N segments of the marked rendition; each capture is re-encoded at 0.5x
size and a quarter of the rung's bitrate and must name its own session among candidates.
Variant A and B of every segment are fetched too (as probe sessions whose codeword has A or B
there), which gives the PSNR and the material for the 100 non-matching captures.
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from flowcast.origin.access import KID, SECRET_ENV
from flowcast.package.m3u8 import parse_media_playlist
from flowcast.protect.tokens import TokenClaims, TokenSigner
from flowcast.protect.watermark import WatermarkCodec, WatermarkPattern, detect_bits
from flowcast.protect.watermark_extract import decode_gray, segment_means, soft_bits_of
from flowcast.protect.watermark_session import SessionVariants, token_timestamp
from tests.browser import chromium_available, launch_chromium, open_player, read_stats, wait_playing

from .livestack import LiveProcess

pytestmark = pytest.mark.slow

TOKEN_SECRET = bytes(range(32))
WM_SECRET = bytes(range(100, 132))
WM_ENV = "FLOWCAST_WATERMARK_SECRET"
RUNG = "360p"
BITRATE_KBPS = 1600  # a premium 360p rung; A vs B PSNR drops with the bitrate (45.7 dB y at 1200k)
SEGMENTS = 40  # captured per session (35 carry tag bits); ~26 clean ones name one of 10 candidates at 1e-6
SESSIONS = ("viewer-7f3a", "viewer-19c2", "viewer-e004")
CONFIG = f"""
ladder:
  rungs:
    - {{name: {RUNG}, width: 640, height: 360, video_bitrate_kbps: {BITRATE_KBPS}, profile: main, level: "3.0"}}
packaging:
  segment_duration: 1.0
  part_target: 0.5
  dvr_window: 300  # the window stays fetchable while the test works on it
protection:
  require_token: true
  watermark:
    forensic: {{rendition: {RUNG}, secret_env: {WM_ENV}}}
telemetry: {{enabled: false}}
"""


def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-hide_banner", "-v", "error", "-y", *args], check=True,
                   capture_output=True, timeout=300)


class Live:
    def __init__(self, proc: LiveProcess, root: Path) -> None:
        self.proc = proc
        self.root = root
        self.signer = TokenSigner({KID: TOKEN_SECRET}, KID)
        self.expires = int(time.time()) + 3600
        self.codec = WatermarkCodec(WM_SECRET)

    def token(self, sid: str | None, expires: int | None = None) -> str:
        return self.signer.sign("/live/live/", expires=expires or self.expires, session_id=sid)

    def stamp_of(self, expires: int) -> int:
        return token_timestamp(TokenClaims(kid=KID, acl="/live/live/", expires=expires))

    @property
    def stamp(self) -> int:
        return self.stamp_of(self.expires)

    def get(self, path: str, sid: str | None, expires: int | None = None) -> httpx.Response:
        return httpx.get(self.proc.url(f"/live/live/{RUNG}/{path}?token={self.token(sid, expires)}"), timeout=15)

    def playlist(self):
        r = self.get("index.m3u8", SESSIONS[0])
        assert r.status_code == 200, r.text
        return parse_media_playlist(r.text)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    root = tmp_path_factory.mktemp("wm-live")
    (root / "wm.yaml").write_text(CONFIG)
    mp = pytest.MonkeyPatch()
    mp.setenv(SECRET_ENV, TOKEN_SECRET.hex())
    mp.setenv(WM_ENV, WM_SECRET.hex())
    proc = LiveProcess(root, "--config", str(root / "wm.yaml"))
    try:
        signer = TokenSigner({KID: TOKEN_SECRET}, KID)
        proc.wait_ready(f"/live/live/master.m3u8?token={signer.sign('/live/live/', ttl=600)}", timeout=40)
        yield Live(proc, root)
    finally:
        proc.stop()
        mp.undo()
    log = proc.log()
    assert WM_SECRET.hex() not in log and "variant B init differs" not in log


@pytest.fixture(scope="module")
def window(live: Live) -> list[int]:
    """MSNs of SEGMENTS whole 1 s segments (the run's first, possibly short, ones skipped)."""
    deadline = time.monotonic() + SEGMENTS + 60
    while time.monotonic() < deadline:
        pl = live.playlist()
        whole = [s.msn for s in pl.segments[2:] if abs(s.duration - 1.0) < 1e-6]
        if len(whole) >= SEGMENTS:
            msns = whole[:SEGMENTS]
            assert msns == list(range(msns[0], msns[0] + SEGMENTS))
            return msns
        time.sleep(1)
    raise AssertionError(f"fewer than {SEGMENTS} segments after a minute:\n{live.proc.log()[-2000:]}")


def _probe_for(live: Live, msn: int, variant: str) -> tuple[str, int]:
    """A session id and token expiry whose sequence has `variant` at segment `msn` (the
    payload symbols that carry the timestamp are the same for every session of one hour)."""
    for hours in range(0, 1 << 16, 257):  # spread over the 16-bit field
        expires = live.expires + 3600 * hours
        for k in range(8):
            sid = f"probe-{k}"
            if live.codec.variant_for(sid, live.stamp_of(expires), msn) == variant:
                return sid, expires
    raise AssertionError("no probe session")


@pytest.fixture(scope="module")
def media(live: Live, window: list[int]) -> dict[str, object]:
    """Init, both variants of every segment, and each session's capture, all over HTTP."""
    init = live.get("init.mp4", SESSIONS[0])
    assert init.status_code == 200
    out: dict[str, object] = {"init": init.content, "cc_init": init.headers["cache-control"]}
    for v in "AB":
        segs = []
        for msn in window:
            r = live.get(f"{msn}.m4s", *_probe_for(live, msn, v))
            assert r.status_code == 200, (msn, r.status_code)
            assert r.headers["cache-control"].startswith("private"), r.headers["cache-control"]
            segs.append(r.content)
        out[v] = segs
    captures = {}
    for sid in SESSIONS:
        assert live.get("init.mp4", sid).content == init.content  # the init is shared
        body = []
        for i, msn in enumerate(window):
            data = live.get(f"{msn}.m4s", sid).content
            expected = live.codec.variant_for(sid, live.stamp, msn)
            # byte for byte the variant this session's codeword names
            assert data == out[expected][i], (sid, msn, expected)  # type: ignore[index]
            body.append(data)
        path = live.root / f"{sid}.mp4"
        path.write_bytes(init.content + b"".join(body))
        captures[sid] = path
    out["captures"] = captures
    for v in "AB":
        path = live.root / f"variant-{v}.mp4"
        path.write_bytes(init.content + b"".join(out[v]))  # type: ignore[arg-type]
        out[f"file_{v}"] = path
    return out


def test_variants_differ_per_session_and_parts_follow_their_segment(live: Live, window: list[int]) -> None:
    pl = live.playlist()
    # playlists are rendered once for everyone: shared, cacheable
    assert live.get("index.m3u8", SESSIONS[1]).headers["cache-control"].startswith("public")
    seg = next(s for s in reversed(pl.segments) if s.parts)
    a, b = _probe_for(live, seg.msn, "A"), _probe_for(live, seg.msn, "B")
    whole = {sid: live.get(seg.uri, *sid).content for sid in (a, b)}
    assert whole[a] != whole[b]
    for sid in (a, b):
        parts = [live.get(p.uri, *sid) for p in seg.parts]
        assert all(p.status_code == 200 and p.headers["cache-control"].startswith("private") for p in parts)
        assert b"".join(p.content for p in parts) == whole[sid]  # every part from the same variant
    # a preload-hinted part, held until it exists, comes from the session's variant too
    hint = live.playlist().preload_hints[0].uri
    m = re.fullmatch(r"(\d+)\.(\d+)\.m4s", hint)
    assert m is not None
    msn = int(m.group(1))
    a, b = _probe_for(live, msn, "A"), _probe_for(live, msn, "B")
    parts = {sid: live.get(hint, *sid) for sid in (a, b)}
    assert all(r.status_code == 200 for r in parts.values())
    assert parts[a].content != parts[b].content
    deadline = time.monotonic() + 10
    while (r := live.get(f"{msn}.m4s", *a)).status_code != 200 and time.monotonic() < deadline:
        time.sleep(0.5)
    # the hinted part is a chunk of that session's segment, and not of the other variant's
    assert parts[a].content in r.content and parts[b].content not in r.content
    # a valid token without a session id cannot fetch the marked rendition (it could not be traced)
    r = httpx.get(live.proc.url(f"/live/live/{RUNG}/{seg.uri}?token={live.token(None)}"), timeout=10)
    assert r.status_code == 403 and len(r.content) < 32
    assert live.get("init.mp4", None).status_code == 200  # the shared init is not per session


def _psnr(a: Path, b: Path) -> dict[str, float]:
    proc = subprocess.run(
        ["ffmpeg", "-nostdin", "-hide_banner", "-i", str(a), "-i", str(b), "-lavfi", "[0:v][1:v]psnr", "-f", "null", "-"],
        check=True, capture_output=True, text=True, timeout=120,
    )
    line = next(ln for ln in proc.stderr.splitlines() if "PSNR y:" in ln)
    return {k: float(v) for k, v in re.findall(r"(\w+):([\d.]+|inf)", line.split("]", 1)[1])}


def test_psnr_a_vs_b_above_45db(media: dict[str, object]) -> None:
    psnr = _psnr(media["file_A"], media["file_B"])  # type: ignore[arg-type]
    print(f"\nPSNR A vs B (live output, {SEGMENTS} s of 640x360): {psnr}")
    assert psnr["average"] > 45.0 and psnr["y"] > 45.0, psnr


def flowcast(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "flowcast.cli", *args], capture_output=True, text=True,
                          timeout=300, env=env)


def test_extract_names_each_session_after_reencode_and_half_scale(
    live: Live, window: list[int], media: dict[str, object]
) -> None:
    env = {**os.environ, WM_ENV: WM_SECRET.hex()}
    decoys = [f"decoy-{i}" for i in range(7)]
    cands = live.root / "candidates.tsv"
    cands.write_text("".join(f"{sid}\t{live.stamp}\n" for sid in (*SESSIONS, *decoys)))
    codec, pattern = live.codec, WatermarkPattern(WM_SECRET)
    candidates = {sid: live.stamp for sid in (*SESSIONS, *decoys)}
    needed = {}
    for sid, capture in media["captures"].items():  # type: ignore[union-attr]
        attacked = live.root / f"{sid}-attacked.mp4"
        # re-encoded with x264 at a quarter of the rung's bitrate AND scaled to 0.5x
        _ffmpeg("-i", str(capture), "-vf", "scale=iw/2:ih/2", "-c:v", "libx264", "-preset", "veryfast",
                "-b:v", f"{BITRATE_KBPS // 4}k", "-maxrate", f"{BITRATE_KBPS // 4}k", "-bufsize", f"{BITRATE_KBPS // 4}k",
                "-threads", "1", str(attacked))
        out = flowcast("watermark", "extract", str(attacked), "--segment-duration", "1", "--candidates", str(cands),
                       "--first-segment", str(window[0]), env=env)
        assert out.returncode == 0, out.stdout + out.stderr
        assert out.stdout.startswith(f"session {sid} "), out.stdout
        # the other sessions are not named when the true one is not a candidate
        others = live.root / f"not-{sid}.tsv"
        others.write_text("".join(f"{s}\t{live.stamp}\n" for s in (*SESSIONS, *decoys) if s != sid))
        out = flowcast("watermark", "extract", str(attacked), "--segment-duration", "1", "--candidates", str(others),
                       "--first-segment", str(window[0]), env=env)
        assert out.returncode == 1 and "no session identified" in out.stdout, out.stdout
        # how many segments it takes: the shortest prefix of the capture that names the session
        bits, start = soft_bits_of(decode_gray(attacked), pattern, segment_duration=1.0)
        # as extract_recording does: a window found after t=0 starts in segment 0 or 1
        offsets = window[0] if start == 0 else (window[0], window[0] + 1)
        needed[sid] = next(
            (n for n in range(1, len(bits) + 1)
             if (m := codec.decode(bits[:n], candidates, offset=offsets)) is not None and m.session_id == sid),
            None,
        )
        first = window[0] if m is None else m.offset  # type: ignore[has-type]
        wrong = sum((b > 0) != (codec.variant_for(sid, live.stamp, first + i) == "A") for i, b in enumerate(bits))
        print(f"\n{sid}: {len(bits)} segments, {wrong} read wrong after the attack, named after {needed[sid]}")
    assert all(n is not None and n <= SEGMENTS for n in needed.values()), needed


def test_no_false_accusation_on_100_non_matching_captures(
    live: Live, window: list[int], media: dict[str, object]
) -> None:
    """100 captures nobody among the candidates received, built from the live A and B segments:
    random A/B sequences and other sessions' sequences; never a match."""
    pattern, codec = WatermarkPattern(WM_SECRET), live.codec
    per = {v: segment_means(decode_gray(media[f"file_{v}"]), 10, 0, 1) for v in "AB"}  # type: ignore[arg-type]
    assert len(per["A"]) == len(per["B"]) == SEGMENTS
    # every live segment reads as what it is
    truth = detect_bits([per["AB"[i % 2]][i] for i in range(SEGMENTS)], pattern)
    assert all((s > 0) == (i % 2 == 0) for i, s in enumerate(truth)), truth
    candidates = {sid: live.stamp for sid in SESSIONS}
    rng = random.Random(7)
    for k in range(100):
        if k % 2:
            sid = f"outsider-{k}"
            variants = [codec.variant_for(sid, live.stamp, msn) for msn in window]
        else:
            variants = [rng.choice("AB") for _ in window]
        soft = detect_bits([per[v][i] for i, v in enumerate(variants)], pattern)
        assert codec.decode(soft, candidates, offset=window[0]) is None, k
        assert codec.decode(soft, list(SESSIONS), offset=None) is None, k
    # and each session's own clean capture is named (the live material is not degenerate)
    for sid in SESSIONS:
        soft = detect_bits([per[codec.variant_for(sid, live.stamp, msn)][i] for i, msn in enumerate(window)], pattern)
        m = codec.decode(soft, candidates, offset=window[0])
        assert m is not None and m.session_id == sid


def test_session_variants_match_the_origin(live: Live, window: list[int], media: dict[str, object]) -> None:
    """The origin's choice is `SessionVariants.variant` with the token's claims."""
    sv = SessionVariants(WM_SECRET, stream="live", rendition=RUNG)
    claims = TokenClaims(kid=KID, acl="/live/live/", expires=live.expires, session_id=SESSIONS[2])
    for i, msn in enumerate(window):
        v = sv.variant(f"live/{RUNG}/{msn}.m4s", claims)
        assert live.get(f"{msn}.m4s", SESSIONS[2]).content == media[v][i]  # type: ignore[index]


@pytest.mark.browser
@pytest.mark.skipif(not chromium_available(), reason="Debian chromium is installed by `make test`")
def test_hlsjs_plays_the_watermarked_stream_without_stalls(live: Live, window: list[int]) -> None:
    sid = "browser-viewer"
    seconds = 20
    with launch_chromium() as browser:
        page = open_player(browser, live.proc.url(f"/?player=hls&token={live.token(sid)}"))
        started = wait_playing(page, timeout=30)
        t0, first = time.monotonic(), started["currentTime"]
        while time.monotonic() - t0 < seconds:
            page.wait_for_timeout(1000)
            stats = read_stats(page)
            assert stats["stalls"] == 0 and not stats["errors"], (json.dumps(stats), page.console_log[-20:])
        stats = read_stats(page)
        assert stats["currentTime"] - first > seconds * 0.9, stats
        assert stats["width"] == 640, stats
        page.close()
    # the viewer was served both variants while it played
    pl = live.playlist()
    served = {live.codec.variant_for(sid, live.stamp, s.msn) for s in pl.segments[-seconds:]}
    assert served == {"A", "B"}
