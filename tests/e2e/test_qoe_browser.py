"""QoE telemetry end to end: real players in Debian's Chromium against `flowcast up`.

- consent by click (pt-BR banner), then withdrawal erases the session;
- a consenting viewer plays LL-HLS ~25 s while the origin holds part publication
  (POST /admin/chaos/hold-publication) to force a ~3 s stall: the store holds the session
  with its startup time, exactly that one stall (3 +- 0.5 s), latency and bitrate samples,
  and the origin's requests joined by the CMCD sid;
- a viewer who declines leaves no session row (only anonymous counts);
- the /dashboard page draws its charts and one session's timeline.
"""

from __future__ import annotations

import hashlib

import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.browser import (
    canvas_nonempty,
    chromium_available,
    launch_chromium,
    open_player,
    read_stats,
    screenshot,
    wait_playing,
    wait_stats,
)

from .livestack import LiveProcess

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(not chromium_available(), reason="Debian chromium is installed by `make test`"),
]

ARTIFACTS = Path(os.environ.get("FLOWCAST_TEST_ARTIFACTS", "/tmp/flowcast-test-artifacts"))
# Batches leave the player every 5 s and the origin flushes to chDB every 1 s.
STORE_DELAY_S = 7.0
# The chaos endpoint needs the telemetry admin token; with it set, the admin routes
# (sessions, report) want it too, as a bearer header (never in a URL).
TOKEN = "qoe-browser-test-token-6a1f"
AUTH = {"authorization": f"Bearer {TOKEN}"}
TARGET_STALL_S = 3.0
ONE_RUNG = "ladder:\n  rungs: [{name: 360p, width: 640, height: 360, video_bitrate_kbps: 800}]\n"
# Release -> playback again: the held blocking reload and hinted part are answered at
# once, hls.js loads the parts it missed, appends and resumes: measured 0.62-0.79 s here
# (three runs of this test, stalls of 3.02-3.19 s with 0.6), so 0.7 centres the stall.
RESUME_S = 0.7


@pytest.fixture(scope="module")
def qlive(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveProcess]:
    tmp = tmp_path_factory.mktemp("qoe")
    cfg = tmp / "flowcast.yaml"
    cfg.write_text(ONE_RUNG)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FLOWCAST_TELEMETRY_ADMIN_TOKEN", TOKEN)
        proc = LiveProcess(tmp, "--config", str(cfg))
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def browser():
    with launch_chromium() as context:
        yield context


FREEZE_WATCH_JS = """() => {
  const v = document.getElementById('video');
  let last = v.currentTime, lastAt = performance.now();
  window.__freezes = [];
  setInterval(() => {
    const now = performance.now();
    if (v.currentTime !== last) {
      if (now - lastAt > 500) window.__freezes.push(Math.round(now - lastAt));
      last = v.currentTime;
      lastAt = now;
    }
  }, 20);
}"""


def session_doc(live: LiveProcess, sid: str) -> httpx.Response:
    return httpx.get(live.url(f"/qoe/v1/sessions/{sid}"), headers=AUTH, timeout=20)


def admin_get(live: LiveProcess, path: str, **params: str) -> dict:
    r = httpx.get(live.url(path), params=params, headers=AUTH, timeout=20)
    assert r.status_code == 200, r.text
    return r.json()


BUFFER_AHEAD_JS = """() => {
  const v = document.getElementById('video');
  for (let i = 0; i < v.buffered.length; i++) {
    if (v.buffered.start(i) <= v.currentTime + 0.05 && v.currentTime <= v.buffered.end(i))
      return v.buffered.end(i) - v.currentTime;
  }
  return 0;
}"""


def wait_session(live: LiveProcess, sid: str, predicate, timeout: float = 20.0) -> dict:
    deadline = time.monotonic() + timeout
    doc: dict = {}
    while time.monotonic() < deadline:
        r = session_doc(live, sid)
        if r.status_code == 200:
            doc = r.json()
            if predicate(doc):
                return doc
        time.sleep(0.5)
    raise AssertionError(f"session {sid} not as expected after {timeout} s: {doc}")


def analytics_sid(page) -> str | None:
    """The analytics session id once player.js has run (its module awaits its imports)."""
    page.wait_for_function("window.flowcastAnalytics !== undefined", timeout=10_000)
    return page.evaluate("window.flowcastAnalytics && window.flowcastAnalytics.sessionId")


def types(doc: dict) -> list[str]:
    return [e["type"] for e in doc["player_events"]]


def test_consent_banner_click_then_withdraw(browser, qlive: LiveProcess) -> None:
    page = open_player(browser, qlive.url("/?player=hls&lang=pt-BR"))
    try:
        banner = page.locator("#consent")
        banner.wait_for(timeout=10_000)
        text = banner.inner_text()
        assert "90 dias" in text and "qualidade" in text, text  # purpose and retention, in pt-BR
        assert analytics_sid(page) is None  # no id before opting in
        shown = "\n".join(
            page.locator(sel).inner_text() for sel in ("#consent-title", "#consent p", "#consent-accept", "#consent-decline")
        )
        page.click("#consent-accept")
        sid = analytics_sid(page)
        assert sid
        wait_playing(page, 25)
        doc = wait_session(qlive, sid, lambda d: {"session_start", "startup"} <= set(types(d)))
        assert doc["session"]["protocol"] == "ll-hls"
        # the proof of consent names the banner the viewer saw, by the hash of its text
        (grant,) = admin_get(qlive, f"/qoe/v1/consent/{sid}")["decisions"]
        assert grant["choice"] == "granted" and grant["language"] == "pt-BR"
        assert grant["banner_hash"] == hashlib.sha256(shown.encode()).hexdigest()
        assert grant["purposes"] == ["qoe_analytics"]
        page.click("#consent-withdraw")
        page.locator("#consent-withdrawn").wait_for(timeout=10_000)
        page.wait_for_timeout(STORE_DELAY_S * 1000)  # anything still in flight is refused
        assert session_doc(qlive, sid).status_code == 404
        choices = [d["choice"] for d in admin_get(qlive, f"/qoe/v1/consent/{sid}")["decisions"]]
        assert choices == ["granted", "withdrawn"]  # the erasure keeps the proofs
    finally:
        page.close()
    page = open_player(browser, qlive.url("/?player=hls&telemetry=on"))
    try:
        # The stored choice ("no" after the withdrawal) is remembered: no banner, no id.
        page.wait_for_timeout(1500)
        assert page.locator("#consent").count() == 0
        assert analytics_sid(page) is None
    finally:
        page.close()


def test_english_banner_by_default(browser, qlive: LiveProcess) -> None:
    page = open_player(browser, qlive.url("/?player=hls&lang=en"))
    try:
        page.evaluate("localStorage.clear()")
        page.reload(wait_until="domcontentloaded")
        text = page.locator("#consent").inner_text(timeout=10_000)
        assert "90 days" in text and "quality" in text, text
        page.click("#consent-decline")
        assert analytics_sid(page) is None
        page.evaluate("localStorage.clear()")
    finally:
        page.close()


def test_consenting_viewer_stall_startup_latency_bitrate_and_origin_join(browser, qlive: LiveProcess) -> None:
    page = open_player(browser, qlive.url("/?player=hls&consent=yes"))
    try:
        sid = analytics_sid(page)
        assert sid
        started = wait_playing(page, 25)
        # Ground truth, independent of player.js: freezes of the playhead longer than 0.5 s.
        page.evaluate(FREEZE_WATCH_JS)
        t_play = time.monotonic()
        page.wait_for_timeout(8000)
        assert read_stats(page)["stalls"] == 0
        # Hold part publication at the origin (chaos endpoint). The viewer plays on what it
        # has buffered ahead of the playhead (~1-1.5 s at the LL-HLS live edge), then stalls;
        # at the release everything held is published at once, the held blocking reload and
        # hinted part are answered, and playback resumes RESUME_S later. The stall is thus
        # hold - buffer + RESUME_S: we release TARGET_STALL_S - RESUME_S after the stall
        # began, so the hold lasts buffer + that (reported below).
        buffer_s = page.evaluate(BUFFER_AHEAD_JS)
        t_hold = time.monotonic()
        r = httpx.post(qlive.url("/admin/chaos/hold-publication"), params={"seconds": "15"}, headers=AUTH, timeout=10)
        assert r.status_code == 200, r.text
        try:
            page.wait_for_function("window.flowcastStats.stalls >= 1", polling=20, timeout=10_000)
            t_stall = time.monotonic()
            time.sleep(max(0.0, TARGET_STALL_S - RESUME_S - (time.monotonic() - t_stall)))
        finally:
            r = httpx.post(qlive.url("/admin/chaos/release-publication"), headers=AUTH, timeout=10)
        hold_s = time.monotonic() - t_hold
        assert r.status_code == 200 and r.json()["released"] > 0, r.text
        stats = wait_stats(page, lambda s: s["playing"] and s["stallMs"] > 0, timeout=15)
        stall_ms = stats["stallMs"]
        # Play on to ~25 s in total.
        page.wait_for_timeout(max(0.0, 25 - (time.monotonic() - t_play)) * 1000)
        final = read_stats(page)
        freezes = page.evaluate("window.__freezes")
        assert final["stalls"] == 1, final
        assert len(freezes) == 1, freezes
        assert not final["errors"], final["errors"]
    finally:
        page.close()  # pagehide: session_end goes out by sendBeacon

    doc = wait_session(qlive, sid, lambda d: "session_end" in types(d), timeout=20)
    ev = doc["player_events"]
    startup = [e for e in ev if e["type"] == "startup"]
    assert len(startup) == 1 and startup[0]["startup_time_ms"] == started["startupMs"]
    stalls = [e for e in ev if e["type"] == "stall"]
    assert len(stalls) == 1, stalls
    # The stored stall is the player's own measure, matches the frozen playhead the viewer
    # saw within 0.5 s, and is the ~3 s one we caused.
    stored = stalls[0]["rebuffer_ms"]
    assert stored == stall_ms
    assert abs(stored - freezes[0]) <= 500, (stored, freezes)
    print(f"hold {hold_s:.3f} s, buffer ahead {buffer_s:.3f} s, stalled {t_stall - t_hold:.3f} s into the hold: "
          f"stall stored {stored} ms, playhead frozen {freezes[0]} ms")
    assert abs(stored - TARGET_STALL_S * 1000) <= 500, (stored, freezes, hold_s, buffer_s)
    latency = [e["latency_ms"] for e in ev if e["type"] == "latency"]
    assert len(latency) >= 3 and all(0 < v < 15000 for v in latency), latency
    beats = [e for e in ev if e["type"] in ("heartbeat", "session_end")]
    assert any(e["avg_bitrate_kbps"] > 0 for e in beats)
    assert 18_000 < sum(e["play_time_ms"] for e in beats) < 30_000, beats
    # Origin requests carry the same session id (CMCD sid) and interleave with the events.
    reqs = doc["origin_requests"]
    assert len(reqs) > 20
    assert all(r["session_id"] == sid for r in reqs)
    assert {r["object_type"] for r in reqs} >= {"m", "v"}
    assert any(r["buffer_length_ms"] > 0 for r in reqs)
    statuses = [r["status"] for r in reqs]
    # Requests held across the hold may end 404/503/499 (hold timeout, page closed).
    assert statuses.count(200) >= 0.9 * len(statuses), sorted(set(statuses))
    assert all(r["ttfb_ms"] >= 0 and r["bytes"] >= 0 for r in reqs)
    assert ev[0]["ts"] - 5 < reqs[0]["ts"] < ev[-1]["ts"]
    sources = [x["source"] for x in doc["timeline"]]
    assert "player" in sources and "origin" in sources
    # The report sees it too.
    rep = admin_get(qlive, "/qoe/v1/report", since="1h", by="cdn")
    row = next(r for r in rep["rows"] if r["group"]["cdn"] == "origin")
    assert row["rebuffer_count"] >= 1 and row["startups"] >= 1
    pytest.stall_session = sid  # for the dashboard test


def test_declining_viewer_leaves_no_session(browser, qlive: LiveProcess) -> None:
    before = admin_get(qlive, "/qoe/v1/sessions", since="1h")["sessions"]
    anon_before = _anon_events(qlive)
    page = open_player(browser, qlive.url("/?player=hls&consent=no"))
    try:
        assert analytics_sid(page) is None
        wait_playing(page, 25)
        page.wait_for_timeout(6000)
        sent = page.evaluate("window.flowcastAnalytics.sent")
        assert sent["batches"] >= 1 and sent["refused"] == 0, sent
    finally:
        page.close()
    time.sleep(STORE_DELAY_S)
    after = admin_get(qlive, "/qoe/v1/sessions", since="1h")["sessions"]
    assert {s["session_id"] for s in after} == {s["session_id"] for s in before}
    assert _anon_events(qlive) > anon_before  # only counted, anonymously


def _anon_events(live: LiveProcess) -> int:
    rep = admin_get(live, "/qoe/v1/report", since="1h")
    return sum(a["events"] for a in rep["anonymous"])


@pytest.mark.parametrize(
    "query", ["player=dash", "player=shaka&src=/live/live/manifest.mpd", "player=shaka"], ids=["dash", "shaka-dash", "shaka-hls"]
)
def test_cmcd_sid_joins_every_player(browser, qlive: LiveProcess, query: str) -> None:
    page = open_player(browser, qlive.url(f"/?{query}&consent=yes"))
    try:
        sid = analytics_sid(page)
        wait_playing(page, 25)
        page.wait_for_timeout(3000)
    finally:
        page.close()
    doc = wait_session(qlive, sid, lambda d: len(d["origin_requests"]) > 5 and "startup" in types(d))
    assert {r["object_type"] for r in doc["origin_requests"]} & {"v", "av"}, doc["origin_requests"][:3]
    assert all(r["content_id"] == "live" for r in doc["origin_requests"])


def test_dashboard_charts_and_session_view(browser, qlive: LiveProcess) -> None:
    sid = getattr(pytest, "stall_session", None)
    if sid is None:
        sessions = admin_get(qlive, "/qoe/v1/sessions", since="1h")["sessions"]
        joined = [s["session_id"] for s in sessions if session_doc(qlive, s["session_id"]).json()["origin_requests"]]
        if not joined:
            pytest.skip("no session with origin requests stored yet (run with the stall test)")
        sid = joined[0]
    # The dashboard's admin fetches carry the token as a header (set by the browser here),
    # not as ?token= in the URL.
    page = browser.new_page()
    page.console_log = []
    page.set_extra_http_headers(AUTH)
    page.goto(qlive.url(f"/dashboard?session={sid}"), wait_until="domcontentloaded")
    try:
        page.wait_for_function("window.flowcastDashboard && window.flowcastDashboard.refreshes >= 1", timeout=20_000)
        page.wait_for_function("window.flowcastDashboard.session !== null", timeout=20_000)
        state = page.evaluate("window.flowcastDashboard")
        assert not state["errors"], state
        assert state["points"] > 0 and state["session"]["requests"] > 0, state
        for key in ("startup_p95_ms", "latency_p95_ms", "origin_requests", "avg_bitrate_kbps"):
            assert canvas_nonempty(page, f"#chart-{key}"), key
        assert canvas_nonempty(page, "#timeline")
        assert page.locator("#report tr").count() >= 2
        assert page.locator("#session-events tr").count() >= 5
        shot = screenshot(page, ARTIFACTS / "qoe-dashboard.png")
        assert shot.stat().st_size > 10_000
        shot = screenshot(page, ARTIFACTS / "qoe-session.png", "#session-view")
        assert shot.stat().st_size > 5_000
    finally:
        page.close()
