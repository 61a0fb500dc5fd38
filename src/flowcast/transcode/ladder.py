"""The ABR ladder: a declarative list of renditions the encoder produces."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

H264Profile = Literal["baseline", "main", "high"]


class Rung(BaseModel):
    """One video rendition of the ladder."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$")
    width: int = Field(gt=0, le=7680)
    height: int = Field(gt=0, le=4320)
    video_bitrate_kbps: int = Field(gt=0, le=100_000)
    max_rate_kbps: int | None = Field(default=None, gt=0)
    buffer_size_kbits: int | None = Field(default=None, gt=0)
    profile: H264Profile = "high"
    level: str = Field(default="4.0", pattern=r"^[1-6](\.[0-2])?$")
    fps: float = Field(default=30.0, gt=0, le=120)

    @field_validator("width", "height")
    @classmethod
    def _even(cls, v: int) -> int:
        if v % 2:
            raise ValueError("must be even (4:2:0 chroma subsampling)")
        return v

    @property
    def max_rate(self) -> int:
        """Peak rate in kbps: defaults to 1.1 x the target (capped VBR)."""
        return self.max_rate_kbps or round(self.video_bitrate_kbps * 1.1)

    @property
    def buffer_size(self) -> int:
        """VBV buffer in kbits: defaults to one second at the peak rate, so short segments stay tight."""
        return self.buffer_size_kbits or self.max_rate


class AudioRendition(BaseModel):
    """The AAC audio rendition shared by every video rung."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    bitrate_kbps: int = Field(default=96, gt=0, le=512)
    channels: int = Field(default=2, ge=1, le=8)
    sample_rate: Literal[44100, 48000] = 48000


class Ladder(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    rungs: tuple[Rung, ...] = Field(min_length=1)
    audio: AudioRendition = AudioRendition()

    @model_validator(mode="after")
    def _unique_names(self) -> "Ladder":
        names = [r.name for r in self.rungs]
        if len(set(names)) != len(names):
            raise ValueError(f"rung names must be unique, got {names}")
        return self


# Measured on the 2-core reference machine: the test source plus these three rungs with
# libx264 veryfast/zerolatency use about 0.55 of one core in real time (docs/benchmarks.md).
DEFAULT_LADDER = Ladder(
    rungs=(
        Rung(name="720p", width=1280, height=720, video_bitrate_kbps=2500, profile="high", level="3.1"),
        Rung(name="480p", width=854, height=480, video_bitrate_kbps=1000, profile="main", level="3.0"),
        Rung(name="240p", width=426, height=240, video_bitrate_kbps=400, profile="baseline", level="3.0"),
    )
)
