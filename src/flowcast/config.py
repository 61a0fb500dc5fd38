"""The one configuration model: CLI flags, the YAML file and the planner's output all become this."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from flowcast.transcode.ladder import DEFAULT_LADDER, Ladder

Mode = Literal["low-latency", "broadcast"]


class ConfigError(Exception):
    """A configuration that cannot run; the message names the field."""


class IngestConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # "testsrc" (built-in test source with a burned-in wall clock), a file path (looped),
    # rtmp://0.0.0.0:1935/live/<stream-key> or srt://0.0.0.0:9000?mode=listener
    input: str = "testsrc"
    srt_passphrase: str | None = Field(default=None, min_length=10, max_length=79)


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


class ProtectionConfig(BaseModel):
    """What premium content needs: encryption and signed URLs (both off by default)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    scheme: Literal["none", "cenc", "cbcs"] = "none"
    key_rotation_interval: int = Field(default=0, ge=0, description="segments per key; 0 = one key")
    require_token: bool = False
    token_ttl: int = Field(default=4 * 3600, ge=60, le=7 * 86400)


class OriginConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)
    workers: int = Field(default=1, ge=1, le=64)
    # TLS: a certificate and key (PEM), or tls_self_signed for a development certificate.
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_self_signed: bool = False

    @model_validator(mode="after")
    def _tls_pair(self) -> "OriginConfig":
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together")
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

    def store_dir(self, data_dir: Path) -> Path:
        return self.store_path if self.store_path.is_absolute() else Path(data_dir) / self.store_path


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
    data_dir: Path = Path("data")


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
