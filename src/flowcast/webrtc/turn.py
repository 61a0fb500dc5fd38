"""TURN REST credentials (coturn `use-auth-secret`) and the coturn configuration that
checks them: each WebRTC session gets a short-lived username/password pair minted from a
secret shared with the TURN server, so no per-user state lives on the relay."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class TurnCredentials:
    """What goes into an RTCIceServer entry: urls, username, credential."""

    username: str
    password: str
    expires: int
    urls: tuple[str, ...] = ()

    def ice_server(self) -> dict[str, object]:
        return {"urls": list(self.urls), "username": self.username, "credential": self.password}


def turn_credentials(
    secret: str, user: str, *, ttl: int = 3600, urls: tuple[str, ...] = (), now: float | None = None
) -> TurnCredentials:
    """username = "<expiry>:<user>", password = base64(HMAC-SHA1(secret, username)).

    This is the TURN REST API scheme (draft-uberti-behave-turn-rest) that coturn checks with
    `use-auth-secret` + `static-auth-secret`.
    """
    if ":" in user:
        raise ValueError("the TURN user must not contain ':' (it separates the expiry)")
    if ttl <= 0:
        raise ValueError("ttl must be positive")
    expires = int(now if now is not None else time.time()) + ttl
    username = f"{expires}:{user}"
    # coturn keys the HMAC with the secret exactly as written in static-auth-secret.
    digest = hmac.new(secret.encode("utf-8"), username.encode("utf-8"), hashlib.sha1).digest()
    return TurnCredentials(username, base64.b64encode(digest).decode("ascii"), expires, urls)


def _config_value(secret: str) -> str:
    if not secret or any(c.isspace() or c in "#=\"'" for c in secret) or not secret.isascii():
        raise ValueError("the TURN secret must be non-empty printable ASCII without spaces, '#', '=' or quotes")
    return secret


def coturn_config(
    secret: str,
    *,
    listen_ip: str = "127.0.0.1",
    port: int = 3478,
    relay_ip: str | None = None,
    external_ip: str | None = None,
    min_port: int = 49160,
    max_port: int = 49200,
    realm: str = "flowcast",
    allow_loopback_peers: bool = False,
    pidfile: str | None = None,
) -> str:
    """A turnserver.conf for Debian's coturn that accepts only credentials from `secret`.

    Plain TURN over UDP/TCP; put TLS (turns:) in front with `cert`/`pkey` for production.
    `allow_loopback_peers` is for tests on one machine only.
    """
    if not 1024 <= min_port < max_port <= 65535:
        raise ValueError("relay ports must satisfy 1024 <= min_port < max_port <= 65535")
    lines = [
        f"listening-ip={listen_ip}",
        f"listening-port={port}",
        f"relay-ip={relay_ip or listen_ip}",
        f"min-port={min_port}",
        f"max-port={max_port}",
        f"realm={realm}",
        "use-auth-secret",
        f"static-auth-secret={_config_value(secret)}",
        "fingerprint",
        "no-tls",
        "no-dtls",
        "no-cli",
        "no-multicast-peers",
        "stale-nonce=600",
        "user-quota=12",
        "total-quota=1200",
        "simple-log",
        "log-file=stdout",
    ]
    if external_ip:
        lines.append(f"external-ip={external_ip}")
    if allow_loopback_peers:
        lines.append("allow-loopback-peers")
    else:
        lines.append("denied-peer-ip=127.0.0.0-127.255.255.255")
    if pidfile:
        lines.append(f"pidfile={pidfile}")
    return "\n".join(lines) + "\n"
