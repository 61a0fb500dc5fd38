"""Wiring for `flowcast pixelstreaming`: the signalling server, optionally with a simulated
streamer in the same process, and ICE servers (STUN/TURN) for both sides."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flowcast.protect.tokens import TokenVerifier
from flowcast.webrtc.pixelstreaming.server import Listen, PixelStreamingServer
from flowcast.webrtc.pixelstreaming.signalling import HubLimits, Role, SignallingHub
from flowcast.webrtc.pixelstreaming.streamer import SharedEncoder, SimulatedStreamer
from flowcast.webrtc.turn import turn_credentials

log = logging.getLogger("flowcast.pixelstreaming")

TURN_SECRET_ENV = "FLOWCAST_TURN_SECRET"


@dataclass(frozen=True)
class IceConfig:
    stun_urls: tuple[str, ...] = ()
    turn_urls: tuple[str, ...] = ()
    turn_secret: str | None = field(default=None, repr=False)
    turn_ttl: int = 3600

    def peer_connection_options(self, role: Role) -> dict[str, Any]:
        """RTCConfiguration for the `config` message; TURN REST credentials minted per call."""
        servers: list[dict[str, Any]] = []
        if self.stun_urls:
            servers.append({"urls": list(self.stun_urls)})
        if self.turn_urls and self.turn_secret:
            user = f"ps-{role}-{secrets.token_hex(4)}"
            servers.append(turn_credentials(self.turn_secret, user, ttl=self.turn_ttl, urls=self.turn_urls).ice_server())
        return {"iceServers": servers}


@dataclass(frozen=True)
class PixelStreamingOptions:
    listen: Listen = Listen()
    limits: HubLimits = HubLimits()
    ice: IceConfig = IceConfig()
    verifier: TokenVerifier | None = None
    simulated_streamer: bool = False
    streamer_id: str = "DefaultStreamer"
    input_log: Path | None = None
    width: int = 1280
    height: int = 720
    ice_hosts: tuple[str, ...] = ()  # host candidates of the simulated streamer (default: aioice's)
    audio: bool = True
    lip_sync: bool = False  # audio in the video's MediaStream (the browser then syncs them)


def use_ice_hosts(addresses: tuple[str, ...]) -> None:
    """Gather the simulated streamer's host candidates on exactly these addresses (aioice
    skips loopback and has no option for it; `webrtc.ice` holds the one hook)."""
    if addresses:
        from flowcast.webrtc.ice import use_host_addresses

        use_host_addresses(addresses)


async def run_pixelstreaming(options: PixelStreamingOptions, ready: asyncio.Event | None = None) -> None:
    """Serve until cancelled."""
    if options.simulated_streamer:
        use_ice_hosts(options.ice_hosts)  # a bad address fails here, before anything listens
    hub = SignallingHub(options.ice.peer_connection_options, options.limits)
    server = PixelStreamingServer(hub, verifier=options.verifier)
    await server.start(options.listen)
    streamer_task: asyncio.Task[None] | None = None
    try:
        if options.simulated_streamer:
            host = options.listen.host if options.listen.host not in ("0.0.0.0", "::") else "127.0.0.1"
            streamer = SimulatedStreamer(
                f"ws://{host}:{server.ports['streamer']}",
                streamer_id=options.streamer_id,
                encoder=SharedEncoder(options.width, options.height, audio=options.audio),
                input_log=options.input_log,
                lip_sync=options.lip_sync,
            )
            streamer_task = asyncio.create_task(streamer.run())
        print(f"pixelstreaming  http://{options.listen.host}:{server.ports['player']}/  streamer ws://{options.listen.host}:{server.ports['streamer']}", flush=True)
        if ready:
            ready.set()
        await asyncio.Event().wait()
    finally:
        if streamer_task:
            streamer_task.cancel()
            await asyncio.gather(streamer_task, return_exceptions=True)
        await server.close()


async def run_streamer(
    url: str, streamer_id: str, input_log: Path | None, width: int = 1280, height: int = 720,
    ice_hosts: tuple[str, ...] = (), audio: bool = True, lip_sync: bool = False,
) -> None:
    use_ice_hosts(ice_hosts)
    encoder = SharedEncoder(width, height, audio=audio)
    await SimulatedStreamer(url, streamer_id=streamer_id, encoder=encoder, input_log=input_log, lip_sync=lip_sync).run()


def turn_secret_from_env() -> str | None:
    return os.environ.get(TURN_SECRET_ENV) or None
