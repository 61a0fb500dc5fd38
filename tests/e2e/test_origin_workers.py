"""`flowcast up --workers 2`: a second origin process on the same port serves the live
stream from its replica, relays what it cannot answer, and is replaced when it dies."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from flowcast.package.m3u8 import parse_media_playlist

from .livestack import LiveProcess

pytestmark = pytest.mark.slow

PLAYLIST = "/live/live/240p/index.m3u8"


def _config(tmp_path: Path) -> Path:
    cfg = tmp_path / "flowcast.yml"
    cfg.write_text(
        "ladder:\n  rungs:\n"
        '    - {name: 240p, width: 426, height: 240, video_bitrate_kbps: 400, profile: baseline, level: "3.0"}\n'
        "telemetry:\n  enabled: true\n"
    )
    return cfg


def _worker_pids(live: LiveProcess) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(live.proc.pid), "-f", "flowcast.origin.worker_main"],
                         capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def _playlist_requests(live: LiveProcess) -> float:
    text = httpx.get(live.url("/metrics"), timeout=5).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith('flowcast_origin_requests_total{resource="playlist",status="200"}'))


def _fetch_while_main_stopped(live: LiveProcess, path: str, tries: int = 24) -> list[httpx.Response]:
    """Fresh connections while the main process is stopped: only a worker can answer
    (the kernel hashes each connection to one of the processes sharing the port)."""
    os.kill(live.proc.pid, signal.SIGSTOP)
    answered = []
    try:
        for _ in range(tries):
            try:
                answered.append(httpx.get(live.url(path), timeout=0.8, headers={"connection": "close"}))
            except httpx.TimeoutException:
                pass  # this connection landed on the stopped main process
    finally:
        os.kill(live.proc.pid, signal.SIGCONT)
    return answered


async def _blocking_viewers(base: str, viewers: int, seconds: float) -> list[list[tuple[int, int]]]:
    """LL-HLS viewers on their own connections, each reloading with _HLS_msn/_HLS_part for
    the part after the last one it saw; returns every viewer's sequence of positions."""

    async def viewer() -> list[tuple[int, int]]:
        seen: list[tuple[int, int]] = []
        async with httpx.AsyncClient(base_url=base, timeout=5) as client:
            pl = parse_media_playlist((await client.get(PLAYLIST)).text)
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                msn, part = pl.last_msn_part
                r = await client.get(PLAYLIST, params={"_HLS_msn": msn, "_HLS_part": (part or 0) + 1})
                assert r.status_code == 200, r.status_code
                pl = parse_media_playlist(r.text)
                seen.append(pl.last_msn_part)
        return seen

    return await asyncio.gather(*(viewer() for _ in range(viewers)))


def test_two_origin_processes_serve_one_stream(tmp_path: Path) -> None:
    live = LiveProcess(tmp_path, "--config", str(_config(tmp_path)), "--workers", "2")
    try:
        live.wait_ready(timeout=40)
        (worker,) = _worker_pids(live)
        init = httpx.get(live.url("/live/live/240p/init.mp4"), timeout=5)
        assert init.status_code == 200
        # The worker answers from its replica while the main process is stopped, byte for byte.
        answered = _fetch_while_main_stopped(live, "/live/live/240p/init.mp4")
        assert answered and all(r.status_code == 200 and r.content == init.content for r in answered)
        # Blocking reloads over 40 connections, spread over both processes by the kernel:
        # every viewer follows the live edge part by part, none gets an error.
        before = _playlist_requests(live)
        seen = asyncio.run(_blocking_viewers(live.base, 40, 6.0))
        for positions in seen:
            assert positions == sorted(positions) and len(positions) >= 10, positions
        # /metrics (the main process's) counts the worker's share too, reported each second.
        made = sum(len(p) + 1 for p in seen)
        deadline = time.monotonic() + 5
        while _playlist_requests(live) - before < made and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _playlist_requests(live) - before >= made
        assert "flowcast_origin_workers 1.0" in httpx.get(live.url("/metrics"), timeout=5).text
        # Requests a worker cannot answer are relayed to the main process (QoE collector: it
        # refuses an empty batch with 400 naming the problem, whoever took the connection).
        statuses = {httpx.post(live.url("/qoe/v1/events"), json={}, timeout=5,
                               headers={"connection": "close"}).status_code for _ in range(12)}
        assert statuses == {400}
        # A killed worker is replaced, and the new one serves from a fresh snapshot.
        os.kill(worker, signal.SIGKILL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and _worker_pids(live) in ([], [worker]):
            time.sleep(0.2)
        (replacement,) = _worker_pids(live)
        assert replacement != worker
        time.sleep(1.0)  # the new worker reports ready after it listens
        answered = _fetch_while_main_stopped(live, PLAYLIST)
        assert answered and all(r.status_code == 200 for r in answered)
        assert all(parse_media_playlist(r.text).segments for r in answered)
        assert "exited with" in live.log()
    finally:
        live.stop()


def test_workers_with_the_forensic_watermark_is_a_config_error(tmp_path: Path) -> None:
    cfg = tmp_path / "flowcast.yml"
    cfg.write_text(
        "origin:\n  workers: 2\n"
        "protection:\n  require_token: true\n  watermark:\n    forensic: {rendition: 240p}\n"
        "ladder:\n  rungs:\n"
        '    - {name: 240p, width: 426, height: 240, video_bitrate_kbps: 400, profile: baseline, level: "3.0"}\n'
    )
    live = LiveProcess(tmp_path, "--config", str(cfg))
    try:
        assert live.proc.wait(30) != 0
        assert "origin.workers" in live.log()
    finally:
        live.stop()
