"""--probe SAMPLE: the source's size caps the ladder and its frame rate sets fps and GOP."""

from __future__ import annotations

import subprocess

import pytest

from flowcast.plan import ProbeError, build_pack, probe_source
from tests.plan.conftest import CH247, DAY


@pytest.fixture(scope="module")
def sample_720p25(tmp_path_factory):
    path = tmp_path_factory.mktemp("probe") / "sample.mp4"
    subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=25",
         "-t", "1", "-c:v", "libx264", "-preset", "ultrafast", str(path)],
        check=True, timeout=60,
    )
    return path


def test_probe_reads_size_and_rate(sample_720p25):
    src = probe_source(sample_720p25)
    assert (src.width, src.height, src.fps) == (1280, 720, 25.0)


def test_probe_caps_ladder_and_sets_gop(sample_720p25, tmp_path):
    res = build_pack(CH247, tmp_path, probe=sample_720p25, today=DAY)
    b = res.plan.mode("broadcast")
    assert b.ladder.rungs[0].height == 720 and all(r.fps == 25.0 for r in b.ladder.rungs)
    assert b.gop_frames.value == 150  # 6 s x 25 fps
    assert "-g 150" in b.ffmpeg["libx264"]
    assert "probed source height 720p" in " ".join(str(r.rule) for r in b.rung_rules)


def test_probe_error_names_the_file(tmp_path):
    bad = tmp_path / "not-video.txt"
    bad.write_text("hello")
    with pytest.raises(ProbeError, match="not-video.txt"):
        probe_source(bad)
