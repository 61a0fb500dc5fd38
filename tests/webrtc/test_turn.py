"""TURN REST credentials checked by Debian's real coturn, relaying on loopback."""

from __future__ import annotations

import base64
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from flowcast.webrtc.turn import coturn_config, turn_credentials

SECRET = "flowcast-test-secret-0123456789"

pytestmark = pytest.mark.skipif(shutil.which("turnserver") is None, reason="coturn is installed by `make test`")


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def coturn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    tmp = tmp_path_factory.mktemp("coturn")
    port = _free_udp_port()
    conf = tmp / "turnserver.conf"
    conf.write_text(
        coturn_config(SECRET, port=port, min_port=50100, max_port=50200, allow_loopback_peers=True,
                      pidfile=str(tmp / "turn.pid"))
    )  # fmt: skip
    log = (tmp / "turn.log").open("wb")
    proc = subprocess.Popen(["turnserver", "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT)
    try:
        time.sleep(1.0)
        assert proc.poll() is None, (tmp / "turn.log").read_text()
        yield port
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


def _relay(port: int, username: str, password: str) -> str:
    out = subprocess.run(
        ["turnutils_uclient", "-y", "-n", "3", "-p", str(port), "-u", username, "-w", password, "127.0.0.1"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    return out.stdout + out.stderr


def test_minted_credentials_relay_media(coturn: int) -> None:
    cred = turn_credentials(SECRET, "viewer-1", ttl=600)
    out = _relay(coturn, cred.username, cred.password)
    assert "tot_recv_msgs=12" in out and "Total lost packets 0" in out, out[-800:]


@pytest.mark.parametrize(
    "mangle",
    [
        lambda c: (c.username, "d3JvbmcgcGFzc3dvcmQ="),  # wrong password
        lambda c: (c.username.replace("viewer-1", "viewer-2"), c.password),  # someone else's name
        lambda c: (lambda o: (o.username, o.password))(turn_credentials("another-secret", "viewer-1", ttl=600)),
    ],
)
def test_bad_credentials_are_refused(coturn: int, mangle) -> None:
    username, password = mangle(turn_credentials(SECRET, "viewer-1", ttl=600))
    out = _relay(coturn, username, password)
    assert "Cannot complete Allocation" in out and "tot_recv_msgs=12" not in out


def test_expired_credentials_are_refused(coturn: int) -> None:
    cred = turn_credentials(SECRET, "viewer-1", ttl=60, now=time.time() - 3600)
    assert "Cannot complete Allocation" in _relay(coturn, cred.username, cred.password)


def test_credentials_format() -> None:
    cred = turn_credentials(SECRET, "alice", ttl=300, now=1_700_000_000, urls=("turn:127.0.0.1:3478",))
    assert cred.username == "1700000300:alice" and cred.expires == 1_700_000_300
    # RFC 2104 HMAC-SHA1, base64: checked against the openssl command line.
    openssl = subprocess.run(
        ["openssl", "dgst", "-sha1", "-hmac", SECRET, "-binary"], input=b"1700000300:alice", capture_output=True
    ).stdout
    assert cred.password == base64.b64encode(openssl).decode()
    assert cred.ice_server() == {"urls": ["turn:127.0.0.1:3478"], "username": "1700000300:alice", "credential": cred.password}
    with pytest.raises(ValueError):
        turn_credentials(SECRET, "a:b")
    with pytest.raises(ValueError):
        coturn_config("bad secret with spaces")
