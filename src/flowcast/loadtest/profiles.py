"""Named network profiles and ramp shapes.

The kernel here has no netem. A profile is applied by `relay.py` (userspace, per viewer,
the default), or with `--netns` on the kernel's path in a network namespace (`netns.py`):
loss by iptables, rates by tc tbf, RTT and jitter by `delayer.py` through NFQUEUE, all on
the viewers' own TCP connections; connection resets stay in the relay either way. Figures:

| name | down | up | RTT | jitter | loss | source |
|---|---|---|---|---|---|---|
| `loopback` | - | - | 0 | 0 | 0 | no relay at all |
| `4g` | 9 Mbps | 9 Mbps | 170 ms | 10 ms | 0 | WebPageTest connectivity profile "4G" (connectivity.ini.sample, WPO-Foundation/webpagetest) |
| `lte` | 12 Mbps | 12 Mbps | 70 ms | 10 ms | 0 | WebPageTest "LTE" |
| `3g` | 1.6 Mbps | 768 kbps | 150 ms | 20 ms | 0 | WebPageTest "3G Fast" (Chrome DevTools "Fast 3G" uses the same 1.6 Mbps / 750 kbps) |
| `3g-lossy` | 1.6 Mbps | 768 kbps | 300 ms | 50 ms | 1 % packets, 2 % connections | WebPageTest "3G" RTT (300 ms); loss is our assumption |
| `wifi-congested` | 4 Mbps | 2 Mbps | 60 ms | 40 ms | 2 % packets, 1 % connections | our assumption: a busy 2.4 GHz cell shared by many stations; no public standard profile |

WebPageTest and DevTools set no loss; loss figures are ours and are labelled as such in the
report. RTT is split evenly between the directions; jitter is +- jitter_ms on each one-way
delay. In the relay, loss is modelled per 1448-byte packet: a lost packet costs the flow a
fast retransmit (one RTT of delay, at least the 200 ms minimum RTO Linux uses); in a
namespace the kernel drops real packets and TCP itself recovers. A dropped connection is
reset at accept, which the viewer sees as a failed request and retries.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class NetworkProfile:
    name: str
    down_kbps: int | None  # None: no cap
    up_kbps: int | None
    rtt_ms: float
    jitter_ms: float
    packet_loss: float  # share of packets (0..1)
    connection_drop: float  # share of connections reset at accept (0..1)
    source: str

    @property
    def relayed(self) -> bool:
        return self.name != "loopback"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


_WPT = "WebPageTest connectivity.ini.sample (github.com/WPO-Foundation/webpagetest)"
PROFILES: dict[str, NetworkProfile] = {
    p.name: p
    for p in (
        NetworkProfile("loopback", None, None, 0.0, 0.0, 0.0, 0.0, "no impairment"),
        NetworkProfile("4g", 9_000, 9_000, 170.0, 10.0, 0.0, 0.0, f'{_WPT} "4G"'),
        NetworkProfile("lte", 12_000, 12_000, 70.0, 10.0, 0.0, 0.0, f'{_WPT} "LTE"'),
        NetworkProfile("3g", 1_600, 768, 150.0, 20.0, 0.0, 0.0, f'{_WPT} "3G Fast"; Chrome DevTools "Fast 3G"'),
        NetworkProfile(
            "3g-lossy", 1_600, 768, 300.0, 50.0, 0.01, 0.02, f'{_WPT} "3G" RTT; loss figures: flowcast assumption'
        ),
        NetworkProfile(
            "wifi-congested", 4_000, 2_000, 60.0, 40.0, 0.02, 0.01, "flowcast assumption (busy shared Wi-Fi cell)"
        ),
    )
}


class ProfileError(ValueError):
    """An unknown profile or a ramp that does not fit the duration."""


def get_profile(name: str) -> NetworkProfile:
    try:
        return PROFILES[name]
    except KeyError:
        raise ProfileError(f"unknown network profile {name!r}; known: {', '.join(PROFILES)}") from None


@dataclass(frozen=True, slots=True)
class Ramp:
    """0 -> N viewers over `up_s`, hold, then N -> 0 over `down_s` (total = the run's duration)."""

    up_s: float
    down_s: float

    @staticmethod
    def default(duration: float) -> Ramp:
        return Ramp(up_s=min(10.0, 0.2 * duration), down_s=min(5.0, 0.1 * duration))

    def window(self, i: int, n: int, duration: float) -> tuple[float, float]:
        """(join, leave) offsets in seconds of viewer i of n: joins spread evenly over the ramp
        up; the first to join is the last to leave."""
        if self.up_s + self.down_s > duration:
            raise ProfileError(f"ramp {self.up_s}+{self.down_s} s does not fit in {duration} s")
        f = i / n if n > 1 else 0.0
        join = self.up_s * f
        leave = duration - self.down_s * f
        return join, leave
