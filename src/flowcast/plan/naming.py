"""Artifact names: stream_<artifact>_<pipeline_or_account>_<yyyymmdd>_vN[.<ext>]."""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path

NAME_RE = re.compile(r"^stream_(?P<artifact>[a-z0-9_]+?)_(?P<pipeline>[a-z0-9-]+)_(?P<date>\d{8})_v(?P<n>[1-9]\d*)(?P<ext>\.[a-z0-9]+)?$")


def artifact_path(out_dir: Path, artifact: str, pipeline: str, day: date, ext: str | None) -> Path:
    """The first free name: v1, or one past the highest existing version (never overwrites)."""
    if not re.fullmatch(r"[a-z0-9_]+", artifact):
        raise ValueError(f"artifact {artifact!r}: lower-case letters, digits and _ only")
    stem = f"stream_{artifact}_{pipeline}_{day:%Y%m%d}_v"
    suffix = f".{ext}" if ext else ""
    taken = [
        int(m.group("n"))
        for p in out_dir.glob(stem + "*")
        if (m := NAME_RE.match(p.name)) and m.group("artifact") == artifact and (m.group("ext") or "") == suffix
    ]
    n = max(taken, default=0) + 1
    return out_dir / f"{stem}{n}{suffix}"


def is_artifact_name(name: str) -> bool:
    return NAME_RE.match(name) is not None
