"""Forensic A/B watermark: the keyed luma pattern, the session codeword and its decoder, sans-I/O.

The scheme is segment switching (the Irdeto TraceMark / NAGRA NexGuard "A/B" family): the
premium rendition is encoded twice, variant A with ``+pattern`` and variant B with ``-pattern``
added to luma, and for segment index ``i`` the origin serves each viewer the variant named by
bit ``i`` of that viewer's codeword. The CDN caches only two copies of each segment; the
sequence a viewer received spells their session.

Pattern (``WatermarkPattern``): the frame is cut into a ``16 x 9`` grid of cells; in each cell
an inner box (``fill`` of the cell on each axis, 0.5 -> 25 % of the area) is shifted by
``sign(cell) * 1`` luma level, the sign keyed by the secret, the ring around it untouched.
Why this shape:
- one level on large boxes is the smallest change 8-bit video can carry; it is far below
  visibility, and the PSNR between A and B is ``10 log10(255^2 / (4 * 0.25)) = 48.1 dB``
  before encoding (measured after encoding in the tests);
- a box 40 px wide at 640x360 is the lowest spatial frequency that still gives 144
  independent cells: it lives in the DC of the codec's transform blocks, so x264 at a low
  bitrate and a 0.5x (or any) rescale keep it, where texture-band marks are quantised away;
- the untouched ring lets the detector estimate the content blind: per cell it compares the
  box with its own ring (zero-mean kernel), so content that is smooth at the cell scale
  cancels, and the mean over the whole capture removes what is static.

Measured (tests/protect/test_watermark.py, 640x360 testsrc2, premium x264 veryfast CRF 16):
PSNR(A, B) y 47.0 dB (min frame 46.8); soft bit per segment (mean / std, in levels,
sign-corrected) 0.98 / 0.18 clean, 0.69 / 0.18 after x264 veryfast CRF 30 (3.3x lower
bitrate), 0.65 / 0.17 after a 0.5x scale, no wrong bit in 32. Weak spot: an encoder without adaptive quantisation (x264
``ultrafast``, aq-mode 0) at CRF 30 flattens one-level steps in flat areas: 0.22 / 0.34, 8 of
32 bits wrong, so such a capture needs roughly 4x more segments (the soft test below).
(Those figures are for equal cell weights; ``detect_bits`` now weights cells by the inverse
of their variance over the capture.) Live (tests/e2e/test_watermark_live.py, `flowcast up`,
640x360 at 1600 kbit/s, testsrc2 with the burned-in clock, 1 s segments): PSNR(A, B) y 46.3
dB, average 47.1 dB, min frame 46.2 dB (45.7 dB y at 1200 kbit/s); after x264 at a quarter of
the bitrate and 0.5x, 0 wrong bits in 40 segments, and 29-30 segments name one of ten
candidates at 1e-6.

Sequence (``WatermarkCodec``): the variant of segment ``i`` is bit ``i mod 992`` of the
session's sequence. Every 8th segment carries a symbol of the payload codeword, the others a
keyed pseudorandom bit of the session:

- payload codeword: 40-bit session tag (HMAC of the session id) ++ 16-bit timestamp field,
  rate-1/2 constraint-length-7 convolutional code (generators 171/133 octal, the CCSDS
  131.0-B / IEEE 802.11 code, free distance 10) with a zero tail, 124 symbols, XORed with a
  keystream from HMAC-SHA256(secret); without candidates, a recording of a whole period is
  Viterbi-decoded to the tag and the timestamp (``_decode_blind``);
- tag bits: HMAC-SHA256 keyed by (secret, tag), one bit per position. They carry the
  candidate test, because for a session that did not receive the capture they are
  independent fair coins. The payload symbols cannot: 80 coded symbols of a 40-bit tag are
  linear in it (a window of ``n`` symbols spans about ``n / 2 + 6`` tag bits, so a wrong tag
  matches ``n`` of them far more often than ``2^-n``), and the timestamp symbols are the same
  for every session of the same hour (an earlier version counted them: a capture of the
  timestamp symbols matched every same-hour candidate; ``test_same_hour_sessions_are_not_confused``).

Decision rule with candidates: each tag position's soft bit is decided A, B, or erased (much
weaker than the capture's median, decided from the capture alone). For each candidate ``c``
and each start ``o`` searched, two tests are run against ``c``'s +/-1 tag bits ``w``:

- hard: the agreements ``a`` of the ``n`` decided positions. For a session that did not
  receive the capture, ``w`` is HMAC output independent of the capture, so
  ``a ~ Binomial(n, 1/2)`` exactly, whatever the capture is (a random A/B sequence, another
  session, a forgery without the secret): ``P(a >= k) = binomial_tail(n, k)``.
- soft: ``z = sum_j s_j w_j / sqrt(sum_j s_j^2)``; with ``w`` independent random signs,
  Hoeffding gives ``P(z >= t) <= exp(-t^2 / 2)``. It is the better test when the attack
  leaves the bits noisy (many hard errors); the hard one is far tighter when they are clean.

A match needs ``2 * K * O * P <= p`` (union bound over both tests, ``K`` candidates, ``O``
starts) for a target false-accusation probability ``p`` per capture, default ``1e-6``. With
clean decisions that takes ``n >= log2(2 K O / p)`` tag positions (7 per 8 segments): 24 for
K=3, O=2 (28 segments); 51 (59 segments, + about 7 per tolerated error) for a million
sessions and a known start at ``p = 1e-9``; an unknown start (O = 992) costs 10 more.
The 40-bit tag bounds what any capture can prove: two sessions share a tag with
probability ``2^-40`` per pair.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

Variant = Literal["A", "B"]

TAG_BITS = 40
TIMESTAMP_BITS = 16
_K = 7  # constraint length
_G = (0o171, 0o133)  # CCSDS / 802.11 generators
_TAIL = _K - 1
# Every PAYLOAD_EVERY-th segment carries a payload symbol, the others keyed tag bits (see
# WatermarkCodec): 7 of 8 segments count for identification, a blind decode needs 8 x 124.
PAYLOAD_EVERY = 8


class WatermarkError(ValueError):
    """A watermark input that cannot be used (bad geometry, too few segments, bad arguments)."""


# ----------------------------------------------------------------------------------- pattern


@dataclass(frozen=True)
class WatermarkPattern:
    """The keyed A/B luma pattern: +1 (variant A) or -1 (variant B) level on inner boxes."""

    secret: bytes
    grid: tuple[int, int] = (16, 9)
    fill: float = 0.5

    def signs(self) -> np.ndarray:
        """The keyed +/-1 sign of every cell, shape (rows, cols)."""
        cols, rows = self.grid
        stream = _keystream(self.secret, b"flowcast-wm-pattern", cols * rows)
        return (np.asarray(stream, dtype=np.int8) * 2 - 1).reshape(rows, cols)

    def coverage(self, width: int, height: int, oversample: int = 1) -> np.ndarray:
        """Per pixel, the fraction of it covered by an inner box (float32, shape (height, width))."""
        cols, rows = self.grid
        w, h = width * oversample, height * oversample
        xs = (np.arange(w) + 0.5) * cols / w
        ys = (np.arange(h) + 0.5) * rows / h
        margin = (1.0 - self.fill) / 2
        inx = np.abs(xs - np.floor(xs) - 0.5) < (0.5 - margin)
        iny = np.abs(ys - np.floor(ys) - 0.5) < (0.5 - margin)
        cov = (iny[:, None] & inx[None, :]).astype(np.float32)
        if oversample > 1:
            cov = cov.reshape(height, oversample, width, oversample).mean(axis=(1, 3))
        return cov

    def cell_index(self, width: int, height: int) -> np.ndarray:
        cols, rows = self.grid
        cx = np.minimum((np.arange(width) + 0.5) * cols // width, cols - 1).astype(int)
        cy = np.minimum((np.arange(height) + 0.5) * rows // height, rows - 1).astype(int)
        return cy[:, None] * cols + cx[None, :]

    def mark(self, width: int, height: int) -> np.ndarray:
        """The variant-A luma offset in levels (int8, -1/0/+1); variant B is its negation."""
        if width < 4 * self.grid[0] or height < 4 * self.grid[1]:
            raise WatermarkError(f"{width}x{height} is too small for a {self.grid} grid")
        sign = self.signs().reshape(-1)[self.cell_index(width, height)]
        return (self.coverage(width, height) >= 0.5).astype(np.int8) * sign.astype(np.int8)

    def y4m(self, width: int, height: int) -> bytes:
        """One yuv420p frame, luma ``128 + mark``, chroma 128: the input of ``blend=grainmerge``.

        YUV4MPEG2 carries its pixel format and no range tag, so FFmpeg reads the levels as
        they are (a PNG would go through a full->limited range conversion and lose the 1s).
        """
        if width % 2 or height % 2:
            raise WatermarkError("width and height must be even (4:2:0)")
        y = (128 + self.mark(width, height).astype(np.int16)).astype(np.uint8)
        chroma = np.full((height // 2) * (width // 2) * 2, 128, dtype=np.uint8)
        head = f"YUV4MPEG2 W{width} H{height} F1:1 Ip A1:1 C420jpeg\nFRAME\n".encode()
        return head + y.tobytes() + chroma.tobytes()

    def kernel(self, width: int, height: int) -> np.ndarray:
        """The blind detection kernel at analysis size: per cell, box mean minus ring mean, signed.

        Zero-mean within every cell, so content that is flat across a cell contributes nothing.
        Normalised so that ``sum(kernel * mark) == 1``: the projection estimates the amplitude.
        Computed once per size (cached, read-only).
        """
        return _kernel(self, width, height)

    def _kernel(self, width: int, height: int) -> np.ndarray:
        cov = self.coverage(width, height, oversample=8).astype(np.float64)
        cell = self.cell_index(width, height).reshape(-1)
        n_cells = self.grid[0] * self.grid[1]
        inner = np.bincount(cell, weights=cov.reshape(-1), minlength=n_cells)
        ring = np.bincount(cell, weights=1.0 - cov.reshape(-1), minlength=n_cells)
        if np.any(inner <= 0) or np.any(ring <= 0):
            raise WatermarkError(f"analysis size {width}x{height} cannot resolve the {self.grid} grid")
        k = cov.reshape(-1) / inner[cell] - (1.0 - cov.reshape(-1)) / ring[cell]
        k *= self.signs().reshape(-1)[cell]
        k = k.reshape(height, width)
        return k / float(np.sum(k * cov * self.signs().reshape(-1)[cell].reshape(height, width)))


@functools.lru_cache(maxsize=8)
def _kernel(pattern: WatermarkPattern, width: int, height: int) -> np.ndarray:
    k = pattern._kernel(width, height)
    k.setflags(write=False)
    return k


ROBUST_MIN_SEGMENTS = 8  # below this, per-cell variances are too noisy to weight by


def detect_bits(segments: Sequence[np.ndarray], pattern: WatermarkPattern) -> list[float]:
    """Soft A/B bits, one per segment: about +1 for variant A, -1 for B (in luma levels).

    ``segments`` are the luma frames of each segment at one analysis size, each an array of
    shape (frames, height, width) or an already averaged (height, width). The time mean over
    the capture is subtracted first, so what is static in the picture drops out; the zero-mean
    kernel then removes what is smooth at the cell scale.

    Every cell is its own estimate of the amplitude; with ``ROBUST_MIN_SEGMENTS`` segments or
    more they are combined with inverse-variance weights (the variance of each cell across
    the capture's segments), so cells where the content moves (a ticking clock, a scoreboard,
    a face) count less than calm ones. Measured on the live 360p test stream after x264 at a
    quarter of the bitrate and 0.5x: SNR (mean / std of the sign-corrected soft bit) 1.5 with
    equal weights, 5.1 with these. The weights come from the capture alone, never from a
    candidate, so the decision rule's null distribution is unchanged.
    """
    if not segments:
        return []
    means = [np.asarray(s, dtype=np.float64) for s in segments]
    means = [m.mean(axis=0) if m.ndim == 3 else m for m in means]
    shape = means[0].shape
    if any(m.shape != shape for m in means):
        raise WatermarkError("all segments must have the same analysis size")
    stack = np.stack(means)
    stack -= stack.mean(axis=0) if len(means) > 1 else 0.0
    k = pattern.kernel(shape[1], shape[0])
    cells = pattern.cell_index(shape[1], shape[0]).reshape(-1)
    n_cells = pattern.grid[0] * pattern.grid[1]
    weighted = stack.reshape(len(means), -1) * k.reshape(-1)
    # per-cell projections; their sum over cells is the plain projection on the kernel
    per_cell = np.stack([np.bincount(cells, weights=row, minlength=n_cells) for row in weighted])
    if len(means) < ROBUST_MIN_SEGMENTS:
        return [float(v) for v in per_cell.sum(axis=1)]
    # each (equal) cell carries 1 / n_cells of the mark's projection: weights summing to
    # n_cells keep the soft bit in luma levels
    var = per_cell.var(axis=0)
    w = 1.0 / np.maximum(var, 1e-6 * float(np.median(var)) + 1e-12)
    w *= n_cells / w.sum()
    return [float(v) for v in per_cell @ w]


# ------------------------------------------------------------------------------------ codeword


def _keystream(secret: bytes, label: bytes, n: int) -> list[int]:
    """n pseudorandom bits: HMAC-SHA256(secret, label || counter) in counter mode."""
    out: list[int] = []
    counter = 0
    while len(out) < n:
        block = hmac.new(secret, label + counter.to_bytes(4, "big"), hashlib.sha256).digest()
        for byte in block:
            out.extend((byte >> (7 - b)) & 1 for b in range(8))
        counter += 1
    return out[:n]


def _conv_encode(bits: Sequence[int]) -> list[int]:
    state = 0  # the last K-1 input bits, newest in the high bit
    out: list[int] = []
    for b in list(bits) + [0] * _TAIL:
        reg = (b << _TAIL) | state
        out.extend(bin(reg & g).count("1") & 1 for g in _G)
        state = reg >> 1
    return out


def _viterbi(soft: Sequence[float], n_info: int) -> list[int]:
    """Soft-decision Viterbi for the zero-terminated code; soft > 0 means coded bit 0."""
    n_states = 1 << _TAIL
    outputs = []
    for state in range(n_states):
        for b in (0, 1):
            reg = (b << _TAIL) | state
            outputs.append(tuple(1 - 2 * (bin(reg & g).count("1") & 1) for g in _G))
    neg = -math.inf
    metric = [0.0] + [neg] * (n_states - 1)
    history: list[list[tuple[int, int]]] = []
    for t in range(n_info + _TAIL):
        s0, s1 = soft[2 * t], soft[2 * t + 1]
        new = [neg] * n_states
        back: list[tuple[int, int]] = [(0, 0)] * n_states
        for state in range(n_states):
            if metric[state] == neg:
                continue
            for b in (0, 1) if t < n_info else (0,):
                o0, o1 = outputs[state * 2 + b]
                reg = (b << _TAIL) | state
                nxt = reg >> 1
                m = metric[state] + o0 * s0 + o1 * s1
                if m > new[nxt]:
                    new[nxt] = m
                    back[nxt] = (state, b)
        metric = new
        history.append(back)
    state, bits = 0, []
    for back in reversed(history):
        state, b = back[state]
        bits.append(b)
    return list(reversed(bits))[:n_info]


def _bits(value: int, n: int) -> list[int]:
    return [(value >> (n - 1 - i)) & 1 for i in range(n)]


@functools.lru_cache(maxsize=4096)
def binomial_tail(n: int, k: int) -> float:
    """P(X >= k) for X ~ Binomial(n, 1/2), exactly."""
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    return sum(math.comb(n, j) for j in range(k, n + 1)) / float(1 << n) if n < 1000 else _tail_big(n, k)


def _tail_big(n: int, k: int) -> float:  # pragma: no cover - captures longer than 1000 segments
    log_c = math.lgamma(n + 1) - n * math.log(2)
    return math.fsum(math.exp(log_c - math.lgamma(j + 1) - math.lgamma(n - j + 1))
                     for j in range(k, n + 1))


@functools.lru_cache(maxsize=4096)
def required_agreements(n: int, hypotheses: int, false_positive: float) -> int | None:
    """Fewest agreements out of n that a wrong session reaches with probability <= false_positive.

    Union bound over the hypotheses (candidates x cyclic offsets) on the exact binomial tail.
    None when even n out of n would not be significant enough.
    """
    for k in range(n // 2, n + 1):
        if hypotheses * binomial_tail(n, k) <= false_positive:
            return k
    return None


@dataclass(frozen=True)
class Match:
    """A decoded capture: the session it names, and how sure we are."""

    session_id: str
    agreements: int  # segments whose variant matches the session's codeword
    segments: int  # segments that were decided (not erased) and count for this session
    required: int  # agreements needed for the false-accusation target
    bound: float  # P(a session that did not receive this capture scores as well), union-bounded
    offset: int  # cyclic codeword index of the capture's first segment
    timestamp: int | None = None  # the 16-bit field, when known or decoded
    score: float = 0.0  # the soft test's z = sum(s w) / |s|

    @property
    def confidence(self) -> float:
        return 1.0 - self.bound


ERASURE = 0.3  # soft bits below this fraction of the median magnitude are not decided


def hard_decisions(soft_bits: Sequence[float]) -> np.ndarray:
    """+1 (A), -1 (B) or 0 (erased) per segment.

    The erasure rule looks only at the capture (segments whose mark is much weaker than the
    capture's typical one: a scene cut, a black frame, a misaligned window), never at a
    candidate, so every candidate's bits stay independent of the decisions under H0.
    """
    soft = np.asarray(soft_bits, dtype=np.float64)
    if soft.size == 0:
        return soft
    level = float(np.median(np.abs(soft)))
    return np.where(np.abs(soft) >= ERASURE * level, np.sign(soft), 0.0)


class WatermarkCodec:
    """Session id + timestamp -> cyclic A/B sequence; soft bits -> the session that leaked.

    The sequence has period ``PAYLOAD_EVERY * length`` segments. Every ``PAYLOAD_EVERY``-th
    segment carries the next symbol of the payload codeword (``codeword``: convolutionally
    coded tag and timestamp, for blind decoding of long recordings); every other segment
    carries a keyed pseudorandom bit of the session tag and the segment's position
    (``_tag_bits``). Only those carry the candidate test: for a session that did not receive
    the capture they are independent fair coins (HMAC outputs of another tag), so the exact
    binomial bound holds. The payload symbols cannot carry it: 80 coded bits of a 40-bit tag
    are not independent (a window of ``n`` of them spans only about ``n / 2 + 6`` tag bits),
    and the timestamp symbols are the same for every session of the same hour.
    """

    def __init__(self, secret: bytes, payload_bits: int = TAG_BITS + TIMESTAMP_BITS) -> None:
        if len(secret) < 16:
            raise WatermarkError("the watermark secret must be at least 16 bytes")
        if payload_bits != TAG_BITS + TIMESTAMP_BITS:
            raise WatermarkError(f"payload is {TAG_BITS}-bit tag + {TIMESTAMP_BITS}-bit timestamp")
        self._secret = secret
        self.payload_bits = payload_bits
        self.length = 2 * (payload_bits + _TAIL)  # payload codeword symbols
        self.period = PAYLOAD_EVERY * self.length  # segments before the sequence repeats
        # code bits that depend on the tag only (the code is causal)
        self.tag_positions = 2 * TAG_BITS
        self._scramble = _keystream(secret, b"flowcast-wm-scramble", self.length)
        self._tag_cache: dict[int, np.ndarray] = {}

    def tag(self, session_id: str) -> int:
        mac = hmac.new(self._secret, b"flowcast-wm-session\x00" + session_id.encode(), hashlib.sha256)
        return int.from_bytes(mac.digest()[: TAG_BITS // 8], "big")

    def _codeword_tag(self, tag: int, timestamp: int) -> list[int]:
        info = _bits(tag, TAG_BITS) + _bits(timestamp % (1 << TIMESTAMP_BITS), TIMESTAMP_BITS)
        return [c ^ k for c, k in zip(_conv_encode(info), self._scramble, strict=True)]

    def codeword(self, session_id: str, timestamp: int) -> list[int]:
        """The payload codeword: symbol ``k`` is the A/B bit (0 -> A) of segment ``PAYLOAD_EVERY * k``."""
        return self._codeword_tag(self.tag(session_id), timestamp)

    def _tag_bits(self, tag: int) -> np.ndarray:
        """The keyed bit of every position of the period for one tag (payload positions unused)."""
        bits = self._tag_cache.get(tag)
        if bits is None:
            key = hmac.new(self._secret, b"flowcast-wm-sequence\x00" + tag.to_bytes(TAG_BITS // 8, "big"),
                           hashlib.sha256).digest()
            bits = np.asarray(_keystream(key, b"flowcast-wm-bits", self.period), dtype=np.int8)
            if len(self._tag_cache) > 4096:
                self._tag_cache.clear()
            self._tag_cache[tag] = bits
        return bits

    def _sequence_tag(self, tag: int, timestamp: int) -> np.ndarray:
        seq = self._tag_bits(tag).copy()
        seq[::PAYLOAD_EVERY] = self._codeword_tag(tag, timestamp)
        return seq

    def sequence(self, session_id: str, timestamp: int) -> list[int]:
        """The A/B bit (0 -> A, 1 -> B) of each segment index modulo ``self.period``."""
        return [int(b) for b in self._sequence_tag(self.tag(session_id), timestamp)]

    def variant_for(self, session_id: str, timestamp: int, segment_index: int) -> Variant:
        pos = segment_index % self.period
        if pos % PAYLOAD_EVERY == 0:
            bit = self.codeword(session_id, timestamp)[pos // PAYLOAD_EVERY]
        else:
            bit = int(self._tag_bits(self.tag(session_id))[pos])
        return "B" if bit else "A"

    # -- decoding

    def decode(
        self,
        soft_bits: Sequence[float],
        candidates: Sequence[str] | Mapping[str, int] | None,
        *,
        offset: int | Sequence[int] | None = 0,
        false_positive: float = 1e-6,
    ) -> Match | None:
        """The candidate session the capture names, or None.

        ``soft_bits[j]`` belongs to segment index ``offset + j`` (positive = variant A); a
        sequence of offsets, or ``None`` for every start in the period, is searched, and each
        start tried is one more hypothesis in the union bound. ``candidates`` are session ids,
        or a mapping session id -> timestamp (the timestamp is then reported; the test uses
        only the tag positions, which do not depend on it). Without candidates the payload is
        Viterbi-decoded from the payload positions; that needs a whole period of segments.
        """
        soft = np.asarray(soft_bits, dtype=np.float64)
        if candidates is None:
            return self._decode_blind(soft, offset, false_positive)
        if offset is None:
            offsets: Sequence[int] = range(self.period)
        elif isinstance(offset, int):
            offsets = (offset % self.period,)
        else:
            offsets = sorted({o % self.period for o in offset})
        stamps = candidates if isinstance(candidates, Mapping) else {c: None for c in candidates}
        hypotheses = len(stamps) * len(offsets)
        if len(soft) > self.period:
            # longer than the period: positions repeat, so fold them (each position is one
            # independent coin under H0 and must count once); one start at a time
            rows = [self._fold(soft, start) for start in offsets]
        else:
            pos = (np.asarray(offsets)[:, None] + np.arange(len(soft))[None, :]) % self.period
            rows = [(pos[r], np.where(pos[r] % PAYLOAD_EVERY != 0, soft, 0.0), pos[r] % PAYLOAD_EVERY != 0)
                    for r in range(len(offsets))]
        # the decisions depend on the capture and on which of its segments are tag positions
        # (start mod PAYLOAD_EVERY), never on a candidate
        cache: dict[bytes, tuple[np.ndarray, np.ndarray, int, float]] = {}
        prepared = []
        for row_pos, row_soft, use in rows:
            key = use.tobytes()
            if key not in cache:
                hard = np.zeros(len(row_soft))
                hard[use] = hard_decisions(row_soft[use])
                decided = hard != 0
                cache[key] = (hard, decided, int(decided.sum()), float(np.sum(row_soft[use] ** 2)))
            prepared.append((row_pos, row_soft, cache[key]))
        same = len({len(p[0]) for p in prepared}) == 1
        if same:  # one matrix per quantity: every start of one candidate in one numpy step
            m_pos = np.stack([p[0] for p in prepared])
            m_soft = np.stack([p[1] for p in prepared])
            m_hard = np.stack([p[2][0] for p in prepared])
            m_decided = np.stack([p[2][1] for p in prepared])
            m_energy = np.array([p[2][3] for p in prepared])
        best: Match | None = None
        for session_id, stamp in stamps.items():
            bits = self._tag_bits(self.tag(session_id))
            if same:
                m_signs = 1.0 - 2.0 * bits[m_pos].astype(np.float64)
                m_agree = ((m_signs == m_hard) & m_decided).sum(axis=1)
                m_z = np.where(m_energy > 0, (m_soft * m_signs).sum(axis=1) / np.sqrt(np.maximum(m_energy, 1e-300)), 0.0)
            for r, ((row_pos, row_soft, (hard, decided, n, energy)), start) in enumerate(zip(prepared, offsets)):
                if same:
                    agree, z = int(m_agree[r]), float(m_z[r])
                else:
                    signs = 1.0 - 2.0 * bits[row_pos].astype(np.float64)
                    agree = int(np.sum((signs == hard) & decided))
                    z = float(np.dot(row_soft, signs)) / math.sqrt(energy) if energy > 0 else 0.0
                # two tests per hypothesis (hard count, soft score): each gets half of the budget
                hard_bound = 2 * hypotheses * binomial_tail(n, agree)
                soft_bound = 2 * hypotheses * math.exp(-z * z / 2) if z > 0 else math.inf
                bound = min(hard_bound, soft_bound, 1.0)
                if bound > false_positive:
                    continue
                if best is None or bound < best.bound:
                    need = required_agreements(n, 2 * hypotheses, false_positive) or n + 1
                    best = Match(session_id, agree, n, need, bound, int(start), stamp, z)
        return best

    def _fold(self, soft: np.ndarray, start: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(positions, soft bits, tag-position mask) with repeats of a position summed."""
        pos = (start + np.arange(len(soft))) % self.period
        use = pos % PAYLOAD_EVERY != 0
        folded = np.bincount(pos[use], weights=soft[use], minlength=self.period)
        seen = np.flatnonzero(np.bincount(pos[use], minlength=self.period))
        return seen, folded[seen], np.ones(len(seen), bool)

    def _decode_blind(
        self, soft: np.ndarray, offset: int | Sequence[int] | None, false_positive: float
    ) -> Match | None:
        if not isinstance(offset, int) or len(soft) < self.period:
            raise WatermarkError(f"blind decoding needs the offset and >= {self.period} segments")
        folded = np.zeros(self.length)
        for j, v in enumerate(soft):  # the payload positions, soft-combined over repeats
            pos = (offset + j) % self.period
            if pos % PAYLOAD_EVERY == 0:
                folded[pos // PAYLOAD_EVERY] += v
        descrambled = folded * (1.0 - 2.0 * np.asarray(self._scramble, dtype=np.float64))
        info = _viterbi(list(descrambled), self.payload_bits)
        tag = int("".join(map(str, info[:TAG_BITS])), 2)
        stamp = int("".join(map(str, info[TAG_BITS:])), 2)
        # confirm on the tag positions, which the Viterbi decoder did not look at: for a wrong
        # tag they are fair coins, so only the 2^40 tags are hypotheses... and the decoder
        # picked one, so the bound is the exact binomial tail of that one
        tag_soft = np.array([v for j, v in enumerate(soft) if (offset + j) % PAYLOAD_EVERY])
        pos = np.array([(offset + j) % self.period for j in range(len(soft)) if (offset + j) % PAYLOAD_EVERY])
        folded_tag = np.bincount(pos, weights=tag_soft, minlength=self.period)
        seen = np.bincount(pos, minlength=self.period) > 0
        s = folded_tag[seen]
        hard = hard_decisions(s)
        use = hard != 0
        n = int(use.sum())
        signs = 1.0 - 2.0 * self._tag_bits(tag)[seen].astype(np.float64)
        agree = int(np.sum(hard[use] == signs[use]))
        need = required_agreements(n, 1, false_positive)
        if need is None or agree < need:
            return None
        bound = min(1.0, binomial_tail(n, agree))
        return Match(f"tag:{tag:010x}", agree, n, need, bound, offset % self.period, stamp)
