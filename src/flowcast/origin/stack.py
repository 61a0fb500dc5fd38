"""Wire one live stack together: encoder supervisor -> pipeline -> store <- HTTP origin.

Everything shares one asyncio loop, so a publish wakes waiting requests without crossing
a process boundary.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path

from flowcast.config import FlowcastConfig
from flowcast.origin.access import KID, MediaAccess, load_or_create_secret
from flowcast.origin.app import OriginApp, npm_vendor_dirs
from flowcast.origin.metrics import OriginMetrics
from flowcast.origin.pipeline import LivePipeline
from flowcast.origin.server import ServerHandle, serve
from flowcast.origin.store import MediaStore
from flowcast.protect.tokens import TokenSigner, TokenVerifier
from flowcast.transcode.encoders import EncoderUnavailable, UnknownEncoder
from flowcast.transcode.sources import SourceError
from flowcast.transcode.supervisor import EncoderSupervisor

log = logging.getLogger("flowcast")

WEB_DIR = Path(__file__).resolve().parent.parent / "web"


class StackError(Exception):
    """The stack cannot start: an unknown or unusable encoder, a bad source, a busy port."""


class LiveStack:
    """The live pipeline and its origin, started and stopped as one."""

    def __init__(self, config: FlowcastConfig) -> None:
        self.config = config
        self.store = MediaStore()
        self.metrics = OriginMetrics()
        self.signer: TokenSigner | None = None
        access = None
        if config.protection.require_token:
            secret = load_or_create_secret(config.data_dir)
            self.signer = TokenSigner({KID: secret}, KID)
            access = MediaAccess(TokenVerifier({KID: secret}))
        self.app = OriginApp(
            self.store,
            static_dir=WEB_DIR,
            vendor_dirs=npm_vendor_dirs(WEB_DIR / "node_modules"),
            metrics=self.metrics,
            access=access,
        )
        self.pipeline = LivePipeline(config, self.store, metrics=self.metrics)
        self.supervisor: EncoderSupervisor | None = None
        self.server: ServerHandle | None = None

    async def start(self) -> None:
        try:
            self.supervisor = EncoderSupervisor(
                self.config,
                on_output=self.pipeline.on_output,
                on_run_start=self.pipeline.on_run_start,
            )
        except (UnknownEncoder, EncoderUnavailable, SourceError) as exc:
            raise StackError(str(exc)) from None
        self.metrics.bind_encoder(self.supervisor)
        origin = self.config.origin
        try:
            self.server = await serve(self.app, origin.host, origin.port)
        except OSError as exc:
            raise StackError(f"cannot listen on {origin.host}:{origin.port}: {exc.strerror}") from None
        await self.supervisor.start()

    @property
    def url(self) -> str:
        assert self.server is not None
        return self.server.url

    def urls(self) -> dict[str, str]:
        base, stream = self.url, self.config.stream
        player = f"{base}/"
        if self.signer is not None:
            token = self.signer.sign(f"/live/{stream}/", ttl=self.config.protection.token_ttl)
            player = f"{base}/?stream={stream}&token={token}"
        return {
            "player": player,
            "multivariant": f"{base}/live/{stream}/master.m3u8",
            "mpd": f"{base}/live/{stream}/manifest.mpd",
            "metrics": f"{base}/metrics",
        }

    async def stop(self) -> None:
        if self.supervisor is not None:
            await self.supervisor.stop()
        if self.server is not None:
            await self.server.stop()


async def run_forever(config: FlowcastConfig) -> None:
    """`flowcast up`: start, print the URLs, run until SIGINT/SIGTERM."""
    stack = LiveStack(config)
    await stack.start()
    for name, url in stack.urls().items():
        print(f"{name:<13} {url}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        log.info("stopping")
        await stack.stop()
