from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from flowcast.telemetry.collector import Collector, CollectorConfig
from flowcast.telemetry.store import EmbeddedStore

TEST_KEY = bytes(range(32))


@pytest.fixture
def collector() -> Collector:
    return Collector(CollectorConfig(hmac_key=TEST_KEY, rate_events_per_s=0))


@pytest.fixture
def store(tmp_path: Path) -> Iterator[EmbeddedStore]:
    s = EmbeddedStore(tmp_path / "chdb")
    try:
        yield s
    finally:
        s.close()
