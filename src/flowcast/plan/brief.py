"""The kickoff brief: what the customer wants, validated; errors name the field and what is allowed."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

# Regions are the CDN price zones of data/prices_*.yaml (CloudFront's geographic price classes).
Region = Literal[
    "north-america", "europe", "south-america", "asia-pacific", "japan", "australia", "india", "africa-middle-east"
]
Device = Literal["desktop", "mobile", "tablet", "tv"]
Network = Literal["fiber", "wifi", "4g", "3g"]
Codec = Literal["h264", "h265", "av1"]
Currency = Literal["USD", "BRL", "EUR"]
DrmSystem = Literal["widevine", "playready", "fairplay", "clearkey"]
Deliverable = Literal["decisions", "config", "cost", "docs", "iac"]
Cdn = Literal["cloudfront", "fastly", "akamai", "bunny"]


class BriefError(Exception):
    """A brief that cannot be planned; the message names each bad field and what is allowed."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RegionShare(_Model):
    region: Region
    share: float = Field(gt=0, le=1, description="fraction of viewers in this region")


class Audience(_Model):
    peak_concurrent_viewers: int = Field(ge=0, le=50_000_000, description="near-live + broadcast viewers at peak")
    peak_interactive_sessions: int = Field(default=0, ge=0, le=1_000_000)
    interactive_session_hours_per_month: float = Field(default=0, ge=0)
    live_hours_per_day: float = Field(default=24, gt=0, le=24, description="hours a day the channel is on air")
    avg_to_peak_ratio: float = Field(default=0.4, gt=0, le=1, description="average concurrent viewers / peak")
    regions: tuple[RegionShare, ...] = Field(min_length=1)
    devices: dict[Device, float] = Field(min_length=1, description="device class -> share of viewers")
    networks: dict[Network, float] = Field(min_length=1, description="network class -> share of viewers")

    @model_validator(mode="after")
    def _shares(self) -> "Audience":
        for name, total in (
            ("regions", sum(r.share for r in self.regions)),
            ("devices", sum(self.devices.values())),
            ("networks", sum(self.networks.values())),
        ):
            if abs(total - 1.0) > 0.01:
                raise ValueError(f"{name} shares must add up to 1.0, got {total:g}")
        return self


class Budget(_Model):
    monthly: float = Field(gt=0, description="infrastructure budget per month (egress, compute, storage, relay)")
    currency: Currency = "USD"


class ContentRights(_Model):
    premium_content: bool = False
    recordings: bool = False
    recording_retention_days: int = Field(default=0, ge=0, le=3650)
    geo_restricted_to: tuple[Region, ...] = ()


class Inputs(_Model):
    audience: Audience
    codecs_allowed: tuple[Codec, ...] = Field(default=("h264",), min_length=1)
    content_rights: ContentRights = ContentRights()
    budget: Budget
    compliance: tuple[Literal["lgpd", "gdpr", "ccpa"], ...] = ()


class Drm(_Model):
    required: bool = False
    systems: tuple[DrmSystem, ...] = ()
    key_rotation_hours: float = Field(default=24, gt=0, le=24 * 30)

    @model_validator(mode="after")
    def _systems(self) -> "Drm":
        if self.required and not self.systems:
            raise ValueError("systems must list at least one DRM system when required is true")
        return self


class Constraints(_Model):
    consent_required_for_recording: bool = False
    region_preference: tuple[Region, ...] = ()
    gpu_available: bool = False
    cdn_contracts: tuple[Cdn, ...] = ()
    drm: Drm = Drm()


class Interactive(_Model):
    p95_ms: int = Field(gt=0, le=2000)
    measured_in: Region | None = None
    pixel_streaming: bool = False


class NearLive(_Model):
    glass_to_glass_p95_s: float = Field(gt=0.5, le=10)


class Broadcast(_Model):
    glass_to_glass_p95_s: float = Field(ge=4, le=120)
    dvr_window_s: float = Field(default=3600, ge=60, le=6 * 3600)


class LatencyTargets(_Model):
    interactive: Interactive | None = None
    near_live: NearLive | None = None
    broadcast: Broadcast | None = None

    @model_validator(mode="after")
    def _some(self) -> "LatencyTargets":
        if not (self.interactive or self.near_live or self.broadcast):
            raise ValueError("give at least one of interactive, near_live, broadcast")
        return self


class Brief(_Model):
    pipeline: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,23}$", description="short id used in artifact names")
    goal: str = Field(min_length=1)
    inputs: Inputs
    constraints: Constraints = Constraints()
    latency_targets: LatencyTargets
    slo_availability_pct: float = Field(default=99.9, ge=90, lt=100)
    deliverables: tuple[Deliverable, ...] = ("decisions", "config", "cost", "docs", "iac")

    @model_validator(mode="after")
    def _consistent(self) -> "Brief":
        a = self.inputs.audience
        if self.latency_targets.interactive and a.peak_interactive_sessions == 0:
            raise ValueError("inputs.audience.peak_interactive_sessions must be > 0 when latency_targets.interactive is set")
        return self


def _allowed(err: dict[str, Any]) -> str:
    ctx = err.get("ctx") or {}
    if "expected" in ctx:
        return f" (allowed: {ctx['expected']})"
    return ""


def _field(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in loc) or "(top level)"


def parse_brief(raw: Any) -> Brief:
    """Validate a brief mapping; each error line is `dotted.field: what is wrong (allowed: ...)`."""
    if not isinstance(raw, dict):
        raise BriefError("a brief must be a YAML mapping at the top level")
    try:
        return Brief.model_validate(raw)
    except ValidationError as exc:
        lines = []
        for e in exc.errors():
            msg = e["msg"]
            if e["type"] == "extra_forbidden":
                msg = "unknown field (not in the brief schema; check spelling)"
            lines.append(f"{_field(e['loc'])}: {msg}{_allowed(e)}")
        raise BriefError("invalid brief:\n  " + "\n  ".join(lines)) from None


def load_brief(path: Path) -> Brief:
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise BriefError(f"cannot read brief {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise BriefError(f"{path}: not valid YAML: {exc}") from None
    return parse_brief(raw)
