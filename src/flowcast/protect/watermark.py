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

Codeword (``WatermarkCodec``): payload = 40-bit session tag (HMAC of the session id) ++ 16-bit
timestamp field; error correction is the rate-1/2, constraint-length-7 convolutional code
(generators 171/133 octal, the CCSDS 131.0-B / IEEE 802.11 code, free distance 10) with a
zero tail, so the cycle is ``2 * (40 + 16 + 6) = 124`` segments; the coded bits are XORed with a
keystream from HMAC-SHA256(secret) (keyed scrambling: without the secret no capture decodes
to, nor can be forged as, a valid session). The code is causal, so code bits 0..79 depend on
the session tag alone: a forensic service that holds the candidate session ids matches those
bits without knowing the timestamp.

Decision rule with candidates: each segment's soft bit is decided A, B, or erased (much
weaker than the capture's median, decided from the capture alone). For each candidate ``c``
and each cyclic start ``o`` searched, two tests are run against ``c``'s +/-1 codeword ``w``:

- hard: the agreements ``a`` of the ``n`` decided segments. For a session that did not
  receive the capture, its codeword bits are HMAC output, independent of the capture, so
  ``a ~ Binomial(n, 1/2)`` exactly, whatever the capture is (a random A/B sequence, another
  session, a forgery without the secret): ``P(a >= k) = binomial_tail(n, k)``.
- soft: ``z = sum_j s_j w_j / sqrt(sum_j s_j^2)``; with ``w`` independent random signs,
  Hoeffding gives ``P(z >= t) <= exp(-t^2 / 2)``. It is the better test when the attack
  leaves the bits noisy (many hard errors); the hard one is far tighter when they are clean.

A match needs ``2 * K * O * P <= p`` (union bound over both tests, ``K`` candidates, ``O``
starts) for a target false-accusation probability ``p`` per capture, default ``1e-6``. With
clean decisions that takes ``n >= log2(2 K O / p)`` segments: 24 for K=3, O=2; 58 (+ about 6
per tolerated error: 64 tolerate 1, 80 tolerate 4) for a million sessions, an unknown start
(O=124) and ``p = 1e-9``.
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


def detect_bits(segments: Sequence[np.ndarray], pattern: WatermarkPattern) -> list[float]:
    """Soft A/B bits, one per segment: about +1 for variant A, -1 for B (in luma levels).

    ``segments`` are the luma frames of each segment at one analysis size, each an array of
    shape (frames, height, width) or an already averaged (height, width). The time mean over
    the capture is subtracted first, so what is static in the picture drops out; the zero-mean
    kernel then removes what is smooth at the cell scale.
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
    return [float(v) for v in np.tensordot(stack, k, axes=([1, 2], [0, 1]))]


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
    """Session id + timestamp -> cyclic A/B codeword; soft bits -> the session that leaked."""

    def __init__(self, secret: bytes, payload_bits: int = TAG_BITS + TIMESTAMP_BITS) -> None:
        if len(secret) < 16:
            raise WatermarkError("the watermark secret must be at least 16 bytes")
        if payload_bits != TAG_BITS + TIMESTAMP_BITS:
            raise WatermarkError(f"payload is {TAG_BITS}-bit tag + {TIMESTAMP_BITS}-bit timestamp")
        self._secret = secret
        self.payload_bits = payload_bits
        self.length = 2 * (payload_bits + _TAIL)
        # code bits that depend on the tag only (the code is causal)
        self.tag_positions = 2 * TAG_BITS
        self._scramble = _keystream(secret, b"flowcast-wm-scramble", self.length)

    def tag(self, session_id: str) -> int:
        mac = hmac.new(self._secret, b"flowcast-wm-session\x00" + session_id.encode(), hashlib.sha256)
        return int.from_bytes(mac.digest()[: TAG_BITS // 8], "big")

    def _codeword_tag(self, tag: int, timestamp: int) -> list[int]:
        info = _bits(tag, TAG_BITS) + _bits(timestamp % (1 << TIMESTAMP_BITS), TIMESTAMP_BITS)
        return [c ^ k for c, k in zip(_conv_encode(info), self._scramble, strict=True)]

    def codeword(self, session_id: str, timestamp: int) -> list[int]:
        """The A/B bit (0 -> A, 1 -> B) for each segment index modulo ``self.length``."""
        return self._codeword_tag(self.tag(session_id), timestamp)

    def variant_for(self, session_id: str, timestamp: int, segment_index: int) -> Variant:
        bit = self.codeword(session_id, timestamp)[segment_index % self.length]
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

        ``soft_bits[j]`` belongs to codeword index ``offset + j`` (positive = variant A);
        a sequence of offsets, or ``None`` for every cyclic start, is searched, and each start
        tried is one more hypothesis in the union bound. ``candidates`` are session ids, or a
        mapping session id -> timestamp when the session log has it (then every position
        counts, not only the tag-only ones). Without candidates the payload is
        Viterbi-decoded; that needs a whole cycle of segments.
        """
        soft = np.asarray(soft_bits, dtype=np.float64)
        if candidates is None:
            return self._decode_blind(soft, offset, false_positive)
        if offset is None:
            offsets: Sequence[int] = range(self.length)
        elif isinstance(offset, int):
            offsets = (offset % self.length,)
        else:
            offsets = sorted({o % self.length for o in offset})
        stamps = candidates if isinstance(candidates, Mapping) else {c: None for c in candidates}
        hypotheses = len(stamps) * len(offsets)
        hard = hard_decisions(soft)
        # one row per cyclic start: codeword position of every capture segment
        pos = (np.asarray(offsets)[:, None] + np.arange(len(soft))[None, :]) % self.length
        decided = np.broadcast_to(hard != 0, pos.shape)
        tag_only = decided & (pos < self.tag_positions)
        everywhere = np.ones(pos.shape, bool)
        in_tag = pos < self.tag_positions
        best: Match | None = None
        for session_id, stamp in stamps.items():
            word = np.asarray(self._codeword_tag(self.tag(session_id), stamp or 0), dtype=np.float64)
            signs = (1.0 - 2.0 * word)[pos]  # bit 0 (A) -> +1
            use = decided if stamp is not None else tag_only
            counts = use.sum(axis=1)
            agrees = ((signs == hard[None, :]) & use).sum(axis=1)
            # the soft test: z = sum(s w) / |s| over every eligible segment, erasures included
            eligible = everywhere if stamp is not None else in_tag
            sw = np.where(eligible, soft[None, :] * signs, 0.0).sum(axis=1)
            energy = np.where(eligible, soft[None, :] ** 2, 0.0).sum(axis=1)
            zs = np.where(energy > 0, sw / np.sqrt(np.maximum(energy, 1e-300)), 0.0)
            for row in range(len(offsets)):
                n, agree, z = int(counts[row]), int(agrees[row]), float(zs[row])
                # two tests per hypothesis (hard count, soft score): each gets half of the budget
                hard_bound = 2 * hypotheses * binomial_tail(n, agree)
                soft_bound = 2 * hypotheses * math.exp(-z * z / 2) if z > 0 else math.inf
                bound = min(hard_bound, soft_bound, 1.0)
                if bound > false_positive:
                    continue
                if best is None or bound < best.bound:
                    need = required_agreements(n, 2 * hypotheses, false_positive) or n + 1
                    best = Match(session_id, agree, n, need, bound, int(offsets[row]), stamp, z)
        return best

    def _decode_blind(
        self, soft: np.ndarray, offset: int | Sequence[int] | None, false_positive: float
    ) -> Match | None:
        if not isinstance(offset, int) or len(soft) < self.length:
            raise WatermarkError(f"blind decoding needs the offset and >= {self.length} segments")
        folded = np.zeros(self.length)
        for j, v in enumerate(soft):  # soft-combine repeats of the cycle
            folded[(offset + j) % self.length] += v
        descrambled = folded * (1.0 - 2.0 * np.asarray(self._scramble, dtype=np.float64))
        info = _viterbi(list(descrambled), self.payload_bits)
        tag = int("".join(map(str, info[:TAG_BITS])), 2)
        stamp = int("".join(map(str, info[TAG_BITS:])), 2)
        signs = 1.0 - 2.0 * np.asarray(self._codeword_tag(tag, stamp), dtype=np.float64)
        hard = hard_decisions(folded)
        use = hard != 0
        n = int(use.sum())
        # the decoder picked the best of 2^56 payloads: all of them are hypotheses
        hypotheses = 1 << self.payload_bits
        need = required_agreements(n, hypotheses, false_positive)
        agree = int(np.sum(hard[use] == signs[use]))
        if need is None or agree < need:
            return None
        bound = min(1.0, hypotheses * binomial_tail(n, agree))
        return Match(f"tag:{tag:010x}", agree, n, need, bound, offset % self.length, stamp)
