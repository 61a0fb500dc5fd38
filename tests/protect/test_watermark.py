"""Watermarks: codeword and decoder maths (sans-I/O), visible overlays and forensic A/B on FFmpeg media.

The media tests encode 32 one-second segments of 640x360 testsrc2 at 10 fps as variant A and
variant B once per test session, assemble the A/B sequence of three sessions by concatenating
the right variant per segment, attack it (x264 CRF 30; 0.5x scale) and extract.
"""

from __future__ import annotations

import random
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from flowcast.protect.watermark import (
    PAYLOAD_EVERY,
    Match,
    WatermarkCodec,
    binomial_tail,
    required_agreements,
    WatermarkError,
    WatermarkPattern,
    _conv_encode,
    _viterbi,
    detect_bits,
)
from flowcast.protect.watermark_extract import decode_gray, extract_recording, segment_means, soft_bits_of
from flowcast.transcode.watermark import forensic_mark, forensic_pair, image_overlay, text_overlay

SECRET = b"flowcast-test-watermark-secret!!"
SEGMENTS = 32
FPS = 10
SIZE = (640, 360)
SESSIONS = ("viewer-7f3a", "viewer-19c2", "viewer-e004")
STAMP = 491_234  # e.g. the session's start, in hours; only its low 16 bits are carried


def _ffmpeg(*args: str) -> subprocess.CompletedProcess[bytes]:
    cmd = ["ffmpeg", "-nostdin", "-hide_banner", "-v", "error", "-y", *args]
    return subprocess.run(cmd, check=True, capture_output=True, timeout=120)


def _signs(word: list[int]) -> np.ndarray:
    return 1.0 - 2.0 * np.asarray(word, dtype=np.float64)


# ------------------------------------------------------------------ codeword and decoder, no media


def test_codeword_is_deterministic_keyed_and_cyclic() -> None:
    codec = WatermarkCodec(SECRET)
    word = codec.codeword("s1", STAMP)
    assert len(word) == codec.length == 124 and set(word) <= {0, 1}
    assert word == WatermarkCodec(SECRET).codeword("s1", STAMP)
    assert word != codec.codeword("s2", STAMP)
    assert word != WatermarkCodec(b"another-secret-of-32-bytes......").codeword("s1", STAMP)
    seq = codec.sequence("s1", STAMP)
    assert len(seq) == codec.period == PAYLOAD_EVERY * 124
    assert seq[::PAYLOAD_EVERY] == word  # the payload symbols, every 8th segment
    for i in (0, 5, 123, 124, 129, 992, 10_000, 1_795_620_170):
        assert codec.variant_for("s1", STAMP, i) == ("B" if seq[i % codec.period] else "A")
    # causal code: the first 80 symbols depend on the session alone, not the timestamp
    other = codec.codeword("s1", STAMP + 1)
    assert word[:80] == other[:80] and word[80:] != other[80:]
    # the tag positions depend on the session alone, and differ between sessions
    later = codec.sequence("s1", STAMP + 1)
    assert all(a == b for i, (a, b) in enumerate(zip(seq, later)) if i % PAYLOAD_EVERY)
    s2 = codec.sequence("s2", STAMP)
    assert 0.4 < float(np.mean([a != b for i, (a, b) in enumerate(zip(seq, s2)) if i % PAYLOAD_EVERY])) < 0.6
    # keyed scrambling keeps A and B balanced
    assert 40 <= sum(word) <= 84 and 0.45 < float(np.mean(seq)) < 0.55


def test_short_secret_refused() -> None:
    with pytest.raises(WatermarkError):
        WatermarkCodec(b"short")


def test_viterbi_corrects_errors() -> None:
    rng = random.Random(1)
    info = [rng.randrange(2) for _ in range(56)]
    coded = _conv_encode(info)
    assert len(coded) == 124
    soft = [1.0 - 2.0 * b for b in coded]
    for i in (3, 20, 41, 77, 100):  # five scattered hard errors: within the free distance 10
        soft[i] = -soft[i]
    assert _viterbi(soft, 56) == info


def test_decode_with_candidates_synthetic() -> None:
    codec = WatermarkCodec(SECRET)
    rng = np.random.default_rng(2)
    truth = _signs(codec.sequence(SESSIONS[1], STAMP))
    soft = 0.7 * truth[:40] + rng.normal(0, 0.3, 40)
    match = codec.decode(list(soft), list(SESSIONS))
    assert match is not None and match.session_id == SESSIONS[1]
    assert match.agreements >= match.required and match.confidence > 1 - 1e-6
    assert match.segments <= 35  # 5 of the 40 carry payload symbols, not tag bits
    # the session log's timestamps are reported with the match
    match = codec.decode(list(soft), {s: STAMP for s in SESSIONS})
    assert match is not None and match.session_id == SESSIONS[1] and match.timestamp == STAMP
    # late in the period, its start known (and not: the wrong start names nobody)
    soft_late = 0.7 * truth[600:640] + rng.normal(0, 0.3, 40)
    assert codec.decode(list(soft_late), list(SESSIONS), offset=0) is None
    match = codec.decode(list(soft_late), list(SESSIONS), offset=600)
    assert match is not None and match.session_id == SESSIONS[1]
    # unknown start: a window of starts, or every start of the period
    soft_mid = 0.8 * truth[20:80] + rng.normal(0, 0.2, 60)
    match = codec.decode(list(soft_mid), list(SESSIONS), offset=range(64))
    assert match is not None and match.session_id == SESSIONS[1] and match.offset == 20
    match = codec.decode(list(soft_mid), list(SESSIONS), offset=None)
    assert match is not None and match.session_id == SESSIONS[1] and match.offset == 20


def test_same_hour_sessions_are_not_confused() -> None:
    """Sessions of the same timestamp share the timestamp's payload symbols; the candidate
    test must not count them (it would, with the payload codeword alone, accuse an innocent
    session of the same hour on a capture spanning those symbols)."""
    codec = WatermarkCodec(SECRET)
    start = PAYLOAD_EVERY * 92  # the payload symbols that depend on the timestamp only
    outsider = _signs(codec.sequence("outsider", STAMP))[start : start + 256]
    others = [f"same-hour-{i}" for i in range(50)]
    assert codec.decode(list(outsider), {s: STAMP for s in others}, offset=start) is None
    assert codec.decode(list(outsider), {"outsider": STAMP}, offset=start) is not None


def test_blind_decode_full_cycle() -> None:
    codec = WatermarkCodec(SECRET)
    rng = np.random.default_rng(3)
    truth = _signs(codec.sequence(SESSIONS[2], STAMP))
    soft = truth * 0.7 + rng.normal(0, 0.35, codec.period)
    match = codec.decode(list(soft), None)
    assert match is not None
    assert match.session_id == f"tag:{codec.tag(SESSIONS[2]):010x}"
    assert match.timestamp == STAMP % 65536
    with pytest.raises(WatermarkError):
        codec.decode(list(soft[:100]), None)


def test_required_agreements_bound() -> None:
    # 3 candidates x 2 starts at 1e-6: 23 clean segments are the minimum, 40 allow 4 errors
    assert required_agreements(22, 6, 1e-6) is None
    assert required_agreements(23, 6, 1e-6) == 23
    assert required_agreements(40, 6, 1e-6) == 36
    # a million sessions, unknown start, 1e-9
    assert required_agreements(57, 124_000_000, 1e-9) == 57
    assert binomial_tail(10, 10) == 2.0**-10 and binomial_tail(10, 0) == 1.0


def test_no_accusation_on_random_captures() -> None:
    """Random A/B captures: agreements with a candidate are Binomial(n, 1/2), never a match."""
    codec = WatermarkCodec(SECRET)
    rng = np.random.default_rng(4)
    agree = []
    w = _signs(codec.sequence(SESSIONS[0], STAMP))[:48]
    for _ in range(300):
        soft = rng.choice([-0.8, 0.8], 48) + rng.normal(0, 0.2, 48)  # a clean, random A/B capture
        assert codec.decode(list(soft), list(SESSIONS)) is None
        assert codec.decode(list(soft), list(SESSIONS), offset=None) is None
        agree.append(int(np.sum(np.sign(soft) == w)))
    assert abs(float(np.mean(agree)) - 24) < 1.0 and 2.5 < float(np.std(agree)) < 4.5


# ---------------------------------------------------------------------------------- the pattern


def test_pattern_geometry() -> None:
    pattern = WatermarkPattern(SECRET)
    mark = pattern.mark(*SIZE)
    assert mark.shape == (360, 640) and set(np.unique(mark)) == {-1, 0, 1}
    assert 0.23 < float(np.mean(mark != 0)) < 0.27  # 25 % of the pixels move by one level
    assert abs(float(mark.sum())) < 0.2 * float(np.abs(mark).sum())  # keyed signs, balanced
    y4m = pattern.y4m(*SIZE)
    assert y4m.startswith(b"YUV4MPEG2 W640 H360 ") and len(y4m) == y4m.index(b"FRAME\n") + 6 + 640 * 360 * 3 // 2
    k = pattern.kernel(160, 90)
    cells = pattern.cell_index(160, 90)
    sums = np.bincount(cells.reshape(-1), weights=k.reshape(-1))
    assert np.allclose(sums, 0, atol=1e-9)  # zero-mean per cell: flat content cancels
    # the projection of the mark (at analysis size) onto the kernel is its amplitude
    small = pattern.coverage(160, 90, oversample=8) * pattern.signs().reshape(-1)[cells]
    assert float(np.sum(small * k)) == pytest.approx(1.0)
    flat = np.full((90, 160), 77.0)
    assert detect_bits([flat + 0.6 * small, flat - 0.6 * small], pattern) == pytest.approx([0.6, -0.6])
    with pytest.raises(WatermarkError):
        pattern.mark(32, 18)


# ------------------------------------------------------------------------- filter strings


def test_filter_strings_escape() -> None:
    f = text_overlay("it's 10:00, [live]", position="top-left", margin=8, opacity=0.25)
    assert f.startswith("[in]drawtext=") and f.endswith("[out]")
    assert "expansion=none" in f and "fontcolor=white@0.250" in f and "x=8:y=8" in f
    assert r"10\\:00\, \[live\]" in f  # ':' escaped for the option, then all for the graph
    with pytest.raises(ValueError):
        text_overlay("x", opacity=1.5)
    with pytest.raises(ValueError):
        text_overlay("x", position="middle-ish")  # type: ignore[arg-type]
    g = forensic_mark("/tmp/p.y4m", "B", in_label="v0", out_label="w0")
    assert g == "movie=/tmp/p.y4m,lutyuv=y=256-val[w0_ab];[v0][w0_ab]blend=all_mode=grainmerge:repeatlast=1[w0]"
    pair = forensic_pair("/tmp/p.y4m", in_label="v0", out_a="v0A", out_b="v0B")
    assert pair.startswith("[v0]split=2[v0A_src][v0B_src];movie=/tmp/p.y4m[v0A_ab];")
    assert pair.endswith("blend=all_mode=grainmerge:repeatlast=1[v0B]")


# --------------------------------------------------------------------- visible overlay on FFmpeg


@pytest.fixture(scope="module")
def tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg not installed")
    return tmp_path_factory.mktemp("watermark")


def _frame(graph: str | None, *inputs: str) -> np.ndarray:
    """One 640x360 frame of smptehdbars (through ``graph`` if given) as RGB24."""
    src = ["-f", "lavfi", "-i", "smptehdbars=size=640x360:rate=1", *inputs]
    filt = ["-vf", "format=yuv420p"]
    if graph:
        filt = ["-filter_complex", f"[0:v]format=yuv420p[in];{graph}", "-map", "[out]"]
    proc = subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", *src, *filt, "-frames:v", "1",
         "-pix_fmt", "rgb24", "-f", "rawvideo", "pipe:1"],
        check=True, capture_output=True, timeout=60,
    )
    return np.frombuffer(proc.stdout, np.uint8).reshape(360, 640, 3).astype(int)


def _changed_box(clean: np.ndarray, marked: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(np.any(clean != marked, axis=2))
    assert len(ys), "the overlay changed nothing"
    return int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())


def test_text_overlay_renders_in_its_corner(tmp: Path) -> None:
    clean = _frame(None)
    marked = _frame(text_overlay("flowcast 10:00", position="bottom-right", margin=16, opacity=0.6))
    x0, y0, x1, y1 = _changed_box(clean, marked)
    # inside the bottom-right corner, within the margin, nothing else touched
    assert x0 > 640 // 2 and y0 > 360 - 60 and x1 <= 640 - 16 + 1 and y1 <= 360 - 16 + 2


def test_image_overlay_blends_with_opacity(tmp: Path) -> None:
    logo = tmp / "logo, [v1].png"  # a path that needs escaping
    _ffmpeg("-f", "lavfi", "-i", "color=c=red:size=64x48", "-frames:v", "1", str(logo))
    clean = _frame(None)
    marked = _frame(image_overlay(str(logo), position="top-left", margin=16, opacity=0.5))
    assert _changed_box(clean, marked) == (16, 16, 16 + 63, 16 + 47)
    box, orig = marked[20:60, 20:76], clean[20:60, 20:76]
    red_half = (orig[..., 0] + 255) / 2
    assert np.all(np.abs(box[..., 0] - red_half) <= 6)  # half-way to red, not opaque red


# -------------------------------------------------------------------------------- forensic A/B


class ABMedia:
    """Variant A and B of one premium rendition, cut into 1 s segments, made once per module."""

    def __init__(self, root: Path) -> None:
        self.root = root
        pattern = WatermarkPattern(SECRET)
        self.pattern_file = root / "pattern.y4m"
        self.pattern_file.write_bytes(pattern.y4m(*SIZE))
        self.full: dict[str, Path] = {}
        for variant in ("A", "B"):
            out = root / f"{variant}.mp4"
            graph = "[0:v]format=yuv420p[in];" + forensic_mark(str(self.pattern_file), variant)
            # the premium rendition: high quality, 1 s GOPs, segment boundaries on IDRs
            _ffmpeg(
                "-f", "lavfi", "-i", f"testsrc2=size={SIZE[0]}x{SIZE[1]}:rate={FPS}:duration={SEGMENTS}",
                "-filter_complex", graph, "-map", "[out]",
                "-c:v", "libx264", "-preset", "veryfast", "-crf", "16", "-g", str(FPS), "-keyint_min", str(FPS),
                "-sc_threshold", "0", "-threads", "2", str(out),
            )
            _ffmpeg("-i", str(out), "-c", "copy", "-f", "segment", "-segment_time", "1",
                    "-reset_timestamps", "1", str(root / f"{variant}_%03d.ts"))
            self.full[variant] = out
        self.codec = WatermarkCodec(SECRET)

    def assemble(self, name: str, variants: list[str]) -> Path:
        """The stream one viewer received: the served variant of each segment, concatenated."""
        listing = self.root / f"{name}.txt"
        listing.write_text("".join(f"file '{v}_{i:03d}.ts'\n" for i, v in enumerate(variants)))
        out = self.root / f"{name}.mp4"
        _ffmpeg("-f", "concat", "-safe", "0", "-i", str(listing), "-c", "copy", str(out))
        return out

    def session(self, session_id: str) -> Path:
        variants = [self.codec.variant_for(session_id, STAMP, i) for i in range(SEGMENTS)]
        return self.assemble(session_id, variants)


@pytest.fixture(scope="module")
def ab(tmp: Path) -> ABMedia:
    return ABMedia(tmp)


def _psnr(a: Path, b: Path) -> dict[str, float]:
    proc = subprocess.run(
        ["ffmpeg", "-nostdin", "-hide_banner", "-i", str(a), "-i", str(b),
         "-lavfi", "[0:v][1:v]psnr", "-f", "null", "-"],
        check=True, capture_output=True, text=True, timeout=60,
    )
    line = next(ln for ln in proc.stderr.splitlines() if "PSNR y:" in ln)
    return {k: float(v) for k, v in re.findall(r"(\w+):([\d.]+|inf)", line.split("]", 1)[1])}


def test_variants_are_imperceptibly_different(ab: ABMedia) -> None:
    psnr = _psnr(ab.full["A"], ab.full["B"])
    assert psnr["y"] > 45.0 and psnr["average"] > 45.0 and psnr["min"] > 44.0, psnr


@pytest.fixture(scope="module")
def attacked(ab: ABMedia) -> dict[tuple[str, str], Path]:
    """Each session's stream after the two attacks."""
    out = {}
    for sid in SESSIONS:
        clean = ab.session(sid)
        crf30 = ab.root / f"{sid}-crf30.mp4"
        _ffmpeg("-i", str(clean), "-c:v", "libx264", "-preset", "veryfast", "-crf", "30", "-threads", "2", str(crf30))
        half = ab.root / f"{sid}-half.mp4"
        _ffmpeg("-i", str(clean), "-vf", "scale=iw/2:ih/2", "-c:v", "libx264", "-preset", "veryfast",
                "-threads", "2", str(half))
        out[(sid, "clean")], out[(sid, "crf30")], out[(sid, "half")] = clean, crf30, half
    return out


@pytest.mark.parametrize("attack", ["clean", "crf30", "half"])
def test_extract_names_the_session(attacked: dict[tuple[str, str], Path], attack: str) -> None:
    for sid in SESSIONS:
        match = extract_recording(
            attacked[(sid, attack)], secret=SECRET, segment_duration=1.0, candidates=list(SESSIONS)
        )
        assert isinstance(match, Match), (sid, attack)
        assert match.session_id == sid and match.confidence > 1 - 1e-6, (sid, attack, match)


def test_extract_finds_a_late_start(ab: ABMedia, attacked: dict[tuple[str, str], Path]) -> None:
    """A capture that starts 0.4 s into segment 3, known only to start in the first 8."""
    sid = SESSIONS[0]
    cut = ab.root / "late.mp4"
    _ffmpeg("-ss", "3.4", "-i", str(attacked[(sid, "crf30")]), "-c:v", "libx264", "-preset", "veryfast",
            "-crf", "26", "-threads", "2", str(cut))
    match = extract_recording(cut, secret=SECRET, segment_duration=1.0, candidates=list(SESSIONS),
                              first_segment=range(8), false_positive=1e-4)
    assert match is not None and match.session_id == sid and match.offset == 4


def test_no_false_accusations(ab: ABMedia, attacked: dict[tuple[str, str], Path]) -> None:
    """100 captures that no candidate received: never a match (real decoded A/B segments)."""
    pattern = WatermarkPattern(SECRET)
    codec = WatermarkCodec(SECRET)
    per = {v: segment_means(decode_gray(ab.full[v]), 10, 0, 1) for v in ("A", "B")}
    alternating = detect_bits([per["AB"[i % 2]][i] for i in range(SEGMENTS)], pattern)
    assert all((s > 0) == (i % 2 == 0) for i, s in enumerate(alternating))  # every bit reads right
    rng = random.Random(5)
    for k in range(100):
        if k % 2:  # a session that is not a candidate
            sid = f"outsider-{k}"
            variants = [codec.variant_for(sid, STAMP, i) for i in range(SEGMENTS)]
        else:  # a random A/B sequence
            variants = [rng.choice("AB") for _ in range(SEGMENTS)]
        soft = detect_bits([per[v][i] for i, v in enumerate(variants)], pattern)
        assert codec.decode(soft, list(SESSIONS)) is None
        assert codec.decode(soft, list(SESSIONS), offset=None) is None
    # and the attacked recordings of each session never name one of the others
    for sid in SESSIONS:
        others = [s for s in SESSIONS if s != sid] + [f"other-{i}" for i in range(100)]
        for attack in ("crf30", "half"):
            frames = decode_gray(attacked[(sid, attack)])
            soft, _ = soft_bits_of(frames, pattern, segment_duration=1.0)
            assert codec.decode(soft, others, offset=(0, 1)) is None
            assert codec.decode(soft, others, offset=None) is None
