"""Run the FFmpeg ladder forever: one process, one pipe per CMAF output, restarts on exit.

Interface for the packager (the simplest thing that is incremental):

    on_run_start(run_number, started_at_wallclock)   before each FFmpeg run starts
    on_output(output_name, data)                     every chunk read from an output pipe

Both are called on the event loop thread, must not block, and see a run's data strictly
after its `on_run_start`. Chunks have arbitrary boundaries (whatever the pipe delivered),
not box boundaries: the packager's fMP4 reader buffers. Each run is a fresh fMP4 stream
per output (new ftyp+moov, timestamps from 0), so a new run is a discontinuity; the
wall-clock start time lets the packager place it on its timeline. Epoch-locked
(redundant origins, transcode/epoch.py) a run's timestamps are seconds since 1970 instead
and its first video frame is a segment boundary, so a new run continues the timeline.
Output names are the rung names and "audio" (`command.output_names`).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import signal
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from flowcast.config import FlowcastConfig
from flowcast.transcode.command import build_command, loggable, output_names
from flowcast.transcode.epoch import describe_input_lock, input_lock_residual
from flowcast.transcode.encoders import check_encoder
from flowcast.transcode.forensic import ForensicEncode
from flowcast.transcode.rtmp_front import RtmpFront, free_loopback_port
from flowcast.transcode.sources import Source, ingest_refusal, resolve_source

log = logging.getLogger("flowcast.transcode")

OnOutput = Callable[[str, bytes], None]
OnRunStart = Callable[[int, float], None]

FIRST_RESTART_DELAY = 0.2  # s: the first restart is (almost) immediate
MAX_RESTART_DELAY = 10.0
HEALTHY_RUN = 30.0  # s: a run this long resets the crash-loop backoff
STDERR_KEPT = 20


class _PipeReader(asyncio.Protocol):
    def __init__(self, name: str, sink: OnOutput, counter: Callable[[int], None]) -> None:
        self.name = name
        self.sink = sink
        self.counter = counter
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:  # type: ignore[override]
        self.counter(len(data))
        try:
            self.sink(self.name, data)
        except Exception:
            log.exception("on_output(%s) failed", self.name)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


class EncoderSupervisor:
    """Keeps one FFmpeg ladder process running; see the module docstring for the callbacks."""

    def __init__(
        self,
        config: FlowcastConfig,
        *,
        on_output: OnOutput,
        on_run_start: OnRunStart | None = None,
        source: Source | None = None,
        ffmpeg: str = "ffmpeg",
        speed_log_interval: float = 10.0,
        forensic: ForensicEncode | None = None,
    ) -> None:
        check_encoder(config.encoder)  # UnknownEncoder / EncoderUnavailable before anything runs
        self.config = config
        self.source = source or resolve_source(
            config.ingest, rtmp_internal_port=free_loopback_port(), epoch_locked=config.epoch_locked
        )
        # RTMP: FFmpeg cannot refuse a wrong stream key, so our front owns the public port
        self.rtmp_front = RtmpFront(self.source) if self.source.kind == "rtmp" else None
        self.on_output = on_output
        self.on_run_start = on_run_start
        self.ffmpeg = ffmpeg
        self.speed_log_interval = speed_log_interval
        self.forensic = forensic  # the marked rung's pattern: its variant B is one more output
        # latest progress figures
        self.speed: float | None = None
        self.fps: float | None = None
        self.frame: int = 0
        self.restarts = 0
        self.run_number = 0
        self.bytes_out = 0
        self.pid: int | None = None
        self.last_stderr: collections.deque[str] = collections.deque(maxlen=STDERR_KEPT)
        self._proc: asyncio.subprocess.Process | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._last_speed_log = 0.0
        self.input_locked: bool | None = None  # epoch-locked contribution: its clock is the wall clock
        self._workdir: tempfile.TemporaryDirectory[str] | None = None  # an epoch-locked file's concat list

    # ---- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        if self.rtmp_front is not None and self._task is None:
            await self.rtmp_front.start()
        if self._task is None:
            self._task = asyncio.create_task(self._run_forever(), name="encoder-supervisor")

    async def stop(self, timeout: float = 5.0) -> None:
        """Terminate FFmpeg (SIGTERM, then SIGKILL after `timeout`) and stop restarting it."""
        self._stopping = True
        proc = self._proc
        if proc is not None and proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), timeout)
            except asyncio.TimeoutError:
                proc.kill()
                await proc.wait()
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        if self.rtmp_front is not None:
            await self.rtmp_front.stop()
        if self._workdir is not None:
            self._workdir.cleanup()
            self._workdir = None

    # ---- one run -----------------------------------------------------------------------

    def _count(self, n: int) -> None:
        self.bytes_out += n

    async def _run_once(self) -> int:
        loop = asyncio.get_running_loop()
        names = output_names(self.config)
        pipes = {name: os.pipe() for name in names}
        write_fds = {name: w for name, (_, w) in pipes.items()}
        # An epoch-locked file is read from the position the wall clock says (sources.FilePlayout).
        if self.source.playout is not None and self._workdir is None:
            self._workdir = tempfile.TemporaryDirectory(prefix="flowcast-playout-")
        source = self.source.for_run(time.time(), Path(self._workdir.name)) if self._workdir else self.source
        cmd = build_command(
            self.config, write_fds, source=source, progress_fd=1, ffmpeg=self.ffmpeg, forensic=self.forensic
        )
        self.run_number += 1
        started = time.time()
        if self.on_run_start is not None:
            self.on_run_start(self.run_number, started)
        log.debug("run %d: %s", self.run_number, loggable(cmd, self.source))
        readers: list[_PipeReader] = []
        transports: list[asyncio.BaseTransport] = []
        try:
            self._proc = await asyncio.create_subprocess_exec(
                *cmd,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                pass_fds=list(write_fds.values()),
                start_new_session=True,  # a terminal's Ctrl-C reaches us, and we stop FFmpeg
            )
        finally:
            for w in write_fds.values():
                os.close(w)
        proc = self._proc
        self.pid = proc.pid
        try:
            for name, (r, _) in pipes.items():
                reader = _PipeReader(name, self.on_output, self._count)
                transport, _ = await loop.connect_read_pipe(lambda reader=reader: reader, os.fdopen(r, "rb", 0))
                readers.append(reader)
                transports.append(transport)
            assert proc.stdout is not None and proc.stderr is not None
            progress = asyncio.create_task(self._read_progress(proc.stdout))
            errors = asyncio.create_task(self._read_stderr(proc.stderr))
            rc = await proc.wait()
            await asyncio.wait([progress, errors, *(r.closed for r in readers)], timeout=2.0)
            return rc
        finally:
            for t in transports:
                t.close()
            if proc.returncode is None:
                proc.kill()
                await proc.wait()

    async def _run_forever(self) -> None:
        failures = 0
        while not self._stopping:
            started = time.monotonic()
            self.last_stderr.clear()
            try:
                rc = await self._run_once()
            except OSError as exc:  # ffmpeg missing, fd exhaustion...
                rc = None
                self.last_stderr.append(f"cannot start ffmpeg: {exc}")
            if self._stopping:
                break
            lasted = time.monotonic() - started
            failures = 1 if lasted >= HEALTHY_RUN else failures + 1
            why = " | ".join(list(self.last_stderr)[-5:]) or "no error output"
            how = f"was killed by signal {-rc}" if rc is not None and rc < 0 else f"exited with status {rc}"
            delay = FIRST_RESTART_DELAY if failures <= 1 else min(MAX_RESTART_DELAY, 0.5 * 2 ** (failures - 2))
            log.warning(
                "ffmpeg run %d %s after %.1f s; last stderr: %s; restarting in %.1f s",
                self.run_number, how, lasted, why, delay,
            )
            self.speed = self.fps = None
            await asyncio.sleep(delay)
            self.restarts += 1

    # ---- FFmpeg's side channels ----------------------------------------------------------

    async def _read_progress(self, stream: asyncio.StreamReader) -> None:
        block: dict[str, str] = {}
        async for raw in stream:
            key, _, value = raw.decode(errors="replace").strip().partition("=")
            if key != "progress":
                block[key] = value
                continue
            self._apply_progress(block)
            block = {}

    def _apply_progress(self, block: dict[str, str]) -> None:
        try:
            self.frame = int(block.get("frame", self.frame))
        except ValueError:
            pass
        try:
            self.fps = float(block["fps"])
        except (KeyError, ValueError):
            pass
        try:
            self.speed = float(block.get("speed", "").rstrip("x"))
        except ValueError:
            pass  # "N/A" until the first second
        now = time.monotonic()
        # FFmpeg reports 0.00x for the very first block of a run: log from the first real figure.
        if self.speed and now - self._last_speed_log >= self.speed_log_interval:
            self._last_speed_log = now
            log.info("encoder speed=%.2fx fps=%.1f", self.speed, self.fps or 0.0)

    async def _read_stderr(self, stream: asyncio.StreamReader) -> None:
        async for raw in stream:
            line = self.source.mask(raw.decode(errors="replace").rstrip())
            if not line:
                continue
            residual = input_lock_residual(line)
            if residual is not None:
                # the first frame of each stream reports its input clock (transcode.epoch)
                locked, sentence = describe_input_lock(residual)
                if locked != self.input_locked:
                    (log.info if locked else log.warning)("%s", sentence)
                self.input_locked = locked
                continue
            self.last_stderr.append(line)
            refusal = ingest_refusal(line)
            if refusal:
                log.warning("%s", refusal)
            else:
                log.debug("ffmpeg: %s", line)
