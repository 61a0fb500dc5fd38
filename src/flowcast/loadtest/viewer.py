"""What every virtual viewer shares: the per-viewer result (telemetry schema names), the
connections, bounded retries and latency sampling. Protocol clients: `hls_client.py`
(LL-HLS and plain HLS), `dash_client.py` (LL-DASH)."""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

from flowcast.loadtest.abr import Abr
from flowcast.loadtest.http import Connection, HttpError, Meter, Response
from flowcast.loadtest.playback import Playback

MAX_CONSECUTIVE_FAILURES = 8  # then the session ends with an error, as a player gives up
LATENCY_SAMPLE_EVERY_S = 1.0


class FatalViewerError(Exception):
    """The session cannot continue; `code` becomes error_code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class ViewerResult:
    """One session, in reference/schema.md field names (plus load-test extras)."""

    session_id: str
    protocol: str
    start_ts: float
    end_ts: float = 0.0
    startup_time_ms: float | None = None
    rebuffer_count: int = 0
    rebuffer_ms: float = 0.0
    avg_bitrate_kbps: float = 0.0
    latency_ms: list[float] = field(default_factory=list)  # samples, about one per second of play
    play_time_ms: float = 0.0
    error_code: str = ""
    # extras (not schema fields): what the report and the drills need
    stalls: list[tuple[float, float]] = field(default_factory=list)  # (wall start, ms)
    recovered_errors: int = 0
    requests: int = 0
    bytes_received: int = 0
    bitrate_switches: int = 0
    network_profile: str = ""
    last_media_ts: float = 0.0  # wall clock of the last media received (drills: did it keep coming?)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class ViewerBase:
    protocol = ""

    def __init__(self, host: str, port: int, path: str, *, end_at: float, meter: Meter | None, profile: str) -> None:
        self.host, self.port, self.path = host, port, path
        self.end_at = end_at
        self.meter = meter
        now = time.monotonic()
        self.wall_offset = time.time() - now
        self.result = ViewerResult(uuid.uuid4().hex, self.protocol, now + self.wall_offset, network_profile=profile)
        self.playlist_conn = Connection(host, port, meter)
        self.media_conn = Connection(host, port, meter)
        self.pb = Playback(resume_target_s=0.5, request_ts=now, wall_offset=self.wall_offset)
        self.abr = Abr((1,))
        self._failures = 0
        self._next_latency = 0.0
        self._last_bitrate: int | None = None

    # --- helpers -------------------------------------------------------------------------
    def remaining(self) -> float:
        return self.end_at - time.monotonic()

    async def get(self, conn: Connection, path: str, timeout: float, on_data=None, ok=(200,)) -> Response:  # type: ignore[no-untyped-def]
        """GET with bounded retries; raises FatalViewerError after MAX_CONSECUTIVE_FAILURES."""
        while True:
            t = min(timeout, max(0.05, self.remaining() + 0.5))
            try:
                resp = await conn.get(path, timeout=t, on_data=on_data)
                self.result.requests += 1
                self.result.bytes_received += resp.nbytes
                if resp.status in ok:
                    self._failures = 0
                    return resp
                err = f"http_{resp.status}"
            except (HttpError, OSError, asyncio.TimeoutError) as exc:
                self.result.requests += 1
                err = "timeout" if isinstance(exc, asyncio.TimeoutError) else "network"
            self._failures += 1
            self.result.recovered_errors += 1
            if self._failures >= MAX_CONSECUTIVE_FAILURES:
                raise FatalViewerError(err, f"{path}: {self._failures} consecutive failures")
            if self.remaining() <= 0:
                raise asyncio.TimeoutError
            await asyncio.sleep(min(2.0, 0.1 * 2 ** min(self._failures, 5)))

    def note_bitrate(self, kbps: int) -> None:
        if self._last_bitrate is not None and kbps != self._last_bitrate:
            self.result.bitrate_switches += 1
        self._last_bitrate = kbps

    def sample_latency(self) -> None:
        now = time.monotonic()
        self.result.last_media_ts = round(now + self.wall_offset, 3)
        if now < self._next_latency or not self.pb.playing:
            self.pb.advance(now)
            return
        lat = self.pb.latency_ms(now)
        if lat is not None:
            self.result.latency_ms.append(round(lat, 1))
            self._next_latency = now + LATENCY_SAMPLE_EVERY_S

    async def play(self) -> None:
        raise NotImplementedError

    async def run(self) -> ViewerResult:
        try:
            await asyncio.wait_for(self.play(), max(0.0, self.remaining()))
        except asyncio.TimeoutError:
            pass  # the session's time is up: a normal end
        except FatalViewerError as exc:
            self.result.error_code = exc.code
        except Exception as exc:  # noqa: BLE001 - a bug or a malformed response ends this viewer, not the run
            self.result.error_code = f"client_{type(exc).__name__}"
        finally:
            self.playlist_conn.close()
            self.media_conn.close()
        now = time.monotonic()
        self.pb.finish(now)
        r = self.result
        r.end_ts = now + self.wall_offset
        r.startup_time_ms = None if self.pb.startup_time_ms is None else round(self.pb.startup_time_ms, 1)
        r.rebuffer_count = self.pb.rebuffer_count
        r.rebuffer_ms = round(self.pb.rebuffer_ms, 1)
        r.play_time_ms = round(self.pb.play_time_ms, 1)
        r.avg_bitrate_kbps = round(self.pb.avg_bitrate_kbps, 1)
        r.stalls = [(round(a, 3), round(b, 1)) for a, b in self.pb.stalls]
        if r.startup_time_ms is None and not r.error_code and (r.end_ts - r.start_ts) > 10.0:
            r.error_code = "startup_timeout"  # ten seconds without a first frame: the user has left
        return r
