"""Run `flowcast up` as a user would (a subprocess on a free loopback port) for end-to-end tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from flowcast.origin.server import free_port


class LiveProcess:
    """A `flowcast up` process; its log is kept in a file for assertions."""

    def __init__(self, tmp: Path, *args: str, port: int | None = None) -> None:
        self.port = port or free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = tmp / f"flowcast-{self.port}.log"
        self._log = self.log_path.open("wb")
        cmd = [sys.executable, "-m", "flowcast.cli", "up", "--port", str(self.port), "--data-dir", str(tmp / "data"), *args]
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)

    def url(self, path: str) -> str:
        return self.base + path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, path: str = "/live/live/master.m3u8", timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"flowcast up exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(self.url(path), timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"{path} not served within {timeout} s:\n{self.log()}")

    def encoder_pids(self) -> list[int]:
        """FFmpeg processes started by this flowcast process."""
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid), "ffmpeg"], capture_output=True, text=True)
        return [int(p) for p in out.stdout.split()]

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._log.close()
