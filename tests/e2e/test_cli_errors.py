"""Bad input gets a clear error before anything starts, and the message names what is wrong."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


def flowcast(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flowcast.cli", *args], capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.parametrize(
    "yaml_text,field",
    [
        ("ladder:\n  rungs:\n    - {name: a, width: 641, height: 360, video_bitrate_kbps: 800}\n", "ladder.rungs.0.width"),
        ("packaging:\n  mode: ultra\n", "packaging.mode"),
        ("packaging:\n  part_target: 3\n  segment_duration: 2\n", "packaging"),
        ("origin:\n  port: 70000\n", "origin.port"),
        ("origin:\n  server: nginx\n", "origin.server"),
        ("origin:\n  server: flowcast\n  tls_self_signed: true\n", "server: flowcast speaks plain HTTP/1.1"),
        ("colour: blue\n", "colour"),
        ("ladder:\n  rungs: []\n", "ladder.rungs"),
    ],
)
def test_config_errors_name_the_field(tmp_path: Path, yaml_text: str, field: str) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(yaml_text)
    out = flowcast("up", "--config", str(cfg))
    assert out.returncode == 2
    assert field in out.stderr, out.stderr
    assert "Traceback" not in out.stderr


def test_not_yaml(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("ladder: [unclosed\n")
    out = flowcast("up", "--config", str(cfg))
    assert out.returncode == 2 and "not valid YAML" in out.stderr


def test_unknown_encoder_is_named() -> None:
    out = flowcast("up", "--encoder", "x266-turbo", "--port", "1")
    assert out.returncode == 2
    assert "x266-turbo" in out.stderr and "libx264" in out.stderr
    assert "Traceback" not in out.stderr


def test_encoder_without_hardware_is_refused() -> None:
    out = flowcast("up", "--encoder", "h264_nvenc", "--port", "1")
    assert out.returncode == 2
    assert "h264_nvenc" in out.stderr


def test_corrupted_input_file(tmp_path: Path) -> None:
    good = tmp_path / "clip.mp4"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30", "-t", "1", "-c:v", "libx264", str(good)],
        check=True,
    )
    bad = tmp_path / "corrupt.mp4"
    data = bytearray(good.read_bytes())
    data[: len(data) // 2] = bytes(len(data) // 2)  # zero the header and half the media
    bad.write_bytes(bytes(data))
    out = flowcast("up", "--input", str(bad), "--port", "1")
    assert out.returncode == 2
    assert "corrupt.mp4" in out.stderr and "not a readable media file" in out.stderr


def test_missing_input_file(tmp_path: Path) -> None:
    out = flowcast("up", "--input", str(tmp_path / "nope.mp4"), "--port", "1")
    assert out.returncode == 2 and "does not exist" in out.stderr
