"""Test media made by FFmpeg at test time (no hand-written expected bytes), plus ffprobe helpers.

Shared by tests/media and tests/package: import it after putting this folder on sys.path.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

HAVE_FFMPEG = shutil.which("ffmpeg") is not None and shutil.which("ffprobe") is not None

_VIDEO_IN = ["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30"]
_AUDIO_IN = ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"]
_X264 = ["-c:v", "libx264", "-preset", "ultrafast", "-g", "30", "-keyint_min", "30", "-sc_threshold", "0"]
_EVERY = ["-movflags", "empty_moov+default_base_moof+frag_every_frame"]
_KEYFRAME = ["-movflags", "empty_moov+default_base_moof+frag_keyframe"]

# name -> FFmpeg arguments between the inputs and the output; CMAF: one track per file.
VARIANTS: dict[str, list[str]] = {
    "h264": _VIDEO_IN + ["-t", "4"] + _X264 + ["-bf", "0"] + _EVERY,
    "h264_keyframe": _VIDEO_IN + ["-t", "4"] + _X264 + ["-bf", "0"] + _KEYFRAME,
    "h264_bframes": _VIDEO_IN + ["-t", "4"] + _X264 + ["-bf", "2"] + _KEYFRAME,
    "h264_bframes_every": _VIDEO_IN + ["-t", "4"] + _X264 + ["-bf", "2", "-profile:v", "high"] + _EVERY,
    "aac": _AUDIO_IN + ["-t", "4", "-c:a", "aac", "-ac", "2"] + _EVERY,
    "aac_keyframe": _AUDIO_IN + ["-t", "4", "-c:a", "aac", "-ac", "1"] + _KEYFRAME,
    "hevc": _VIDEO_IN
    + ["-t", "2", "-c:v", "libx265", "-preset", "ultrafast", "-x265-params", "log-level=error", "-g", "30"]
    + ["-tag:v", "hvc1"]
    + _KEYFRAME,
    "opus": _AUDIO_IN + ["-t", "2", "-c:a", "libopus"] + _KEYFRAME,
}


class MediaFactory:
    """Encodes each variant once per session into `root`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._cache: dict[str, Path] = {}

    def path(self, name: str) -> Path:
        if name not in self._cache:
            out = self.root / f"{name}.mp4"
            cmd = ["ffmpeg", "-nostdin", "-v", "error", "-y", *VARIANTS[name], "-threads", "1", "-f", "mp4", str(out)]
            subprocess.run(cmd, check=True, capture_output=True, timeout=120)
            self._cache[name] = out
        return self._cache[name]

    def data(self, name: str) -> bytes:
        return self.path(name).read_bytes()


def probe_stream(path: Path) -> dict:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_streams", "-of", "json", str(path)],
        check=True, capture_output=True, timeout=60,
    )
    return json.loads(out.stdout)["streams"][0]


def probe_packets(path: Path) -> list[dict]:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "packet=dts,pts,duration,size,flags", "-of", "json", str(path)],
        check=True, capture_output=True, timeout=60,
    )
    return json.loads(out.stdout)["packets"]


def packet_md5s(path: Path) -> list[str]:
    """MD5 of each compressed packet as the demuxer delivers it (stream copy into framemd5)."""
    return [line.rsplit(",", 1)[1].strip() for line in _framemd5(path, ["-c", "copy"])]


def decoded_md5s(path: Path) -> list[str]:
    """framemd5 lines of the decoded frames (timestamps included)."""
    return _framemd5(path, [])


def _framemd5(path: Path, codec_args: list[str]) -> list[str]:
    out = subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-threads", "1", "-i", str(path), *codec_args, "-f", "framemd5", "-"],
        check=True, capture_output=True, timeout=120,
    )
    return [ln for ln in out.stdout.decode().splitlines() if ln and not ln.startswith("#")]


def ffprobe_errors(path: Path) -> str:
    """Whatever ffprobe complains about while reading every packet and frame."""
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_packets", "-show_frames", "-of", "compact", str(path)],
        capture_output=True, timeout=120,
    )
    return out.stderr.decode() + ("" if out.returncode == 0 else f"exit {out.returncode}")


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()
