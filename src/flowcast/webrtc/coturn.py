"""`flowcast up --turn`: run Debian's coturn (`turnserver`) with the config `turn.py` writes,
for as long as the stack runs."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
from pathlib import Path

from flowcast.webrtc.turn import coturn_config

log = logging.getLogger("flowcast.webrtc")

TURNSERVER = "turnserver"


class CoturnError(Exception):
    """coturn is missing or did not come up."""


class CoturnProcess:
    """One turnserver process on `listen_ip:port` checking TURN REST credentials of `secret`."""

    def __init__(
        self,
        secret: str,
        workdir: Path,
        *,
        listen_ip: str = "127.0.0.1",
        external_ip: str | None = None,
        port: int = 3478,
        min_port: int = 49160,
        max_port: int = 49200,
        allow_loopback_peers: bool = False,
        binary: str = TURNSERVER,
    ) -> None:
        self.workdir = Path(workdir)
        self.listen_ip = listen_ip
        self.public_ip = external_ip or listen_ip
        self.port = port
        self.binary = binary
        try:
            self.config_text = coturn_config(
                secret, listen_ip=listen_ip, external_ip=external_ip, port=port, min_port=min_port,
                max_port=max_port, allow_loopback_peers=allow_loopback_peers,
                pidfile=str(self.workdir / "turnserver.pid"),
            )  # fmt: skip
        except ValueError as exc:  # the message names the setting, never the secret's value
            raise CoturnError(f"webrtc.turn: {exc}") from None
        self.proc: asyncio.subprocess.Process | None = None
        self.log_path = self.workdir / "turnserver.log"

    @property
    def urls(self) -> tuple[str, ...]:
        host = f"[{self.public_ip}]" if ":" in self.public_ip else self.public_ip
        return (f"turn:{host}:{self.port}?transport=udp", f"turn:{host}:{self.port}?transport=tcp")

    async def start(self, timeout: float = 10.0) -> None:
        exe = shutil.which(self.binary)
        if exe is None:
            raise CoturnError("--turn needs Debian's coturn (`turnserver`): apt-get install coturn")
        self.workdir.mkdir(parents=True, exist_ok=True)
        conf = self.workdir / "turnserver.conf"
        # The config holds the shared secret: owner-only, like the other secrets in data_dir.
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(self.config_text)
        logf = self.log_path.open("ab")
        try:
            self.proc = await asyncio.create_subprocess_exec(
                exe, "-c", str(conf), stdin=asyncio.subprocess.DEVNULL, stdout=logf, stderr=logf,
                start_new_session=True,
            )  # fmt: skip
        finally:
            logf.close()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:  # coturn listens on TCP and UDP at once: a TCP connect means it is up
            if self.proc.returncode is not None:
                raise CoturnError(f"turnserver exited with {self.proc.returncode}; see {self.log_path}")
            try:
                _, writer = await asyncio.open_connection(self.listen_ip, self.port)
                writer.close()
                break
            except OSError:
                if loop.time() > deadline:
                    await self.stop()
                    raise CoturnError(f"turnserver did not listen on {self.listen_ip}:{self.port} in {timeout:.0f} s")
                await asyncio.sleep(0.1)
        log.info("coturn relaying on %s:%d (pid %d)", self.listen_ip, self.port, self.proc.pid)

    async def stop(self, timeout: float = 5.0) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.returncode is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), timeout)
        except asyncio.TimeoutError:
            proc.kill()
            await proc.wait()
        log.info("coturn stopped")
