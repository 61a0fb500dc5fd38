"""Fixtures for the media tests: FFmpeg-made fragmented MP4, generated once per session."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from _ffmedia import HAVE_FFMPEG, MediaFactory  # noqa: E402


@pytest.fixture(scope="session")
def media(tmp_path_factory: pytest.TempPathFactory) -> MediaFactory:
    if not HAVE_FFMPEG:
        pytest.skip("ffmpeg/ffprobe not installed")
    return MediaFactory(tmp_path_factory.mktemp("fmp4"))
