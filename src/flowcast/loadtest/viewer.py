"""What every virtual viewer shares: the per-viewer result (telemetry schema names), the
connections, bounded retries and latency sampling. Protocol clients: `hls_client.py`
(LL-HLS and plain HLS), `dash_client.py` (LL-DASH)."""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit

from flowcast.loadtest import guard
from flowcast.loadtest.abr import Abr
from flowcast.loadtest.http import Connection, HttpError, Meter, Response
from flowcast.loadtest.playback import Playback

MAX_CONSECUTIVE_FAILURES = 8  # then the session ends with an error, as a player gives up
LICENSE_PATH = "/license/clearkey"  # what the player kit gives EME (the origin's license route)
LICENSE_GIVE_UP_S = 30.0  # a player retrying its license this long has failed (key system error)
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
    # redundant origins: the pathway / BaseURL played first, and each switch as
    # {"at": wall ts of the error, "from", "to", "error", "resumed_at": wall ts of the next media,
    #  "media_gap_s": decode time of the first new media after it minus the end of the media
    #  before it (0: neither skipped nor repeated), "frame_s": that media's frame duration}
    origin: str = ""
    failovers: list[dict[str, Any]] = field(default_factory=list)
    # media continuity of the track played (decode times of consecutive CMAF chunks, parsed
    # from the bytes): jumps of more than a frame, as [wall ts, origin, gap s] (first 20)
    media_chunks: int = 0
    media_jumps: list[list[Any]] = field(default_factory=list)
    # mean throughput of the media transfers the ABR measured (bits over their transfer times)
    throughput_kbps: float | None = None
    # encrypted streams: each ClearKey license request as [wall ts, HTTP status or 0 (network)]
    license_requests: list[list[float]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Origin:
    """One origin a viewer may play from: an HLS pathway or a DASH BaseURL."""

    id: str
    host: str
    port: int


# A viewer's way to an origin: (host, port) -> where to connect (the impairment relay, or as is).
Dialer = Callable[[str, int], Awaitable[tuple[str, int]]]


def origin_of(pathway_id: str, url: str) -> Origin:
    """An announced origin URL, checked by the guard (loopback or our namespaces only)."""
    u = urlsplit(url)
    if u.scheme != "http" or not u.hostname:
        raise FatalViewerError("refused_origin", f"origin {url!r}: only http:// is supported")
    try:
        host = guard.check_viewer_host(u.hostname)
    except guard.LoadTestRefused as exc:
        raise FatalViewerError("refused_origin", str(exc)) from None
    return Origin(pathway_id, host, u.port or 80)


class ViewerBase:
    protocol = ""

    def __init__(
        self,
        host: str,
        port: int,
        path: str,
        *,
        end_at: float,
        meter: Meter | None,
        profile: str,
        dial: Dialer | None = None,
    ) -> None:
        self.host, self.port, self.path = host, port, path
        # Failover (hls.js pathway fallback, dash.js BaseURL failover): where the viewer may
        # go when its origin fails; the protocol client fills it from the manifest.
        self.origins: list[Origin] = [Origin("target", host, port)]
        self.origin_idx = 0
        self._dial = dial
        self.licensed: set[str] = set()  # KIDs (hex) this viewer's "CDM" holds
        self.license_conn: Connection | None = None
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
        self._media_end: float | None = None  # decode time (s) where the media received so far ends

    # --- helpers -------------------------------------------------------------------------
    def remaining(self) -> float:
        return self.end_at - time.monotonic()

    async def use_origins(self, origins: list[Origin], first: int = 0) -> None:
        """The origins announced by the manifest, in priority order; play from `first`."""
        if not origins:
            return
        self.origins = origins
        self.result.origin = origins[first].id
        await self._switch_to(first)

    async def _switch_to(self, idx: int) -> None:
        self.origin_idx = idx
        o = self.origins[idx]
        host, port = (await self._dial(o.host, o.port)) if self._dial is not None else (o.host, o.port)
        self.playlist_conn.retarget(host, port)
        self.media_conn.retarget(host, port)
        if self.license_conn is not None:
            self.license_conn.retarget(host, port)

    async def _failover(self, failed_idx: int, err: str) -> bool:
        """Move to the next origin after an error on `failed_idx` (once per failure: the
        playlist and the part request fail together when an origin dies)."""
        if len(self.origins) < 2:
            return False
        if failed_idx == self.origin_idx:
            nxt = (failed_idx + 1) % len(self.origins)
            self.result.failovers.append(
                {
                    "at": round(time.time(), 3),
                    "from": self.origins[failed_idx].id,
                    "to": self.origins[nxt].id,
                    "error": err,
                    "resumed_at": None,
                }
            )
            await self._switch_to(nxt)
        return True

    async def get(self, conn: Connection, path: str, timeout: float, on_data=None, ok=(200,)) -> Response:  # type: ignore[no-untyped-def]
        """GET with bounded retries; raises FatalViewerError after MAX_CONSECUTIVE_FAILURES.
        A connection error, a timeout or a 5xx moves to the next origin at once, when there is one."""
        while True:
            t = min(timeout, max(0.05, self.remaining() + 0.5))
            idx = self.origin_idx
            try:
                resp = await conn.get(path, timeout=t, on_data=on_data)
                self.result.requests += 1
                self.result.bytes_received += resp.nbytes
                if resp.status in ok:
                    self._failures = 0
                    return resp
                err = f"http_{resp.status}"
                origin_failed = resp.status >= 500
            except (HttpError, OSError, asyncio.TimeoutError) as exc:
                self.result.requests += 1
                err = "timeout" if isinstance(exc, asyncio.TimeoutError) else "network"
                origin_failed = True
            self._failures += 1
            self.result.recovered_errors += 1
            if self._failures >= MAX_CONSECUTIVE_FAILURES:
                raise FatalViewerError(err, f"{path}: {self._failures} consecutive failures")
            if self.remaining() <= 0:
                raise asyncio.TimeoutError
            if origin_failed and await self._failover(idx, err):
                continue  # the other origin at once, as hls.js/dash.js do
            await asyncio.sleep(min(2.0, 0.1 * 2 ** min(self._failures, 5)))

    async def ensure_license(self, kid_hex: str) -> None:
        """Get the ClearKey license for `kid_hex` once, as EME does before it can decrypt;
        retried with backoff while the license server fails, for LICENSE_GIVE_UP_S."""
        if kid_hex in self.licensed:
            return
        if self.license_conn is None:
            self.license_conn = Connection(self.playlist_conn.host, self.playlist_conn.port, self.meter)
        kid = bytes.fromhex(kid_hex)
        body = json.dumps({"kids": [base64.urlsafe_b64encode(kid).rstrip(b"=").decode()], "type": "temporary"}).encode()
        give_up = time.monotonic() + LICENSE_GIVE_UP_S
        delay = 0.25
        while True:
            status = 0
            try:
                resp = await self.license_conn.get(LICENSE_PATH, timeout=5.0, method="POST", body=body)
                self.result.requests += 1
                status = resp.status
                if status == 200 and b'"keys"' in resp.body:
                    self.licensed.add(kid_hex)
                    self.result.license_requests.append([round(time.time(), 3), status])
                    return
            except (HttpError, OSError, asyncio.TimeoutError):
                self.license_conn.close()
            self.result.license_requests.append([round(time.time(), 3), status])
            self.result.recovered_errors += 1
            if time.monotonic() > give_up:
                raise FatalViewerError("license_error", f"no license for KID {kid_hex} after {LICENSE_GIVE_UP_S:g} s")
            if self.remaining() <= 0:
                raise asyncio.TimeoutError
            await asyncio.sleep(delay)
            delay = min(2.0, delay * 2)

    def note_bitrate(self, kbps: int) -> None:
        if self._last_bitrate is not None and kbps != self._last_bitrate:
            self.result.bitrate_switches += 1
        self._last_bitrate = kbps

    def note_media(self, start_s: float, duration_s: float, frame_s: float) -> bool:
        """A CMAF chunk of the played track arrived, with its decode time and duration. False
        for media entirely before what was received already (a segment re-requested from
        another origin after a failover: MSE would overwrite the same range with it, so it
        adds nothing); else the chunk is new, and its distance from the end of the media so
        far is recorded where it is more than a frame, and for the first chunk after a failover."""
        end = self._media_end
        if end is not None and start_s + duration_s <= end + frame_s / 2:
            return False
        self.result.media_chunks += 1
        if end is not None:
            gap = round(start_s - end, 6)
            if abs(gap) > frame_s and len(self.result.media_jumps) < 20:
                self.result.media_jumps.append([round(time.time(), 3), self.origins[self.origin_idx].id, gap])
            pending = [f for f in self.result.failovers if "media_gap_s" not in f]
            for f in pending:
                f["media_gap_s"], f["frame_s"] = gap, round(frame_s, 6)
        self._media_end = max(end or 0.0, start_s + duration_s)
        return True

    def sample_latency(self) -> None:
        now = time.monotonic()
        self.result.last_media_ts = round(now + self.wall_offset, 3)
        if self.result.failovers and self.result.failovers[-1]["resumed_at"] is None:
            self.result.failovers[-1]["resumed_at"] = self.result.last_media_ts
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
            if self.license_conn is not None:
                self.license_conn.close()
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
        if self.abr.measured_s > 0:
            r.throughput_kbps = round(self.abr.measured_bits / self.abr.measured_s / 1000.0, 1)
        if r.startup_time_ms is None and not r.error_code and (r.end_ts - r.start_ts) > 10.0:
            r.error_code = "startup_timeout"  # ten seconds without a first frame: the user has left
        return r
