"""Encoder profiles, source descriptions and the command line, without running a pipeline."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from flowcast.config import FlowcastConfig, IngestConfig
from flowcast.transcode.command import build_command, loggable, output_names
from flowcast.transcode.encoders import EncoderUnavailable, UnknownEncoder, check_encoder, video_options
from flowcast.transcode.ladder import DEFAULT_LADDER
from flowcast.transcode.sources import SourceError, ingest_refusal, resolve_source
from flowcast.transcode.supervisor import EncoderSupervisor

RUNG = DEFAULT_LADDER.rungs[0]


def _opt(opts: list[str], name: str) -> str:
    return opts[opts.index(name) + 1]


def test_x264_low_latency_and_broadcast() -> None:
    ll = video_options("libx264", RUNG, mode="low-latency", segment_s=2.0)
    assert _opt(ll, "-tune") == "zerolatency" and _opt(ll, "-bf") == "0"
    assert _opt(ll, "-g") == _opt(ll, "-keyint_min") == "60"
    assert _opt(ll, "-sc_threshold") == "0"
    assert _opt(ll, "-force_key_frames") == "expr:gte(t,n_forced*2)"
    assert (_opt(ll, "-profile:v"), _opt(ll, "-level:v")) == ("high", "3.1")
    assert (_opt(ll, "-b:v"), _opt(ll, "-maxrate"), _opt(ll, "-bufsize")) == ("2500k", "2750k", "2750k")
    bc = video_options("libx264", RUNG, mode="broadcast", segment_s=6.0)
    assert "-tune" not in bc and _opt(bc, "-bf") == "3" and _opt(bc, "-g") == "180"


def test_x265_is_tagged_hvc1_with_fixed_gop() -> None:
    opts = video_options("libx265", RUNG, mode="low-latency", segment_s=2.0)
    assert _opt(opts, "-tag:v") == "hvc1"
    assert "keyint=60:min-keyint=60:scenecut=0" in _opt(opts, "-x265-params")


def test_unknown_and_unavailable_encoders() -> None:
    with pytest.raises(UnknownEncoder, match="libx264"):
        check_encoder("libfoo")
    with pytest.raises(EncoderUnavailable) as err:
        check_encoder("h264_nvenc")  # listed by Debian's FFmpeg, but no GPU here
    assert "h264_nvenc" in str(err.value) and "libx264" in str(err.value)
    with pytest.raises(EncoderUnavailable):
        EncoderSupervisor(FlowcastConfig(encoder="h264_qsv"), on_output=lambda n, d: None)


def test_missing_and_corrupt_files_fail_before_start(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="does not exist"):
        resolve_source(IngestConfig(input=str(tmp_path / "nope.mp4")))
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\0garbage" * 100)
    with pytest.raises(SourceError, match="not a readable media file"):
        resolve_source(IngestConfig(input=str(bad)))


def test_file_without_audio_gets_silence(tmp_path: Path) -> None:
    clip = tmp_path / "clip.mp4"
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i",
                    "testsrc2=size=320x240:rate=30", "-t", "0.5", "-c:v", "libx264", "-preset", "ultrafast",
                    str(clip)], check=True, timeout=30)
    src = resolve_source(IngestConfig(input=str(clip)))
    assert src.input_args[:3] == ("-stream_loop", "-1", "-re") and src.audio == "1:a:0"
    assert any("anullsrc" in a for a in src.input_args)


def test_secrets_are_masked_in_the_logged_command() -> None:
    cfg = FlowcastConfig(ingest=IngestConfig(input="srt://0.0.0.0:9000?mode=listener",
                                             srt_passphrase="correct-horse-1"))
    src = resolve_source(cfg.ingest)
    cmd = build_command(cfg, {n: 3 + i for i, n in enumerate(output_names(cfg))}, source=src, progress_fd=1)
    assert any("correct-horse-1" in a for a in cmd)
    assert "correct-horse-1" not in loggable(cmd, src) and "pbkeylen=16" in loggable(cmd, src)
    rt = resolve_source(IngestConfig(input="rtmp://0.0.0.0:1935/live/abc123key"), rtmp_internal_port=20000)
    assert rt.mask(" ".join(rt.input_args)).endswith("rtmp://127.0.0.1:20000/live/***")
    for n, fd in zip(output_names(cfg), range(3, 7)):
        assert f"pipe:{fd}" in cmd


def test_srt_rejection_lines_are_explained() -> None:
    line = ("12:47:46.805596/SRT:RcvQ:w1!W:SRT.cn: @91681902:newConnection: connection rejected due to: "
            "INTERNAL REJECTION - ERROR:BADSECRET")
    assert ingest_refusal(line) == "SRT publish refused: wrong passphrase (libsrt BADSECRET)"
    assert ingest_refusal("frame=  10 fps=0.0") is None
