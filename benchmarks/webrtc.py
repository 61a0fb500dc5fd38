"""WebRTC (WHEP) benchmark: glass-to-glass latency in Chromium, and viewers per process.

    .venv/bin/python -m benchmarks.webrtc [--latency-seconds 60] [--step 4] [--step-seconds 10]

1. Latency: `flowcast up` (its own process, 720p30 WebRTC rendition, one small HLS rung)
   and Debian's headless Chromium playing `?player=whep`; the burned-in clock read by the
   player kit (web/timecode.js) gives glass-to-glass per frame; sampled every 200 ms for
   --latency-seconds, p50/p95 reported.
2. Viewers per process: the stack in this process (to read its counters); aiortc WHEP
   viewers are added in steps (each step in its own client
   process, so the clients' CPU is not charged to the server's event loop). The clients
   receive RTP, SRTP and depacketise but do not decode (the receiver's decoder thread is
   replaced by a counter: decoding 720p is a client's cost, not the server's). After each
   step the server's own counters say whether every viewer still got every frame:
   per-viewer send rate >= 97% of the frame rate, no frames dropped by the fan-out
   (a viewer's queue overflowing), encoder speed >= 0.97x. The figure is the last step
   that held. On a shared 2-core machine the figure is a floor, not a ceiling.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import statistics
import sys
import tempfile
import time
from pathlib import Path

from flowcast.config import parse_config
from flowcast.origin.server import free_port


def _config(port: int, data_dir: str) -> object:
    return parse_config({
        "ladder": {"rungs": [{"name": "240p", "width": 426, "height": 240, "video_bitrate_kbps": 300,
                              "profile": "baseline", "level": "3.0"}]},
        "origin": {"port": port},
        "telemetry": {"enabled": False},
        "data_dir": data_dir,
        "webrtc": {"enabled": True, "ice_host_addresses": ["127.0.0.1"], "max_viewers": 1000, "connect_timeout_s": 30},
    })  # fmt: skip


def _pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, int(-(-p * len(s) // 100)) - 1))]


async def measure_latency(url: str, seconds: float) -> dict[str, float]:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests.browser import launch_chromium_async, open_player_async, read_stats_async, wait_playing_async

    samples: list[float] = []
    async with launch_chromium_async() as browser:
        page = await open_player_async(browser, f"{url}/?player=whep&telemetry=off")
        await wait_playing_async(page, 30)
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            stats = await read_stats_async(page)
            if stats.get("latencySource") == "timecode" and stats.get("latencyMs") is not None:
                samples.append(float(stats["latencyMs"]))
            await asyncio.sleep(0.2)
        webrtc = (await read_stats_async(page)).get("webrtc") or {}
        await page.close()
    return {"samples": len(samples), "p50_ms": _pct(samples, 50), "p95_ms": _pct(samples, 95),
            "mean_ms": statistics.fmean(samples), "dropped_frames": webrtc.get("dropped_frames", 0),
            "freezes": webrtc.get("rebuffer_count", 0)}  # fmt: skip


# -- client processes -------------------------------------------------------------------------


def _client_process(url: str, n: int, ready: "mp.synchronize.Event", stop: "mp.synchronize.Event") -> None:
    import aiortc.rtcrtpreceiver as receiver

    def counting_worker(loop, input_q, output_q, decode_error) -> None:  # type: ignore[no-untyped-def]
        while input_q.get() is not None:  # an encoded frame, depacketised: count, do not decode
            pass

    receiver.decoder_worker = counting_worker  # benchmark clients only: see the module docstring

    async def run() -> None:
        import httpx
        from aiortc import RTCPeerConnection, RTCSessionDescription

        pcs = []
        async with httpx.AsyncClient(timeout=30) as client:
            for _ in range(n):
                pc = RTCPeerConnection()
                pc.addTransceiver("video", direction="recvonly")
                pc.addTransceiver("audio", direction="recvonly")
                await pc.setLocalDescription(await pc.createOffer())
                r = await client.post(f"{url}/whep/live", content=pc.localDescription.sdp,
                                      headers={"content-type": "application/sdp"})  # fmt: skip
                if r.status_code != 201:
                    print(f"client: POST {r.status_code} {r.text[:100]}", file=sys.stderr)
                    continue
                await pc.setRemoteDescription(RTCSessionDescription(r.text, "answer"))
                pcs.append(pc)
        ready.set()
        while not stop.is_set():
            await asyncio.sleep(0.5)
        for pc in pcs:
            await pc.close()

    asyncio.run(run())


def _sent(whep) -> dict[str, int]:  # type: ignore[no-untyped-def]
    """Video frames handed to aiortc so far, per connected viewer."""
    return {sid: sess.tracks[0].frames_sent for sid, sess in whep.sessions.items() if sess.connected_at}


async def ramp(stack, step: int, step_seconds: float, max_viewers: int) -> list[dict[str, float]]:  # type: ignore[no-untyped-def]
    ctx = mp.get_context("spawn")
    stop = ctx.Event()
    procs = []
    rows: list[dict[str, float]] = []
    whep, fps = stack.webrtc.whep, stack.config.webrtc.fps
    try:
        while whep.stats()["viewers"] < max_viewers:
            ready = ctx.Event()
            p = ctx.Process(target=_client_process, args=(stack.url, step, ready, stop), daemon=True)
            p.start()
            procs.append(p)
            while not ready.is_set():
                await asyncio.sleep(0.2)
            await asyncio.sleep(3)  # ICE + DTLS + first keyframe
            before, drops0, t0 = _sent(whep), whep.stats()["frames_dropped"], time.monotonic()
            await asyncio.sleep(step_seconds)
            after, dt = _sent(whep), time.monotonic() - t0
            # Per viewer, over the viewers connected for the whole window.
            rates = [(after[sid] - before[sid]) / dt for sid in before if sid in after]
            viewers = len(after)
            mean = statistics.fmean(rates) if rates else 0.0
            dropped = whep.stats()["frames_dropped"] - drops0
            speed = stack.supervisor.speed or 0.0
            ok = viewers >= len(procs) * step * 0.95 and mean >= 0.97 * fps and dropped == 0 and speed >= 0.97
            row = {"viewers": viewers, "fps_per_viewer": round(mean, 1), "min_fps": round(min(rates, default=0), 1),
                   "dropped": dropped, "encoder_speed": speed, "ok": ok}  # fmt: skip
            print(f"  {row}", flush=True)
            rows.append(row)
            if not ok:
                break
    finally:
        stop.set()
        for p in procs:
            p.join(15)
            if p.is_alive():
                p.terminate()
    return rows


BENCH_YAML = """
ladder:
  rungs: [{name: 240p, width: 426, height: 240, video_bitrate_kbps: 300, profile: baseline, level: "3.0"}]
telemetry: {enabled: false}
webrtc: {enabled: true, ice_host_addresses: ["127.0.0.1"]}
"""


async def latency_phase(seconds: float, tmp: Path) -> None:
    """Chromium against `flowcast up` in its own process, as a user runs it."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests.e2e.livestack import LiveProcess

    cfg = tmp / "bench.yaml"
    cfg.write_text(BENCH_YAML)
    live = LiveProcess(tmp, "--config", str(cfg))
    try:
        await asyncio.to_thread(live.wait_ready, "/")
        await asyncio.sleep(3)
        lat = await measure_latency(live.base, seconds)
    finally:
        live.stop()
    speeds = [line.split("speed=")[1].split()[0] for line in live.log().splitlines() if "encoder speed=" in line]
    print(f"WHEP glass to glass over {seconds:.0f} s in Chromium: p50 {lat['p50_ms']:.0f} ms, "
          f"p95 {lat['p95_ms']:.0f} ms ({lat['samples']:.0f} samples, dropped frames {lat['dropped_frames']}, "
          f"freezes {lat['freezes']}); encoder speed {' '.join(speeds[-6:])}", flush=True)  # fmt: skip


async def main(args: argparse.Namespace) -> None:
    from flowcast.origin.stack import LiveStack

    with tempfile.TemporaryDirectory(prefix="flowcast-webrtc-bench-") as tmp:
        if args.latency_seconds > 0:
            await latency_phase(args.latency_seconds, Path(tmp))
        if args.max_viewers <= 0:
            return
        stack = LiveStack(_config(free_port(), str(Path(tmp) / "ramp")))  # type: ignore[arg-type]
        await stack.start()
        try:
            await asyncio.sleep(3)
            print(f"ramp: +{args.step} aiortc viewers every {args.step_seconds:.0f} s (720p30 H.264 + Opus)", flush=True)
            rows = await ramp(stack, args.step, args.step_seconds, args.max_viewers)
            good = [r["viewers"] for r in rows if r["ok"]]
            held = f"{max(good):.0f}" if good else "0"
            print(f"viewers per process at 720p30 before frames drop: {held}"
                  + ("" if rows and not rows[-1]["ok"] else f" (ramp stopped at --max-viewers {args.max_viewers})"))
        finally:
            await stack.stop()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--latency-seconds", type=float, default=60.0)
    ap.add_argument("--step", type=int, default=4, help="viewers added per step")
    ap.add_argument("--step-seconds", type=float, default=10.0)
    ap.add_argument("--max-viewers", type=int, default=200)
    asyncio.run(main(ap.parse_args()))
