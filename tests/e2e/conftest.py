from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .livestack import LiveProcess


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveProcess]:
    """`flowcast up` with no arguments but the port: the built-in test source, low-latency mode."""
    proc = LiveProcess(tmp_path_factory.mktemp("live"))
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.stop()
