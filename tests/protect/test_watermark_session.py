"""Live forensic watermark pieces without a running stack: the per-session variant choice,
the candidates file, the secret and pattern files, the config checks and the A/B encoder
command (the e2e test runs them together in `flowcast up`)."""

from __future__ import annotations

import os
import shlex
import stat
import subprocess
from pathlib import Path

import numpy as np
import pytest

from flowcast.config import ConfigError, parse_config
from flowcast.protect.tokens import TokenClaims
from flowcast.protect.watermark import WatermarkCodec, WatermarkError, WatermarkPattern
from flowcast.protect.watermark_extract import parse_candidates
from flowcast.protect.watermark_session import (
    NoSessionId,
    SessionVariants,
    WatermarkSecretError,
    load_or_create_secret,
    token_timestamp,
    write_pattern_file,
)
from flowcast.transcode.command import build_command, filter_graph, output_names
from flowcast.transcode.forensic import ForensicEncode, variant_b_output
from flowcast.transcode.sources import resolve_source

SECRET = b"flowcast-test-watermark-secret!!"
EXPIRES = 1_795_634_171


def _claims(sid: str | None, expires: int = EXPIRES) -> TokenClaims:
    return TokenClaims(kid="k1", acl="/live/live/", expires=expires, session_id=sid)


def test_variant_follows_the_token_session_and_the_segment_number() -> None:
    sv = SessionVariants(SECRET, stream="live", rendition="360p")
    codec = WatermarkCodec(SECRET)
    stamp = token_timestamp(_claims("a"))
    assert stamp == EXPIRES // 3600
    for msn in range(1_795_620_000, 1_795_620_064):
        want = codec.variant_for("alice", stamp, msn)
        assert sv.variant(f"live/360p/{msn}.m4s", _claims("alice")) == want
        # every part of the segment, hinted or not, is the same variant
        assert {sv.variant(f"live/360p/{msn}.{p}.m4s", _claims("alice")) for p in range(4)} == {want}
    seq_a = [sv.variant(f"live/360p/{i}.m4s", _claims("alice")) for i in range(1, 200)]
    seq_b = [sv.variant(f"live/360p/{i}.m4s", _claims("bob")) for i in range(1, 200)]
    assert seq_a != seq_b and {"A", "B"} == set(seq_a)
    # not marked: init (shared), playlists, other renditions, other streams, odd names
    for key in ("live/360p/init.mp4", "live/360p/index.m3u8", "live/240p/7.m4s", "other/360p/7.m4s",
                "live/360p/07.m4s", "live/360p/7.m4s.bak", "live/360p/x.m4s", "live/360p/sub/7.m4s"):
        assert sv.variant(key, _claims("alice")) is None, key
    # marked, but the token names no session: refused, nothing to trace
    for claims in (None, _claims(None)):
        with pytest.raises(NoSessionId):
            sv.variant("live/360p/7.m4s", claims)


def test_candidates_file() -> None:
    assert parse_candidates("a\nb b\n\n") == ["a", "b b"]
    assert parse_candidates("a\t498765\nb\t12\n") == {"a": 498765, "b": 12}
    with pytest.raises(WatermarkError, match="every line"):
        parse_candidates("a\t1\nb\n")
    with pytest.raises(WatermarkError, match="line 2"):
        parse_candidates("a\t1\nb\tsoon\n")


def test_secret_from_env_or_private_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WM_TEST_SECRET", SECRET.hex())
    assert load_or_create_secret(tmp_path, "WM_TEST_SECRET") == SECRET
    monkeypatch.setenv("WM_TEST_SECRET", "zz")
    with pytest.raises(WatermarkSecretError, match="WM_TEST_SECRET must be hex"):
        load_or_create_secret(tmp_path, "WM_TEST_SECRET")
    monkeypatch.setenv("WM_TEST_SECRET", "00" * 8)
    with pytest.raises(WatermarkSecretError, match="at least 16 bytes"):
        load_or_create_secret(tmp_path, "WM_TEST_SECRET")
    monkeypatch.delenv("WM_TEST_SECRET")
    made = load_or_create_secret(tmp_path / "data", "WM_TEST_SECRET")
    path = tmp_path / "data" / "watermark.secret"
    assert len(made) == 32 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_secret(tmp_path / "data", "WM_TEST_SECRET") == made  # kept
    os.chmod(path, 0o644)
    with pytest.raises(WatermarkSecretError, match="must be mode 0600"):
        load_or_create_secret(tmp_path / "data", "WM_TEST_SECRET")


def test_pattern_file_is_private_and_exact(tmp_path: Path) -> None:
    path = write_pattern_file(SECRET, 640, 360, tmp_path / "wm", "360p")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes() == WatermarkPattern(SECRET).y4m(640, 360)
    with pytest.raises(WatermarkSecretError, match="360p"):
        write_pattern_file(SECRET, 32, 18, tmp_path / "wm", "360p")


# -------------------------------------------------------------------------- configuration

RUNG = {"name": "360p", "width": 640, "height": 360, "video_bitrate_kbps": 1200}


def _config(**protection: object):
    return parse_config({"ladder": {"rungs": [RUNG]}, "protection": protection})


def test_config_errors_name_the_field() -> None:
    with pytest.raises(ConfigError, match=r"protection\.watermark\.forensic needs protection\.require_token"):
        _config(watermark={"forensic": {"rendition": "360p"}})
    with pytest.raises(ConfigError, match=r"protection\.watermark\.forensic\.rendition: '720p' is not a ladder rung"):
        _config(require_token=True, watermark={"forensic": {"rendition": "720p"}})
    with pytest.raises(ConfigError, match=r"protection\.watermark\.forensic\.rendition: Field required"):
        _config(require_token=True, watermark={"forensic": {}})
    with pytest.raises(ConfigError, match=r"protection\.watermark\.forensic\.colour: Extra inputs"):
        _config(require_token=True, watermark={"forensic": {"rendition": "360p", "colour": "red"}})
    config = _config(require_token=True, watermark={"forensic": {"rendition": "360p"}})
    assert config.protection.watermark.forensic is not None
    assert config.protection.watermark.forensic.secret_env == "FLOWCAST_WATERMARK_SECRET"


# ----------------------------------------------------------------------------- the A/B encode


def test_ab_encode_command_is_two_identical_outputs(tmp_path: Path) -> None:
    config = _config(require_token=True, watermark={"forensic": {"rendition": "360p"}})
    names = output_names(config)
    assert names[:2] == ["360p", "audio"] and variant_b_output("360p") in names
    forensic = ForensicEncode("360p", tmp_path / "p.y4m")
    source = resolve_source(config.ingest)
    graph = filter_graph(config, source, forensic)
    assert "[v0m]split=2[v0_src][v0b_src]" in graph and graph.count("blend=all_mode=grainmerge") == 2
    assert "lutyuv=y=256-val" in graph  # variant B is the negated pattern
    cmd = build_command(config, {n: 3 + i for i, n in enumerate(names)}, source=source, forensic=forensic)
    line = shlex.join(cmd)
    a = line.split("-map '[v0]' ")[1].split(" pipe:")[0]
    b = line.split("-map '[v0b]' ")[1].split(" pipe:")[0]
    assert a == b and "-force_key_frames" in a  # identical options: same GOPs, same cuts
    with pytest.raises(ValueError, match="disagree"):
        build_command(config, {n: 3 + i for i, n in enumerate(names)}, source=source)


def test_ab_encode_runs_and_aligns(tmp_path: Path) -> None:
    """The real graph on a short clip: both outputs decode to the same frame count, and
    their difference is the pattern (+1 / -1 levels where it marks, before encoding)."""
    pattern = write_pattern_file(SECRET, 320, 180, tmp_path, "t")
    forensic = ForensicEncode("t", pattern)
    graph = "[0:v]format=yuv420p,scale=320:180[v0m];" + forensic.graph("v0m", "a", "b")
    subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=320x180:rate=10:duration=2",
         "-filter_complex", graph, "-map", "[a]", "-f", "rawvideo", str(tmp_path / "a.yuv"), "-map", "[b]", "-f", "rawvideo", str(tmp_path / "b.yuv")],
        check=True, timeout=60,
    )
    # yuv420p frames as they leave the graph (no range conversion): the luma plane
    a = np.fromfile(tmp_path / "a.yuv", np.uint8).reshape(-1, 180 * 320 * 3 // 2)[:, : 180 * 320]
    b = np.fromfile(tmp_path / "b.yuv", np.uint8).reshape(-1, 180 * 320 * 3 // 2)[:, : 180 * 320]
    a, b = a.reshape(-1, 180, 320).astype(int), b.reshape(-1, 180, 320).astype(int)
    assert a.shape == b.shape and a.shape[0] == 20
    mark = WatermarkPattern(SECRET).mark(320, 180).astype(int)
    diff = a - b  # +2 / -2 where the pattern marks (away from clipping), 0 elsewhere
    inner = (a > 2) & (a < 253) & (b > 2) & (b < 253)
    assert np.all(diff[:, mark == 0] == 0)
    assert np.mean(diff[inner & (mark == 1)[None]] == 2) > 0.99
    assert np.mean(diff[inner & (mark == -1)[None]] == -2) > 0.99
