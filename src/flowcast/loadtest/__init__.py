"""Load, chaos and acceptance: virtual viewers (LL-HLS, HLS, LL-DASH) against a running stack,
network impairment through a userspace relay or on the kernel's path in a network namespace
(netns.py, delayer.py), and a report judged against the acceptance criteria of
reference/schema.md. Entry point: `run_loadtest`.

The names below load on first use (PEP 562): a process that needs one submodule, such as
the delayer started inside every delaying namespace, then skips the runner's imports
(0.24 s of the delayer's 0.25 s start-up)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flowcast.loadtest.guard import LoadTestRefused
    from flowcast.loadtest.profiles import PROFILES, NetworkProfile, Ramp
    from flowcast.loadtest.report import Report, Verdict
    from flowcast.loadtest.runner import run_loadtest

_HOME = {
    "LoadTestRefused": "guard",
    "PROFILES": "profiles",
    "NetworkProfile": "profiles",
    "Ramp": "profiles",
    "Report": "report",
    "Verdict": "report",
    "run_loadtest": "runner",
}
__all__ = ["LoadTestRefused", "NetworkProfile", "PROFILES", "Ramp", "Report", "Verdict", "run_loadtest"]


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value
    return value
