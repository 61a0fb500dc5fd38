"""Dated reference data (list prices, grid intensity) shipped as YAML under plan/data/."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import resources
from typing import Any

import yaml

PRICES_FILE = "prices_20261125.yaml"
GRID_FILE = "grid_intensity_2024.yaml"


@functools.cache
def _load(name: str) -> dict[str, Any]:
    return yaml.safe_load(resources.files("flowcast.plan").joinpath("data").joinpath(name).read_text())


def prices() -> dict[str, Any]:
    return _load(PRICES_FILE)


@dataclass(frozen=True)
class PriceSource:
    """Where a price table comes from and whether its figures were checked against that page."""

    url: str
    page_date: str
    verified: bool
    note: str


def price_source(table: str) -> PriceSource:
    """`table`: "cdn.<name>" or a top-level table of the prices file (compute, fx_per_usd, ...)."""
    p = prices()
    entry = p["cdn"][table.split(".", 1)[1]] if table.startswith("cdn.") else p["provenance"][table]
    src = p["sources"][entry["source"]]
    note = entry.get("note") or src.get("note", "")
    return PriceSource(src["url"], str(src["page_date"]), bool(entry["verified"]), note)


def grid() -> dict[str, Any]:
    return _load(GRID_FILE)


def tiered_cost(gb: float, tiers: list[list[Any]]) -> float:
    """USD for `gb` in one month over [[upper TB or None, usd/GB], ...] tiers (1 TB = 1024 GB, as CDNs bill)."""
    cost, lower = 0.0, 0.0
    for upper_tb, price in tiers:
        upper = float("inf") if upper_tb is None else upper_tb * 1024.0
        if gb <= lower:
            break
        cost += (min(gb, upper) - lower) * price
        lower = upper
    return cost
