"""The one configuration model: CLI flags, the YAML file and the planner's output all become this."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from flowcast.transcode.ladder import DEFAULT_LADDER, Ladder

Mode = Literal["low-latency", "broadcast"]


class ConfigError(Exception):
    """A configuration that cannot run; the message names the field."""


class IngestConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # "testsrc" (built-in test source with a burned-in wall clock), a file path (looped),
    # rtmp://0.0.0.0:1935/live/<stream-key>, srt://0.0.0.0:9000?mode=listener or "whip"
    input: str = "testsrc"
    srt_passphrase: str | None = Field(default=None, min_length=10, max_length=79)
    # input "whip": the publisher's `Authorization: Bearer` token; made up at start when absent
    whip_token: str | None = Field(default=None, min_length=16, max_length=256, repr=False)


class PackagingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: Mode = "low-latency"
    segment_duration: float | None = Field(default=None, ge=1.0, le=30.0)
    part_target: float | None = Field(default=None, ge=0.1, le=2.0)
    dvr_window: float = Field(default=60.0, ge=6.0, le=6 * 3600.0)

    @property
    def segment_s(self) -> float:
        return self.segment_duration or (2.0 if self.mode == "low-latency" else 6.0)

    @property
    def part_s(self) -> float | None:
        """Part target in seconds; broadcast mode has no parts."""
        if self.mode == "broadcast":
            return None
        return self.part_target or 0.5

    @model_validator(mode="after")
    def _parts_fit(self) -> "PackagingConfig":
        part = self.part_s
        if part is not None and part > self.segment_s:
            raise ValueError("part_target must not exceed segment_duration")
        if self.dvr_window < 3 * self.segment_s:
            raise ValueError("dvr_window must hold at least 3 segments (RFC 8216bis 6.2.2)")
        return self


class ForensicWatermarkConfig(BaseModel):
    """Forensic A/B watermark of one premium rendition, served per session (protect/watermark.py).

    The secret keys both the luma pattern and the session codewords: from ``secret_env``
    (hex, >= 16 bytes) or else ``watermark.secret`` under data_dir (0600, made on first use).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    rendition: str = Field(description="name of the ladder rung encoded as variants A and B")
    secret_env: str = "FLOWCAST_WATERMARK_SECRET"
    # Coarse timestamp carried in the payload: the token's expiry in units of this many seconds.
    timestamp_unit_s: int = Field(default=3600, ge=60, le=86400)


class WatermarkConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    forensic: ForensicWatermarkConfig | None = None


class ProtectionConfig(BaseModel):
    """What premium content needs: encryption and signed URLs (both off by default)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    scheme: Literal["none", "cenc", "cbcs"] = "none"
    key_rotation_interval: int = Field(default=0, ge=0, description="segments per key; 0 = one key")
    require_token: bool = False
    token_ttl: int = Field(default=4 * 3600, ge=60, le=7 * 86400)
    watermark: WatermarkConfig = WatermarkConfig()
    # A CPIX 2.x document from a DRM service (clear content keys, Widevine/PlayReady PSSH):
    # encrypt with its keys and KIDs instead of generated ones (protect/cpix.py).
    cpix: Path | None = None

    @model_validator(mode="after")
    def _cpix_needs_scheme(self) -> "ProtectionConfig":
        if self.cpix is not None and self.scheme == "none":
            raise ValueError("protection.cpix needs protection.scheme cenc or cbcs")
        return self


class OriginConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)
    workers: int = Field(default=1, ge=1, le=64)
    # The HTTP server: "flowcast" (origin/http1.py, HTTP/1.1) or "granian" (HTTP/1.1 and
    # HTTP/2); "auto": ours for plain HTTP, granian when the origin terminates TLS.
    server: Literal["auto", "flowcast", "granian"] = "auto"
    # TLS: a certificate and key (PEM), or tls_self_signed for a development certificate.
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_self_signed: bool = False
    # Redundant origins: the base URL (scheme://host:port) of every origin packaging this
    # stream, this one included, in priority order. Each becomes an HLS Content Steering
    # pathway (PATHWAY-ID) and a DASH BaseURL. Each origin's encoder is epoch-locked
    # (transcode/epoch.py): timestamps are seconds since 1970 and segment/part edges fall on
    # multiples of their duration, so segment N is the same interval with the same tfdt on
    # every origin and any origin serves any viewer. The test source locks by itself, a file
    # is played out on the epoch (position = wall clock modulo its duration), and a shared
    # SRT/RTMP contribution locks the origins frame-accurately when its timestamps are the
    # wall clock (else each origin locks to its own arrival time, logged as a warning).
    # Empty: one origin, relative URLs.
    redundant: tuple[str, ...] = ()

    @field_validator("redundant")
    @classmethod
    def _redundant_urls(cls, urls: tuple[str, ...]) -> tuple[str, ...]:
        from urllib.parse import urlsplit  # noqa: PLC0415 - only this validator needs it

        if not urls:
            return urls
        if len(urls) < 2:
            raise ValueError("list at least two origins (this one included), or none")
        out = []
        for url in urls:
            u = urlsplit(url)
            if u.scheme not in ("http", "https") or not u.hostname:
                raise ValueError(f"{url!r} is not an http(s)://host:port base URL")
            if u.username or u.password or u.query or u.fragment or u.path not in ("", "/"):
                raise ValueError(f"{url!r}: a base URL has no credentials, path, query or fragment")
            out.append(url.rstrip("/"))
        if len(set(out)) != len(out):
            raise ValueError("origins must be distinct")
        return tuple(out)

    @model_validator(mode="after")
    def _tls_pair(self) -> "OriginConfig":
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together")
        if self.server == "flowcast" and (self.tls_self_signed or self.tls_cert is not None):
            raise ValueError("server: flowcast speaks plain HTTP/1.1; TLS (and HTTP/2) is granian's: "
                             "use server: auto or granian")
        if self.tls_self_signed and self.tls_cert is not None:
            raise ValueError("use either tls_self_signed or tls_cert/tls_key")
        return self

    @property
    def tls(self) -> bool:
        return self.tls_self_signed or self.tls_cert is not None


class TelemetryConfig(BaseModel):
    """QoE telemetry: collector endpoint, access events, embedded chDB store (on by default)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    # Embedded chDB store directory; relative paths are under data_dir.
    store_path: Path = Path("telemetry")
    # Environment variable holding the user-id HMAC key (hex, >= 32 bytes). Unset: a key
    # file is made under the store path on first use (development only).
    hmac_key_env: str = "FLOWCAST_TELEMETRY_HMAC_KEY"
    # Bearer token for the admin endpoints (report, sessions, erasure, dashboard data);
    # unset: those answer loopback clients only.
    admin_token_env: str = "FLOWCAST_TELEMETRY_ADMIN_TOKEN"
    retention_days: int = Field(default=90, ge=1, le=3650)
    origin_requests_retention_days: int = Field(default=30, ge=1, le=3650)
    slo_file: Path | None = None
    flush_interval_s: float = Field(default=1.0, ge=0.05, le=60.0)
    max_pending: int = Field(default=200_000, ge=1000, description="access events held before dropping")
    # OpenTelemetry: OTLP/HTTP collector base URL (http://host:4318); unset: the standard
    # OTEL_EXPORTER_OTLP_ENDPOINT variable, and without it no tracing (origin/tracing.py).
    otlp_endpoint: str | None = Field(default=None, pattern=r"^https?://")
    # Alerts (cost anomalies): always the log; also POSTed as JSON to the URL held in
    # this environment variable when it is set (the URL may carry a secret: not in config).
    alert_webhook_env: str = "FLOWCAST_ALERT_WEBHOOK_URL"
    # Cost: egress USD/GB per viewer region ("default" for any other region and for
    # requests without a session), USD per transcode (encoder) hour.
    egress_price_per_gb: dict[str, float] = Field(default_factory=lambda: {"default": 0.085})
    transcode_price_per_hour: float = Field(default=0.50, ge=0)
    cost_interval_s: float = Field(default=60.0, ge=1.0, le=86400.0)
    # Anomaly: cost per viewer-minute above anomaly_factor x the mean of the trailing
    # anomaly_baseline samples (after anomaly_warmup of them) fires; back under resolves.
    anomaly_factor: float = Field(default=3.0, gt=1.0, le=100.0)
    anomaly_baseline: int = Field(default=30, ge=2, le=10_000)
    anomaly_warmup: int = Field(default=5, ge=1, le=10_000)
    # Consent proofs (LGPD Art. 8 par. 2: consent must be demonstrable): kept this long.
    consent_retention_days: int = Field(default=1825, ge=1, le=3650)

    @model_validator(mode="after")
    def _prices(self) -> "TelemetryConfig":
        if "default" not in self.egress_price_per_gb:
            raise ValueError("egress_price_per_gb must have a 'default' price")
        if any(v < 0 for v in self.egress_price_per_gb.values()):
            raise ValueError("egress_price_per_gb: prices must not be negative")
        return self

    def store_dir(self, data_dir: Path) -> Path:
        return self.store_path if self.store_path.is_absolute() else Path(data_dir) / self.store_path


class TurnConfig(BaseModel):
    """`flowcast up --turn`: Debian's coturn on loopback, TURN REST credentials per WHEP session."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = False
    listen_ip: str = "127.0.0.1"
    # The address clients reach coturn at, when it differs from listen_ip (NAT, a public
    # IP in front): coturn's external-ip, and the host in the advertised turn: URLs.
    external_ip: str | None = None
    port: int = Field(default=3478, ge=1, le=65535)
    min_port: int = Field(default=49160, ge=1024, le=65535)
    max_port: int = Field(default=49200, ge=1024, le=65535)
    # Environment variable holding the coturn static-auth-secret; unset: a 0600 file under
    # data_dir (development only).
    secret_env: str = "FLOWCAST_TURN_SECRET"
    credential_ttl: int = Field(default=3600, ge=60, le=86400)
    # Tests on one machine relay to loopback peers; never in production.
    allow_loopback_peers: bool = False


class WebRTCConfig(BaseModel):
    """The interactive mode's WHEP egress: one low-latency H.264/Opus rendition, forwarded
    to every viewer without re-encoding."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = False
    width: int = Field(default=1280, gt=0, le=1920)
    height: int = Field(default=720, gt=0, le=1080)
    fps: float = Field(default=30.0, gt=0, le=60)
    video_bitrate_kbps: int = Field(default=2000, gt=0, le=20_000)
    gop_s: float = Field(default=1.0, ge=0.2, le=4.0, description="keyframe interval: a new viewer's wait")
    audio_bitrate_kbps: int = Field(default=64, ge=16, le=256)
    max_viewers: int = Field(default=200, ge=1, le=10_000)
    # A peer that has not connected within this time (ICE never completes) is closed.
    connect_timeout_s: float = Field(default=15.0, ge=1.0, le=120.0)
    stun_urls: tuple[str, ...] = ()
    # Addresses the server's ICE host candidates use; empty: every non-loopback interface
    # (aioice's default). ["127.0.0.1"] for tests on one machine; a public interface's
    # address in production to keep media off internal networks.
    ice_host_addresses: tuple[str, ...] = ()
    turn: TurnConfig = TurnConfig()

    @field_validator("width", "height")
    @classmethod
    def _even(cls, v: int) -> int:
        if v % 2:
            raise ValueError("must be even (4:2:0 chroma subsampling)")
        return v

    @field_validator("ice_host_addresses")
    @classmethod
    def _addresses(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        import ipaddress  # noqa: PLC0415 - only this validator needs it

        for a in v:
            try:
                ipaddress.ip_address(a)
            except ValueError:
                raise ValueError(f"{a!r} is not an IP address") from None
        return v

    @model_validator(mode="after")
    def _turn_ports(self) -> "WebRTCConfig":
        if self.turn.enabled and self.turn.min_port >= self.turn.max_port:
            raise ValueError("turn.min_port must be below turn.max_port")
        return self


class FlowcastConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    stream: str = Field(default="live", pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
    ingest: IngestConfig = IngestConfig()
    encoder: str = "libx264"
    ladder: Ladder = DEFAULT_LADDER
    packaging: PackagingConfig = PackagingConfig()
    protection: ProtectionConfig = ProtectionConfig()
    origin: OriginConfig = OriginConfig()
    telemetry: TelemetryConfig = TelemetryConfig()
    webrtc: WebRTCConfig = WebRTCConfig()
    data_dir: Path = Path("data")

    @property
    def epoch_locked(self) -> bool:
        """Encode on the UNIX-epoch timeline (transcode/epoch.py): what redundant origins need
        to agree on every segment. A single origin keeps timestamps from its own start."""
        return bool(self.origin.redundant)

    @model_validator(mode="after")
    def _forensic_watermark_fits(self) -> "FlowcastConfig":
        forensic = self.protection.watermark.forensic
        if forensic is None:
            return self
        field = "protection.watermark.forensic"
        rungs = [r.name for r in self.ladder.rungs]
        if forensic.rendition not in rungs:
            raise ValueError(f"{field}.rendition: {forensic.rendition!r} is not a ladder rung ({', '.join(rungs)})")
        if not self.protection.require_token:
            # The variant sequence is chosen from the token's session id: without signed
            # tokens anyone could pick (or forge) the session a capture accuses.
            raise ValueError(f"{field} needs protection.require_token: true (the session id comes from the token)")
        if self.origin.workers > 1:
            # Variant B lives in a second store that the worker replicas do not carry yet.
            raise ValueError(f"origin.workers: {field} is served by one origin process; set origin.workers: 1")
        return self


def _field_path(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in loc) or "(top level)"


def parse_config(raw: dict[str, Any]) -> FlowcastConfig:
    """Validate a config mapping; errors name the dotted field path."""
    try:
        return FlowcastConfig.model_validate(raw)
    except ValidationError as exc:
        lines = [f"{_field_path(e['loc'])}: {e['msg']}" for e in exc.errors()]
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines)) from None


def load_config(path: Path) -> FlowcastConfig:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from None
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    return parse_config(raw)
