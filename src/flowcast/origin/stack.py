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
from typing import TYPE_CHECKING

from flowcast.config import ConfigError, FlowcastConfig
from flowcast.origin.access import KID, MediaAccess, load_or_create_secret
from flowcast.origin.app import OriginApp, npm_vendor_dirs
from flowcast.origin.license import ClearKeyLicenseServer
from flowcast.origin.metrics import OriginMetrics
from flowcast.origin.pipeline import LivePipeline
from flowcast.origin.server import ServerHandle, serve, tune_gc
from flowcast.origin.store import MediaStore
from flowcast.origin.telemetry_routes import TelemetryService
from flowcast.origin.chaos import ChaosControl
from flowcast.origin.tracing import OriginTracing, TracingError, resolve_endpoint
from flowcast.origin.tls import self_signed
from flowcast.origin.peers import PeerHealth, own_peers
from flowcast.origin.workers import WorkerError, WorkerPool, worker_hello
from flowcast.protect.cpix import CpixError, parse_cpix
from flowcast.protect.devsecret import dev_secret_file
from flowcast.protect.keystore import KeyStore, MasterKeyMissing, load_master_key
from flowcast.protect.rotation import CpixKeys, KeyRotation, KeySchedule, KeySource, StoreKeys
from flowcast.protect.tokens import TokenSigner, TokenVerifier
from flowcast.protect.watermark_session import SessionVariants, WatermarkSecretError, write_pattern_file
from flowcast.protect.watermark_session import load_or_create_secret as load_watermark_secret
from flowcast.transcode.encoders import EncoderUnavailable, UnknownEncoder
from flowcast.transcode.forensic import ForensicEncode
from flowcast.transcode.sources import SourceError
from flowcast.transcode.supervisor import EncoderSupervisor

if TYPE_CHECKING:
    from flowcast.webrtc.whip import WhipEndpoint

log = logging.getLogger("flowcast")

WEB_DIR = Path(__file__).resolve().parent.parent / "web"


class StackError(Exception):
    """The stack cannot start: an unknown or unusable encoder, a bad source, a busy port."""


MASTER_KEY_FILE = "master.key"
TELEMETRY_KEY_FILE = "telemetry_hmac.key"


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
        env[tc.hmac_key_env] = dev_secret_file(Path(config.data_dir) / TELEMETRY_KEY_FILE, tc.hmac_key_env)
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
        slos, rules = load_slos(slo_text)
    except SloError as exc:
        raise StackError(f"telemetry.slo_file: {exc}") from None
    retention = Retention(
        player_events_days=tc.retention_days,
        sessions_days=tc.retention_days,
        origin_requests_days=tc.origin_requests_retention_days,
        consent_proofs_days=tc.consent_retention_days,
    )
    store_dir = tc.store_dir(config.data_dir)
    try:
        store = EmbeddedStore(store_dir, retention=retention)
    except StoreError as exc:
        raise StackError(f"telemetry store: {exc}") from None
    from flowcast.telemetry.cost import BaselineAnomalyDetector, CostMonitor
    from flowcast.telemetry.slo import WebhookSink

    cost = CostMonitor(
        store,
        egress_price_per_gb=tc.egress_price_per_gb,
        transcode_price_per_hour=tc.transcode_price_per_hour,
        detector=BaselineAnomalyDetector(
            "cost_per_viewer_minute", tc.anomaly_factor, tc.anomaly_baseline, min(tc.anomaly_warmup, tc.anomaly_baseline)
        ),
    )
    webhook = os.environ.get(tc.alert_webhook_env)
    try:
        sinks = [WebhookSink(webhook)] if webhook else []
    except ValueError as exc:
        raise StackError(f"telemetry.alert_webhook_env (${tc.alert_webhook_env}): {exc}") from None
    return TelemetryService(
        store,
        Collector(cc),
        cost=cost,
        cost_interval_s=tc.cost_interval_s,
        alert_sinks=sinks,
        slo_rules=rules,
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
        dev_secret_file(path, "FLOWCAST_MASTER_KEY")
        master = load_master_key(path=path)
    return KeyStore(data_dir / "keys.json", master, iv_size=iv_size)


def open_forensic(config: FlowcastConfig) -> tuple[ForensicEncode, SessionVariants] | None:
    """protection.watermark.forensic: the secret, the pattern file the encoder blends (0600,
    under data_dir/watermark) and the per-session variant choice the origin applies."""
    fw = config.protection.watermark.forensic
    if fw is None:
        return None
    rung = next(r for r in config.ladder.rungs if r.name == fw.rendition)
    try:
        secret = load_watermark_secret(Path(config.data_dir), fw.secret_env)
        pattern = write_pattern_file(secret, rung.width, rung.height, Path(config.data_dir) / "watermark", rung.name)
    except WatermarkSecretError as exc:
        raise StackError(f"protection.watermark.forensic: {exc}") from None
    variants = SessionVariants(secret, stream=config.stream, rendition=rung.name, timestamp_unit_s=fw.timestamp_unit_s)
    return ForensicEncode(rung.name, pattern), variants


def open_key_schedule(config: FlowcastConfig, keystore: KeyStore) -> KeySchedule:
    """The stream's keys: generated into the key store, or a DRM service's from the CPIX
    document in protection.cpix (imported into the key store); rotated every
    protection.key_rotation_interval segments. Errors name the config field."""
    pc = config.protection
    scheme = pc.scheme
    assert scheme in ("cenc", "cbcs")
    source: KeySource = StoreKeys(keystore, config.stream)
    if pc.cpix is not None:
        try:
            data = Path(pc.cpix).read_bytes()
        except OSError as exc:
            raise ConfigError(f"protection.cpix: cannot read {pc.cpix}: {exc.strerror}") from None
        try:
            source = CpixKeys(parse_cpix(data), keystore, config.stream, scheme)
        except CpixError as exc:
            raise ConfigError(f"protection.cpix: {pc.cpix}: {exc}") from None
        if pc.key_rotation_interval and source.periods == 1:
            raise ConfigError(
                f"protection.key_rotation_interval: {pc.cpix} has one content key, nothing to rotate to; "
                "set protection.key_rotation_interval: 0 or give a CPIX document with several keys or key periods"
            )
        log.info("protection.cpix: %d key period(s) from %s", source.periods, pc.cpix)
    rotation = KeyRotation(pc.key_rotation_interval or None, lead=0)
    return KeySchedule(scheme, source, rotation, license_url="/license/clearkey")


def open_tracing(config: FlowcastConfig, store: MediaStore, metrics: OriginMetrics) -> OriginTracing | None:
    """OTLP tracing when telemetry.otlp_endpoint or $OTEL_EXPORTER_OTLP_ENDPOINT is set."""
    try:
        endpoint = resolve_endpoint(config.telemetry.otlp_endpoint)
    except TracingError as exc:
        raise StackError(str(exc)) from None
    if endpoint is None:
        return None
    tracing = OriginTracing(endpoint, store)
    metrics.part_published = tracing.wrap_part_published(metrics.part_published)  # type: ignore[method-assign]
    return tracing


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
        key_schedule = license_server = None
        if config.protection.scheme != "none":
            keystore = open_keystore(config.data_dir, iv_size=16 if config.protection.scheme == "cbcs" else 8)
            key_schedule = open_key_schedule(config, keystore)
            license_server = ClearKeyLicenseServer(keystore, verifier)
        self.telemetry = open_telemetry(config, self.metrics) if config.telemetry.enabled else None
        forensic = open_forensic(config)
        self.forensic = forensic[0] if forensic is not None else None
        variant_store = MediaStore() if forensic is not None else None  # the marked rung's variant B
        self.app = OriginApp(
            self.store,
            static_dir=WEB_DIR,
            vendor_dirs=npm_vendor_dirs(WEB_DIR / "node_modules"),
            metrics=self.metrics,
            access=access,
            license_server=license_server,
            hsts=config.origin.tls,
            telemetry=self.telemetry,
            variants=forensic[1] if forensic is not None else None,
            variant_store=variant_store,
        )
        # Chaos routes (admin token) and OpenTelemetry tracing (when an endpoint is set).
        token = os.environ.get(config.telemetry.admin_token_env) or None
        self.app.chaos = ChaosControl(self.store, token, *([variant_store] if variant_store is not None else []))
        self.tracing = open_tracing(config, self.store, self.metrics)
        self.app.tracing = self.tracing
        self.pipeline = LivePipeline(
            config, self.store, metrics=self.metrics, keys=key_schedule, variant_store=variant_store
        )
        self.webrtc = None  # WHEP egress (webrtc.enabled): encoder tap -> fan-out -> peers
        if config.webrtc.enabled:
            from flowcast.webrtc.egress import WebRTCEgress  # aiortc is a heavy import: only when on
            from flowcast.webrtc.whep import MAX_OFFER_BYTES as WHEP_MAX_BODY, PREFIX as WHEP_PREFIX

            from flowcast.webrtc.coturn import CoturnError

            try:
                self.webrtc = WebRTCEgress(config, verifier=verifier)
            except CoturnError as exc:
                raise StackError(str(exc)) from None
            self.app.mount(WHEP_PREFIX, self.webrtc.whep.mounted, max_body=WHEP_MAX_BODY)
        self.supervisor: EncoderSupervisor | None = None
        self.server: ServerHandle | None = None
        self.workers: WorkerPool | None = None  # origin.workers > 1: the other processes
        self.peers: PeerHealth | None = None  # origin.redundant: the other origins' health
        self.whip: WhipEndpoint | None = None  # when the input is "whip"
        self.whip_token: str | None = None

    async def start(self) -> None:
        on_output, on_run_start = self.pipeline.on_output, self.pipeline.on_run_start
        if self.webrtc is not None:
            on_output, on_run_start = self.webrtc.wrap(on_output, on_run_start)
        if self.tracing is not None:
            on_run_start = self.tracing.wrap_run_start(on_run_start)
        try:
            self.supervisor = EncoderSupervisor(
                self.config,
                on_output=on_output,
                on_run_start=on_run_start,
                forensic=self.forensic,
            )
        except (UnknownEncoder, EncoderUnavailable, SourceError) as exc:
            raise StackError(str(exc)) from None
        self.metrics.bind_encoder(self.supervisor)
        if self.supervisor.source.kind == "whip":
            self._mount_whip(self.supervisor.source.internal_port)
        origin = self.config.origin
        cert, key = origin.tls_cert, origin.tls_key
        if origin.tls_self_signed:
            cert, key = self_signed(Path(self.config.data_dir) / "tls", ["localhost", "127.0.0.1", origin.host])
            log.warning("serving HTTPS with a self-signed development certificate: %s", cert)
        try:
            self.server = await serve(self.app, origin.host, origin.port, ssl_cert=cert, ssl_key=key,
                                      server=origin.server, reuse_port=origin.workers > 1)
        except OSError as exc:
            raise StackError(f"cannot listen on {origin.host}:{origin.port}: {exc.strerror}") from None
        if origin.workers > 1:
            self.workers = WorkerPool(
                origin.workers - 1,
                self.store,
                self.app,
                worker_hello(self.config.model_dump_json(), cert, key),
                record_access=self.telemetry.record_access if self.telemetry is not None else None,
                metrics=self.metrics,
            )
            try:
                await self.workers.start()
            except WorkerError as exc:
                await self.workers.stop()
                await self.server.stop()
                raise StackError(f"origin.workers: {exc}") from None
        if self.telemetry is not None:
            self.telemetry.start()
        if self.pipeline.pathways:
            self.peers = PeerHealth(
                own_peers(self.pipeline.pathways, origin.host, origin.port), self.pipeline.set_unavailable_pathways
            )
            self.peers.start()
        if self.webrtc is not None:
            from flowcast.webrtc.coturn import CoturnError

            try:
                await self.webrtc.start()
            except CoturnError as exc:
                await self.server.stop()
                raise StackError(str(exc)) from None
        await self.supervisor.start()

    def _mount_whip(self, feed_port: int | None) -> None:
        # webrtc sits beside origin in the layering: imported here, where the stack is composed
        from flowcast.webrtc.whip import MAX_OFFER_BYTES, WHIP_PREFIX, WhipEndpoint

        assert feed_port is not None
        self.whip_token = self.config.ingest.whip_token or secrets.token_urlsafe(24)
        self.whip = WhipEndpoint(self.config.stream, feed_port, self.whip_token)
        self.app.mount(WHIP_PREFIX, self.whip.handle, max_body=MAX_OFFER_BYTES)

    @property
    def url(self) -> str:
        assert self.server is not None
        return self.server.url

    def urls(self) -> dict[str, str]:
        base, stream = self.url, self.config.stream
        player = f"{base}/"
        if self.signer is not None:
            # With the forensic watermark the marked rendition needs a session id in the token.
            sid = secrets.token_hex(8) if self.forensic is not None else None
            token = self.signer.sign(f"/live/{stream}/", ttl=self.config.protection.token_ttl, session_id=sid)
            player = f"{base}/?stream={stream}&token={token}"
        return {
            "player": player,
            "multivariant": f"{base}/live/{stream}/master.m3u8",
            "mpd": f"{base}/live/{stream}/manifest.mpd",
            "metrics": f"{base}/metrics",
            **({"dashboard": f"{base}/dashboard"} if self.telemetry is not None else {}),
            **({"whep": f"{base}/whep/{stream}"} if self.webrtc is not None else {}),
            **(self._whip_urls(base) if self.whip is not None else {}),
        }

    def _whip_urls(self, base: str) -> dict[str, str]:
        urls = {"whip": f"{base}/whip/{self.config.stream}", "publisher": f"{base}/publish.html"}
        if self.config.ingest.whip_token is None:  # made up at start: the operator needs it
            urls["whip_token"] = self.whip_token
        return urls

    async def stop(self) -> None:
        if self.whip is not None:
            await self.whip.close()
        if self.supervisor is not None:
            await self.supervisor.stop()
        if self.webrtc is not None:
            await self.webrtc.stop()  # viewers closed before the origin goes
        if self.peers is not None:
            await self.peers.stop()
        if self.workers is not None:
            await self.workers.stop()
        if self.server is not None:
            await self.server.stop()
        if self.telemetry is not None:
            await self.telemetry.stop()
        if self.tracing is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.tracing.shutdown)


async def run_forever(config: FlowcastConfig) -> None:
    """`flowcast up`: start, print the URLs, run until SIGINT/SIGTERM."""
    stack = LiveStack(config)
    await stack.start()
    tune_gc()  # a serving process from here on (not in-process test stacks)
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
