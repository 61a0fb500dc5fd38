"""Wire one live stack together: encoder supervisor -> pipeline -> store <- HTTP origin.

Everything shares one asyncio loop, so a publish wakes waiting requests without crossing
a process boundary.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import signal
from pathlib import Path

from flowcast.config import FlowcastConfig
from flowcast.origin.access import KID, MediaAccess, load_or_create_secret
from flowcast.origin.app import OriginApp, npm_vendor_dirs
from flowcast.origin.license import ClearKeyLicenseServer
from flowcast.origin.metrics import OriginMetrics
from flowcast.origin.pipeline import LivePipeline
from flowcast.origin.server import ServerHandle, serve
from flowcast.origin.store import MediaStore
from flowcast.origin.telemetry_routes import TelemetryService
from flowcast.origin.tls import self_signed
from flowcast.protect.keystore import KeyStore, MasterKeyMissing, load_master_key
from flowcast.protect.tokens import TokenSigner, TokenVerifier
from flowcast.transcode.encoders import EncoderUnavailable, UnknownEncoder
from flowcast.transcode.sources import SourceError
from flowcast.transcode.supervisor import EncoderSupervisor

log = logging.getLogger("flowcast")

WEB_DIR = Path(__file__).resolve().parent.parent / "web"


class StackError(Exception):
    """The stack cannot start: an unknown or unusable encoder, a bad source, a busy port."""


MASTER_KEY_FILE = "master.key"
TELEMETRY_KEY_FILE = "telemetry_hmac.key"


def _dev_secret_file(path: Path, what: str) -> str:
    """A 0600 file holding 32 random bytes (hex), made on first use (development only)."""
    if not path.exists():
        log.warning("no %s in the environment: generating one in %s (development only)", what, path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
    return path.read_text().strip()


def open_telemetry(config: FlowcastConfig, metrics: OriginMetrics) -> TelemetryService:
    """The embedded chDB store under data_dir and the collector (opened once per process).

    The user-id HMAC key comes from the environment (telemetry.hmac_key_env); without it a
    key file is made beside, not inside, the store: the pseudonymised data and the key that
    could re-identify it are kept apart (LGPD Art. 13 par. 4)."""
    from flowcast.telemetry.collector import CollectorConfig, Collector
    from flowcast.telemetry.slo import SloError, load_slos
    from flowcast.telemetry.store import EmbeddedStore, Retention, StoreError

    tc = config.telemetry
    env = dict(os.environ)
    if not env.get(tc.hmac_key_env):
        env[tc.hmac_key_env] = _dev_secret_file(Path(config.data_dir) / TELEMETRY_KEY_FILE, tc.hmac_key_env)
    try:
        cc = CollectorConfig.from_env(env)
    except ValueError as exc:
        raise StackError(f"telemetry: {exc}") from None
    slo_text = None
    if tc.slo_file is not None:
        try:
            slo_text = Path(tc.slo_file).read_text()
        except OSError as exc:
            raise StackError(f"telemetry.slo_file: cannot read {tc.slo_file}: {exc.strerror}") from None
    try:
        slos, _rules = load_slos(slo_text)
    except SloError as exc:
        raise StackError(f"telemetry.slo_file: {exc}") from None
    retention = Retention(
        player_events_days=tc.retention_days,
        sessions_days=tc.retention_days,
        origin_requests_days=tc.origin_requests_retention_days,
    )
    store_dir = tc.store_dir(config.data_dir)
    try:
        store = EmbeddedStore(store_dir, retention=retention)
    except StoreError as exc:
        raise StackError(f"telemetry store: {exc}") from None
    return TelemetryService(
        store,
        Collector(cc),
        registry=metrics.registry,
        slos=slos,
        state_dir=store_dir,
        admin_token=os.environ.get(tc.admin_token_env) or None,
        flush_interval_s=tc.flush_interval_s,
        max_pending=tc.max_pending,
        origin_id=config.origin.host,
    )


def open_keystore(data_dir: Path, *, iv_size: int) -> KeyStore:
    """Content keys under the data dir, wrapped by the master key ($FLOWCAST_MASTER_KEY, else
    a 0600 file made on first use: fine on a laptop; in production give the env var or a KMS)."""
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        master = load_master_key()
    except MasterKeyMissing:
        path = data_dir / MASTER_KEY_FILE
        if not path.exists():
            log.warning("no FLOWCAST_MASTER_KEY: generating a master key in %s (development only)", path)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(32))
        master = load_master_key(path=path)
    return KeyStore(data_dir / "keys.json", master, iv_size=iv_size)


class LiveStack:
    """The live pipeline and its origin, started and stopped as one."""

    def __init__(self, config: FlowcastConfig) -> None:
        self.config = config
        self.store = MediaStore()
        self.metrics = OriginMetrics()
        self.signer: TokenSigner | None = None
        access = verifier = None
        if config.protection.require_token:
            secret = load_or_create_secret(config.data_dir)
            self.signer = TokenSigner({KID: secret}, KID)
            verifier = TokenVerifier({KID: secret})
            access = MediaAccess(verifier)
        content_key = license_server = None
        if config.protection.scheme != "none":
            keystore = open_keystore(config.data_dir, iv_size=16 if config.protection.scheme == "cbcs" else 8)
            content_key = keystore.key_for(config.stream, 0)
            license_server = ClearKeyLicenseServer(keystore, verifier)
        self.telemetry = open_telemetry(config, self.metrics) if config.telemetry.enabled else None
        self.app = OriginApp(
            self.store,
            static_dir=WEB_DIR,
            vendor_dirs=npm_vendor_dirs(WEB_DIR / "node_modules"),
            metrics=self.metrics,
            access=access,
            license_server=license_server,
            hsts=config.origin.tls,
            telemetry=self.telemetry,
        )
        self.pipeline = LivePipeline(config, self.store, metrics=self.metrics, content_key=content_key)
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
        cert, key = origin.tls_cert, origin.tls_key
        if origin.tls_self_signed:
            cert, key = self_signed(Path(self.config.data_dir) / "tls", ["localhost", "127.0.0.1", origin.host])
            log.warning("serving HTTPS with a self-signed development certificate: %s", cert)
        try:
            self.server = await serve(self.app, origin.host, origin.port, ssl_cert=cert, ssl_key=key)
        except OSError as exc:
            raise StackError(f"cannot listen on {origin.host}:{origin.port}: {exc.strerror}") from None
        if self.telemetry is not None:
            self.telemetry.start()
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
            **({"dashboard": f"{base}/dashboard"} if self.telemetry is not None else {}),
        }

    async def stop(self) -> None:
        if self.supervisor is not None:
            await self.supervisor.stop()
        if self.server is not None:
            await self.server.stop()
        if self.telemetry is not None:
            await self.telemetry.stop()


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
