"""Load, chaos and acceptance: virtual viewers (LL-HLS, HLS, LL-DASH) against a running stack,
network impairment through a userspace relay or on the kernel's path in a network namespace
(netns.py, delayer.py), and a report judged against the acceptance criteria of
reference/schema.md. Entry point: `run_loadtest`."""

from flowcast.loadtest.guard import LoadTestRefused
from flowcast.loadtest.profiles import PROFILES, NetworkProfile, Ramp
from flowcast.loadtest.report import Report, Verdict
from flowcast.loadtest.runner import run_loadtest

__all__ = ["LoadTestRefused", "NetworkProfile", "PROFILES", "Ramp", "Report", "Verdict", "run_loadtest"]
