"""Which local addresses the server's ICE host candidates use.

aioice gathers on every interface except loopback and has no option to choose; a
deployment wants its media on one interface, and tests on one machine want loopback only.
aioice looks `get_host_addresses` up in its module at gathering time, so replacing that
one function (process-wide: the WHEP server is the only ICE agent in the process) is the
narrowest hook there is.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

import aioice.ice

_ORIGINAL = aioice.ice.get_host_addresses


def use_host_addresses(addresses: Sequence[str]) -> None:
    """Gather host candidates on exactly `addresses` (empty: aioice's default)."""
    chosen = [str(ipaddress.ip_address(a)) for a in addresses]  # ValueError names a bad one
    if not chosen:
        aioice.ice.get_host_addresses = _ORIGINAL
        return

    def host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return [a for a in chosen if (":" in a and use_ipv6) or (":" not in a and use_ipv4)]

    aioice.ice.get_host_addresses = host_addresses
