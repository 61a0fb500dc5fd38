"""The interactive mode's egress, wired as one unit for the stack: encoder tap -> fan-out ->
WHEP peers, plus coturn when `webrtc.turn.enabled`."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path

from flowcast.config import FlowcastConfig
from flowcast.protect.devsecret import dev_secret_file
from flowcast.protect.tokens import TokenVerifier
from flowcast.transcode.command import WEBRTC_OUTPUT, h264_level  # what the encoder writes
from flowcast.webrtc.coturn import CoturnError, CoturnProcess
from flowcast.webrtc.forward import Fanout
from flowcast.webrtc.ice import use_host_addresses
from flowcast.webrtc.source import EncoderTap
from flowcast.webrtc.whep import TurnIssuer, WhepService


TURN_SECRET_FILE = "turn.secret"
OnOutput = Callable[[str, bytes], None]  # the supervisor's callbacks (transcode/supervisor.py)
OnRunStart = Callable[[int, float], None]


def turn_secret(env_name: str, data_dir: Path) -> str:
    """The coturn static-auth-secret: from the environment, else a 0600 file (development)."""
    value = os.environ.get(env_name)
    if value:
        return value
    return dev_secret_file(Path(data_dir) / TURN_SECRET_FILE, env_name)


def profile_level_id(level: str) -> str:
    """Constrained baseline at `level` ("3.1") as an SDP profile-level-id ("42e01f")."""
    return f"42e0{round(float(level) * 10):02x}"


class WebRTCEgress:
    """Owns the WebRTC side of one stack; `start`/`stop` with it."""

    def __init__(self, config: FlowcastConfig, *, verifier: TokenVerifier | None = None) -> None:
        w = config.webrtc
        use_host_addresses(w.ice_host_addresses)
        self.config = config
        self.fanout = Fanout()
        self.tap: EncoderTap | None = None
        self.coturn: CoturnProcess | None = None
        turn = None
        if w.turn.enabled:
            secret = turn_secret(w.turn.secret_env, config.data_dir)
            self.coturn = CoturnProcess(
                secret, Path(config.data_dir) / "coturn", listen_ip=w.turn.listen_ip,
                external_ip=w.turn.external_ip, port=w.turn.port,
                min_port=w.turn.min_port, max_port=w.turn.max_port,
                allow_loopback_peers=w.turn.allow_loopback_peers,
            )  # fmt: skip
            turn = TurnIssuer(secret, self.coturn.urls, ttl=w.turn.credential_ttl)
        self.whep = WhepService(
            config.stream, self.fanout, verifier=verifier, turn=turn, stun_urls=w.stun_urls,
            max_viewers=w.max_viewers, connect_timeout=w.connect_timeout_s,
            profile_level_id=profile_level_id(h264_level(w.width, w.height, w.fps)),
        )  # fmt: skip

    def wrap(self, on_output: OnOutput, on_run_start: OnRunStart) -> tuple[OnOutput, OnRunStart]:
        """The supervisor's callbacks: the "webrtc" output goes to the tap, the rest on."""

        def output(name: str, data: bytes) -> None:
            if name == WEBRTC_OUTPUT:
                if self.tap is not None:
                    self.tap.feed(data)
            else:
                on_output(name, data)

        def run_start(run: int, started: float) -> None:
            if self.tap is not None:
                self.tap.run_start(run, started)
            on_run_start(run, started)

        return output, run_start

    async def start(self) -> None:
        self.tap = EncoderTap(self.fanout.publish, asyncio.get_running_loop())
        if self.coturn is not None:
            await self.coturn.start()  # CoturnError: the stack refuses to start

    async def stop(self) -> None:
        await self.whep.close()
        if self.tap is not None:
            self.tap.close()
        if self.coturn is not None:
            await self.coturn.stop()


__all__ = ["CoturnError", "WebRTCEgress", "turn_secret"]
