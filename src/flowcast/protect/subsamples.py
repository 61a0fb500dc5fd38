"""Subsample maps for NAL-structured video (ISO/IEC 23001-7 clause 10.2, 10.4; CMAF 23000-19 8.2.2).

Each VCL NAL unit keeps its length prefix, NAL header and slice header in the clear, so a
player can parse slices without the key; every non-VCL NAL (parameter sets, SEI, AUD) stays
wholly clear. Finding where a slice header ends means parsing it, which needs the SPS and PPS
(from avcC/hvcC, updated by any in-band copies). The map is returned as (clear, protected)
pairs; BytesOfClearData is 16 bits (23001-7 7.2.2), so longer clear runs become extra pairs.

Sans-I/O: bytes in, SubsampleEntry tuples out.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal, Protocol

__all__ = [
    "MAX_CLEAR",
    "AvcSliceParser",
    "HevcSliceParser",
    "NalParser",
    "SubsampleEntry",
    "SubsampleError",
    "iter_nals",
    "subsample_map",
]

MAX_CLEAR = 0xFFFF  # BytesOfClearData is unsigned int(16)
_BLOCK = 16


class SubsampleError(ValueError):
    """A sample or parameter set we cannot map safely (truncated NAL, unknown PPS, unsupported syntax)."""


@dataclass(frozen=True, slots=True)
class SubsampleEntry:
    clear: int  # BytesOfClearData
    protected: int  # BytesOfProtectedData


# --- bitstream helpers ---------------------------------------------------------------------


def _unescape(data: bytes) -> tuple[bytes, list[int]]:
    """RBSP of `data` (emulation_prevention_three_byte removed, H.264 7.4.1) and, for each removed
    byte, how many RBSP bytes precede it, so RBSP lengths map back to NAL byte counts."""
    out = bytearray()
    removed: list[int] = []
    start = 0
    while True:
        hit = data.find(b"\x00\x00\x03", start)
        if hit < 0:
            out += data[start:]
            return bytes(out), removed
        out += data[start : hit + 2]
        removed.append(len(out))
        start = hit + 3


def _escaped_length(rbsp_len: int, removed: list[int]) -> int:
    return rbsp_len + sum(1 for pos in removed if pos < rbsp_len)


class _Bits:
    __slots__ = ("data", "pos", "end")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0
        self.end = len(data) * 8

    def u(self, n: int) -> int:
        if self.pos + n > self.end:
            raise SubsampleError("bitstream ended inside a header")
        value = 0
        for _ in range(n):
            value = (value << 1) | ((self.data[self.pos >> 3] >> (7 - (self.pos & 7))) & 1)
            self.pos += 1
        return value

    def flag(self) -> bool:
        return self.u(1) == 1

    def ue(self) -> int:
        zeros = 0
        while self.u(1) == 0:
            zeros += 1
            if zeros > 31:
                raise SubsampleError("Exp-Golomb code longer than 32 bits")
        return (1 << zeros) - 1 + self.u(zeros)

    def se(self) -> int:
        k = self.ue()
        return (k + 1) // 2 if k & 1 else -(k // 2)

    def skip(self, n: int) -> None:
        if self.pos + n > self.end:
            raise SubsampleError("bitstream ended inside a header")
        self.pos += n


def _ceil_log2(n: int) -> int:
    return max(0, (n - 1).bit_length())


def iter_nals(sample: bytes, length_size: int) -> Iterator[tuple[int, int]]:
    """(offset of NAL unit, its size) for each length-prefixed NAL in a sample (14496-15 5.3.2)."""
    if length_size not in (1, 2, 4):
        raise SubsampleError(f"NAL length size {length_size} not 1, 2 or 4")
    pos = 0
    while pos < len(sample):
        if pos + length_size > len(sample):
            raise SubsampleError(f"truncated NAL length prefix at {pos}")
        size = int.from_bytes(sample[pos : pos + length_size], "big")
        pos += length_size
        if size == 0 or pos + size > len(sample):
            raise SubsampleError(f"NAL of {size} bytes at {pos} does not fit the sample")
        yield pos, size
        pos += size


class NalParser(Protocol):
    """Codec-specific knowledge the map needs."""

    length_size: int

    def is_vcl(self, nal: bytes) -> bool: ...

    def observe(self, nal: bytes) -> None:
        """Remember an in-band parameter set."""

    def slice_header_size(self, nal: bytes) -> int:
        """Bytes of NAL header + slice header, in the escaped NAL, rounded up to a whole byte."""


# --- H.264 ---------------------------------------------------------------------------------

_AVC_HIGH_PROFILES = {100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135}


@dataclass(slots=True)
class _AvcSps:
    chroma_array_type: int
    separate_colour_plane: bool
    log2_max_frame_num: int
    poc_type: int
    log2_max_poc_lsb: int
    delta_pic_order_always_zero: bool
    frame_mbs_only: bool
    pic_size_in_map_units: int


@dataclass(slots=True)
class _AvcPps:
    sps_id: int
    entropy_coding_mode: bool
    bottom_field_pic_order_in_frame_present: bool
    num_slice_groups_minus1: int
    slice_group_map_type: int
    slice_group_change_rate: int
    num_ref_idx_l0_default: int
    num_ref_idx_l1_default: int
    weighted_pred: bool
    weighted_bipred_idc: int
    deblocking_filter_control_present: bool
    redundant_pic_cnt_present: bool


def _avc_scaling_list(b: _Bits, size: int) -> None:
    last, nxt = 8, 8
    for _ in range(size):
        if nxt != 0:
            nxt = (last + b.se() + 256) % 256
        last = nxt if nxt != 0 else last


def _parse_avc_sps(rbsp: bytes) -> tuple[int, _AvcSps]:
    b = _Bits(rbsp)
    profile = b.u(8)
    b.skip(16)  # constraint flags, level_idc
    sps_id = b.ue()
    chroma_format_idc, separate = 1, False
    if profile in _AVC_HIGH_PROFILES:
        chroma_format_idc = b.ue()
        if chroma_format_idc == 3:
            separate = b.flag()
        b.ue()  # bit_depth_luma_minus8
        b.ue()  # bit_depth_chroma_minus8
        b.skip(1)  # qpprime_y_zero_transform_bypass_flag
        if b.flag():  # seq_scaling_matrix_present_flag
            for i in range(8 if chroma_format_idc != 3 else 12):
                if b.flag():
                    _avc_scaling_list(b, 16 if i < 6 else 64)
    log2_max_frame_num = b.ue() + 4
    poc_type = b.ue()
    log2_max_poc_lsb, always_zero = 0, False
    if poc_type == 0:
        log2_max_poc_lsb = b.ue() + 4
    elif poc_type == 1:
        always_zero = b.flag()
        b.se()
        b.se()
        for _ in range(b.ue()):
            b.se()
    b.ue()  # max_num_ref_frames
    b.skip(1)  # gaps_in_frame_num_value_allowed_flag
    width_mbs = b.ue() + 1
    height_map_units = b.ue() + 1
    frame_mbs_only = b.flag()
    return sps_id, _AvcSps(
        0 if separate else chroma_format_idc,
        separate,
        log2_max_frame_num,
        poc_type,
        log2_max_poc_lsb,
        always_zero,
        frame_mbs_only,
        width_mbs * height_map_units,
    )


def _parse_avc_pps(rbsp: bytes) -> tuple[int, _AvcPps]:
    b = _Bits(rbsp)
    pps_id = b.ue()
    sps_id = b.ue()
    entropy = b.flag()
    bottom_field = b.flag()
    groups_minus1 = b.ue()
    map_type, change_rate = 0, 1
    if groups_minus1 > 0:
        map_type = b.ue()
        if map_type == 0:
            for _ in range(groups_minus1 + 1):
                b.ue()
        elif map_type == 2:
            for _ in range(groups_minus1):
                b.ue()
                b.ue()
        elif map_type in (3, 4, 5):
            b.skip(1)
            change_rate = b.ue() + 1
        elif map_type == 6:
            units = b.ue() + 1
            bits = _ceil_log2(groups_minus1 + 1)
            for _ in range(units):
                b.skip(bits)
    l0 = b.ue() + 1
    l1 = b.ue() + 1
    weighted_pred = b.flag()
    weighted_bipred_idc = b.u(2)
    b.se()  # pic_init_qp_minus26
    b.se()  # pic_init_qs_minus26
    b.se()  # chroma_qp_index_offset
    deblocking = b.flag()
    b.skip(1)  # constrained_intra_pred_flag
    redundant = b.flag()
    return pps_id, _AvcPps(
        sps_id, entropy, bottom_field, groups_minus1, map_type, change_rate, l0, l1,
        weighted_pred, weighted_bipred_idc, deblocking, redundant,
    )


def _avc_pred_weight_table(b: _Bits, chroma_array_type: int, l0: int, l1: int, is_b: bool) -> None:
    b.ue()  # luma_log2_weight_denom
    if chroma_array_type != 0:
        b.ue()  # chroma_log2_weight_denom
    for count in (l0, l1) if is_b else (l0,):
        for _ in range(count):
            if b.flag():
                b.se()
                b.se()
            if chroma_array_type != 0 and b.flag():
                for _ in range(4):
                    b.se()


@dataclass
class AvcSliceParser:
    """H.264 (ISO/IEC 14496-10) slice headers, with SPS/PPS from avcC and in-band."""

    length_size: int = 4
    sps: dict[int, _AvcSps] = field(default_factory=dict)
    pps: dict[int, _AvcPps] = field(default_factory=dict)

    @classmethod
    def from_avcc(cls, avcc: bytes) -> AvcSliceParser:
        """avcC payload: AVCDecoderConfigurationRecord (14496-15 5.3.3.1)."""
        try:
            length_size = (avcc[4] & 0x03) + 1
            parser = cls(length_size)
            pos = 5
            for _ in range(2):  # SPS array, then PPS array
                count = avcc[pos] & (0x1F if pos == 5 else 0xFF)
                pos += 1
                for _ in range(count):
                    size = int.from_bytes(avcc[pos : pos + 2], "big")
                    parser.observe(avcc[pos + 2 : pos + 2 + size])
                    pos += 2 + size
        except IndexError as exc:
            raise SubsampleError("truncated avcC") from exc
        return parser

    def is_vcl(self, nal: bytes) -> bool:
        return 1 <= nal[0] & 0x1F <= 5

    def observe(self, nal: bytes) -> None:
        kind = nal[0] & 0x1F
        if kind == 7:
            sps_id, sps = _parse_avc_sps(_unescape(nal[1:])[0])
            self.sps[sps_id] = sps
        elif kind == 8:
            pps_id, pps = _parse_avc_pps(_unescape(nal[1:])[0])
            self.pps[pps_id] = pps

    def slice_header_size(self, nal: bytes) -> int:
        """slice_header() of 14496-10 7.3.3, bits counted on the RBSP."""
        nal_ref_idc = (nal[0] >> 5) & 3
        nal_type = nal[0] & 0x1F
        rbsp, removed = _unescape(nal[1:])
        b = _Bits(rbsp)
        b.ue()  # first_mb_in_slice
        slice_type = b.ue() % 5  # 0 P, 1 B, 2 I, 3 SP, 4 SI
        pps = self.pps.get(b.ue())
        if pps is None or pps.sps_id not in self.sps:
            raise SubsampleError("slice refers to an unknown PPS/SPS")
        sps = self.sps[pps.sps_id]
        if sps.separate_colour_plane:
            b.skip(2)
        b.skip(sps.log2_max_frame_num)
        field_pic = False
        if not sps.frame_mbs_only:
            field_pic = b.flag()
            if field_pic:
                b.skip(1)
        if nal_type == 5:
            b.ue()  # idr_pic_id
        if sps.poc_type == 0:
            b.skip(sps.log2_max_poc_lsb)
            if pps.bottom_field_pic_order_in_frame_present and not field_pic:
                b.se()
        if sps.poc_type == 1 and not sps.delta_pic_order_always_zero:
            b.se()
            if pps.bottom_field_pic_order_in_frame_present and not field_pic:
                b.se()
        if pps.redundant_pic_cnt_present:
            b.ue()
        is_b = slice_type == 1
        if is_b:
            b.skip(1)  # direct_spatial_mv_pred_flag
        l0, l1 = pps.num_ref_idx_l0_default, pps.num_ref_idx_l1_default
        if slice_type in (0, 1, 3):
            if b.flag():  # num_ref_idx_active_override_flag
                l0 = b.ue() + 1
                if is_b:
                    l1 = b.ue() + 1
        # ref_pic_list_modification() (7.3.3.1); NAL types 20/21 (MVC) never reach here
        if slice_type not in (2, 4):
            for _ in range(2 if is_b else 1):
                if b.flag():
                    while True:
                        idc = b.ue()
                        if idc == 3:
                            break
                        if idc > 5:
                            raise SubsampleError(f"modification_of_pic_nums_idc {idc}")
                        b.ue()
        if (pps.weighted_pred and slice_type in (0, 3)) or (pps.weighted_bipred_idc == 1 and is_b):
            _avc_pred_weight_table(b, sps.chroma_array_type, l0, l1, is_b)
        if nal_ref_idc != 0:  # dec_ref_pic_marking() (7.3.3.3)
            if nal_type == 5:
                b.skip(2)
            elif b.flag():
                while True:
                    op = b.ue()
                    if op == 0:
                        break
                    if op > 6:
                        raise SubsampleError(f"memory_management_control_operation {op}")
                    if op in (1, 3):
                        b.ue()
                    if op == 2:
                        b.ue()
                    if op in (3, 6):
                        b.ue()
                    if op == 4:
                        b.ue()
        if pps.entropy_coding_mode and slice_type not in (2, 4):
            b.ue()  # cabac_init_idc
        b.se()  # slice_qp_delta
        if slice_type in (3, 4):
            if slice_type == 3:
                b.skip(1)
            b.se()
        if pps.deblocking_filter_control_present:
            if b.ue() != 1:
                b.se()
                b.se()
        if pps.num_slice_groups_minus1 > 0 and 3 <= pps.slice_group_map_type <= 5:
            units = sps.pic_size_in_map_units
            b.skip(_ceil_log2(units // pps.slice_group_change_rate + 1 + (units % pps.slice_group_change_rate > 0)))
        rbsp_bytes = (b.pos + 7) // 8
        return 1 + _escaped_length(rbsp_bytes, removed)


# --- HEVC ----------------------------------------------------------------------------------


@dataclass(slots=True)
class _StRps:
    neg: list[tuple[int, bool]]  # (DeltaPocS0, used)
    pos: list[tuple[int, bool]]  # (DeltaPocS1, used)

    @property
    def num_delta_pocs(self) -> int:
        return len(self.neg) + len(self.pos)

    @property
    def used_count(self) -> int:
        return sum(u for _, u in self.neg) + sum(u for _, u in self.pos)


def _hevc_st_rps(b: _Bits, idx: int, num_sets: int, sets: list[_StRps]) -> _StRps:
    """st_ref_pic_set(stRpsIdx), H.265 7.3.7 with the derivation of 7.4.8."""
    inter = b.flag() if idx != 0 else False
    if inter:
        delta_idx = b.ue() + 1 if idx == num_sets else 1
        sign = b.u(1)
        delta_rps = (1 - 2 * sign) * (b.ue() + 1)
        ref_idx = idx - delta_idx
        if not 0 <= ref_idx < len(sets):
            raise SubsampleError("st_ref_pic_set predicts from a missing set")
        ref = sets[ref_idx]
        used_by_curr, use_delta = [], []
        for _ in range(ref.num_delta_pocs + 1):
            used = b.flag()
            used_by_curr.append(used)
            use_delta.append(True if used else b.flag())
        n_neg, n_all = len(ref.neg), ref.num_delta_pocs
        neg: list[tuple[int, bool]] = []
        for j in range(len(ref.pos) - 1, -1, -1):
            d = ref.pos[j][0] + delta_rps
            if d < 0 and use_delta[n_neg + j]:
                neg.append((d, used_by_curr[n_neg + j]))
        if delta_rps < 0 and use_delta[n_all]:
            neg.append((delta_rps, used_by_curr[n_all]))
        for j in range(n_neg):
            d = ref.neg[j][0] + delta_rps
            if d < 0 and use_delta[j]:
                neg.append((d, used_by_curr[j]))
        pos: list[tuple[int, bool]] = []
        for j in range(n_neg - 1, -1, -1):
            d = ref.neg[j][0] + delta_rps
            if d > 0 and use_delta[j]:
                pos.append((d, used_by_curr[j]))
        if delta_rps > 0 and use_delta[n_all]:
            pos.append((delta_rps, used_by_curr[n_all]))
        for j in range(len(ref.pos)):
            d = ref.pos[j][0] + delta_rps
            if d > 0 and use_delta[n_neg + j]:
                pos.append((d, used_by_curr[n_neg + j]))
        return _StRps(neg, pos)
    num_neg, num_pos = b.ue(), b.ue()
    if num_neg > 16 or num_pos > 16:
        raise SubsampleError("st_ref_pic_set too large")
    neg, poc = [], 0
    for _ in range(num_neg):
        poc -= b.ue() + 1
        neg.append((poc, b.flag()))
    pos, poc = [], 0
    for _ in range(num_pos):
        poc += b.ue() + 1
        pos.append((poc, b.flag()))
    return _StRps(neg, pos)


def _hevc_scaling_list_data(b: _Bits) -> None:
    for size_id in range(4):
        for _ in range(0, 6, 3 if size_id == 3 else 1):
            if not b.flag():  # scaling_list_pred_mode_flag
                b.ue()
            else:
                if size_id > 1:
                    b.se()
                for _ in range(min(64, 1 << (4 + (size_id << 1)))):
                    b.se()


def _hevc_profile_tier_level(b: _Bits, max_sub_layers_minus1: int) -> None:
    b.skip(88 + 8)  # general profile (88 bits) and general_level_idc
    present = [(b.flag(), b.flag()) for _ in range(max_sub_layers_minus1)]
    if max_sub_layers_minus1 > 0:
        b.skip(2 * (8 - max_sub_layers_minus1))
    for profile, level in present:
        if profile:
            b.skip(88)
        if level:
            b.skip(8)


@dataclass(slots=True)
class _HevcSps:
    chroma_array_type: int
    separate_colour_plane: bool
    log2_max_poc_lsb: int
    pic_size_in_ctbs: int
    sao: bool
    st_rps: list[_StRps]
    long_term_present: bool
    num_long_term_sps: int
    lt_used: list[bool]
    temporal_mvp: bool


def _parse_hevc_sps(rbsp: bytes) -> tuple[int, _HevcSps]:
    b = _Bits(rbsp)
    b.skip(4)  # sps_video_parameter_set_id
    max_sub_layers_minus1 = b.u(3)
    b.skip(1)
    _hevc_profile_tier_level(b, max_sub_layers_minus1)
    sps_id = b.ue()
    chroma_format_idc = b.ue()
    separate = b.flag() if chroma_format_idc == 3 else False
    width, height = b.ue(), b.ue()
    if b.flag():  # conformance_window_flag
        for _ in range(4):
            b.ue()
    b.ue()
    b.ue()  # bit depths
    log2_max_poc_lsb = b.ue() + 4
    ordering_all = b.flag()
    for _ in range(0 if ordering_all else max_sub_layers_minus1, max_sub_layers_minus1 + 1):
        b.ue()
        b.ue()
        b.ue()
    min_cb_log2 = b.ue() + 3
    ctb_log2 = min_cb_log2 + b.ue()
    b.ue()
    b.ue()
    b.ue()
    b.ue()
    if b.flag() and b.flag():  # scaling_list_enabled_flag, sps_scaling_list_data_present_flag
        _hevc_scaling_list_data(b)
    b.skip(1)  # amp_enabled_flag
    sao = b.flag()
    if b.flag():  # pcm_enabled_flag
        b.skip(8)
        b.ue()
        b.ue()
        b.skip(1)
    num_sets = b.ue()
    if num_sets > 64:
        raise SubsampleError("num_short_term_ref_pic_sets > 64")
    sets: list[_StRps] = []
    for i in range(num_sets):
        sets.append(_hevc_st_rps(b, i, num_sets, sets))
    long_term = b.flag()
    lt_used: list[bool] = []
    if long_term:
        for _ in range(b.ue()):
            b.skip(log2_max_poc_lsb)
            lt_used.append(b.flag())
    temporal_mvp = b.flag()
    ctb = 1 << ctb_log2
    ctbs = ((width + ctb - 1) >> ctb_log2) * ((height + ctb - 1) >> ctb_log2)
    return sps_id, _HevcSps(
        0 if separate else chroma_format_idc, separate, log2_max_poc_lsb, ctbs, sao, sets,
        long_term, len(lt_used), lt_used, temporal_mvp,
    )


@dataclass(slots=True)
class _HevcPps:
    sps_id: int
    dependent_slice_segments: bool
    output_flag_present: bool
    num_extra_slice_header_bits: int
    cabac_init_present: bool
    num_ref_idx_l0_default: int
    num_ref_idx_l1_default: int
    slice_chroma_qp_offsets_present: bool
    weighted_pred: bool
    weighted_bipred: bool
    tiles_or_wpp: bool
    loop_filter_across_slices: bool
    deblocking_override_enabled: bool
    deblocking_disabled: bool
    lists_modification_present: bool
    slice_header_extension_present: bool
    chroma_qp_offset_list_enabled: bool


def _parse_hevc_pps(rbsp: bytes) -> tuple[int, _HevcPps]:
    b = _Bits(rbsp)
    pps_id, sps_id = b.ue(), b.ue()
    dependent = b.flag()
    output_flag = b.flag()
    extra_bits = b.u(3)
    b.skip(1)  # sign_data_hiding_enabled_flag
    cabac_init_present = b.flag()
    l0, l1 = b.ue() + 1, b.ue() + 1
    b.se()  # init_qp_minus26
    b.skip(1)  # constrained_intra_pred_flag
    transform_skip = b.flag()
    if b.flag():  # cu_qp_delta_enabled_flag
        b.ue()
    b.se()
    b.se()
    chroma_offsets = b.flag()
    weighted_pred, weighted_bipred = b.flag(), b.flag()
    b.skip(1)  # transquant_bypass_enabled_flag
    tiles, wpp = b.flag(), b.flag()
    if tiles:
        cols, rows = b.ue() + 1, b.ue() + 1
        if not b.flag():  # uniform_spacing_flag
            for _ in range(cols - 1 + rows - 1):
                b.ue()
        b.skip(1)
    across_slices = b.flag()
    override_enabled, disabled = False, False
    if b.flag():  # deblocking_filter_control_present_flag
        override_enabled = b.flag()
        disabled = b.flag()
        if not disabled:
            b.se()
            b.se()
    if b.flag():
        _hevc_scaling_list_data(b)
    lists_mod = b.flag()
    b.ue()  # log2_parallel_merge_level_minus2
    header_ext = b.flag()
    chroma_qp_list = False
    if b.flag():  # pps_extension_present_flag
        range_ext, multilayer, ext_3d, scc = b.flag(), b.flag(), b.flag(), b.flag()
        b.skip(4)
        if multilayer or ext_3d or scc:
            raise SubsampleError("HEVC multilayer/3D/SCC PPS extensions are not supported")
        if range_ext:  # pps_range_extension() (7.3.2.3.2)
            if transform_skip:
                b.ue()
            b.skip(1)
            chroma_qp_list = b.flag()
    return pps_id, _HevcPps(
        sps_id, dependent, output_flag, extra_bits, cabac_init_present, l0, l1, chroma_offsets,
        weighted_pred, weighted_bipred, tiles or wpp, across_slices, override_enabled, disabled,
        lists_mod, header_ext, chroma_qp_list,
    )


@dataclass
class HevcSliceParser:
    """H.265 (ISO/IEC 23008-2) slice segment headers, with SPS/PPS from hvcC and in-band."""

    length_size: int = 4
    sps: dict[int, _HevcSps] = field(default_factory=dict)
    pps: dict[int, _HevcPps] = field(default_factory=dict)

    @classmethod
    def from_hvcc(cls, hvcc: bytes) -> HevcSliceParser:
        """hvcC payload: HEVCDecoderConfigurationRecord (14496-15 8.3.3.1)."""
        try:
            parser = cls((hvcc[21] & 0x03) + 1)
            arrays = hvcc[22]
            pos = 23
            for _ in range(arrays):
                count = int.from_bytes(hvcc[pos + 1 : pos + 3], "big")
                pos += 3
                for _ in range(count):
                    size = int.from_bytes(hvcc[pos : pos + 2], "big")
                    parser.observe(hvcc[pos + 2 : pos + 2 + size])
                    pos += 2 + size
        except IndexError as exc:
            raise SubsampleError("truncated hvcC") from exc
        return parser

    def is_vcl(self, nal: bytes) -> bool:
        return (nal[0] >> 1) & 0x3F < 32

    def observe(self, nal: bytes) -> None:
        if len(nal) < 3:
            return
        kind = (nal[0] >> 1) & 0x3F
        if kind == 33:
            sps_id, sps = _parse_hevc_sps(_unescape(nal[2:])[0])
            self.sps[sps_id] = sps
        elif kind == 34:
            pps_id, pps = _parse_hevc_pps(_unescape(nal[2:])[0])
            self.pps[pps_id] = pps

    def slice_header_size(self, nal: bytes) -> int:
        """slice_segment_header() of H.265 7.3.6.1, through its byte_alignment()."""
        nal_type = (nal[0] >> 1) & 0x3F
        rbsp, removed = _unescape(nal[2:])
        b = _Bits(rbsp)
        first_in_pic = b.flag()
        if 16 <= nal_type <= 23:
            b.skip(1)  # no_output_of_prior_pics_flag
        pps = self.pps.get(b.ue())
        if pps is None or pps.sps_id not in self.sps:
            raise SubsampleError("slice refers to an unknown PPS/SPS")
        sps = self.sps[pps.sps_id]
        dependent = False
        if not first_in_pic:
            if pps.dependent_slice_segments:
                dependent = b.flag()
            b.skip(_ceil_log2(sps.pic_size_in_ctbs))
        if not dependent:
            b.skip(pps.num_extra_slice_header_bits)
            slice_type = b.ue()  # 0 B, 1 P, 2 I
            if pps.output_flag_present:
                b.skip(1)
            if sps.separate_colour_plane:
                b.skip(2)
            temporal_mvp = False
            num_pic_total_curr = 0
            if nal_type not in (19, 20):  # not IDR
                b.skip(sps.log2_max_poc_lsb)
                if not b.flag():  # short_term_ref_pic_set_sps_flag
                    rps = _hevc_st_rps(b, len(sps.st_rps), len(sps.st_rps), sps.st_rps)
                else:
                    idx = b.u(_ceil_log2(len(sps.st_rps))) if len(sps.st_rps) > 1 else 0
                    if idx >= len(sps.st_rps):
                        raise SubsampleError("short_term_ref_pic_set_idx out of range")
                    rps = sps.st_rps[idx]
                num_pic_total_curr = rps.used_count
                if sps.long_term_present:
                    num_lt_sps = b.ue() if sps.num_long_term_sps > 0 else 0
                    num_lt_pics = b.ue()
                    for i in range(num_lt_sps + num_lt_pics):
                        if i < num_lt_sps:
                            idx = b.u(_ceil_log2(sps.num_long_term_sps)) if sps.num_long_term_sps > 1 else 0
                            num_pic_total_curr += sps.lt_used[idx] if idx < len(sps.lt_used) else 0
                        else:
                            b.skip(sps.log2_max_poc_lsb)
                            num_pic_total_curr += b.u(1)
                        if b.flag():  # delta_poc_msb_present_flag
                            b.ue()
                if sps.temporal_mvp:
                    temporal_mvp = b.flag()
            sao_luma = sao_chroma = False
            if sps.sao:
                sao_luma = b.flag()
                if sps.chroma_array_type != 0:
                    sao_chroma = b.flag()
            if slice_type in (0, 1):
                is_b = slice_type == 0
                l0, l1 = pps.num_ref_idx_l0_default, pps.num_ref_idx_l1_default
                if b.flag():  # num_ref_idx_active_override_flag
                    l0 = b.ue() + 1
                    if is_b:
                        l1 = b.ue() + 1
                if pps.lists_modification_present and num_pic_total_curr > 1:
                    bits = _ceil_log2(num_pic_total_curr)
                    if b.flag():
                        b.skip(bits * l0)
                    if is_b and b.flag():
                        b.skip(bits * l1)
                if is_b:
                    b.skip(1)  # mvd_l1_zero_flag
                if pps.cabac_init_present:
                    b.skip(1)
                if temporal_mvp:
                    from_l0 = b.flag() if is_b else True
                    if (from_l0 and l0 > 1) or (not from_l0 and l1 > 1):
                        b.ue()  # collocated_ref_idx
                if (pps.weighted_pred and not is_b) or (pps.weighted_bipred and is_b):
                    _hevc_pred_weight_table(b, sps.chroma_array_type, l0, l1, is_b)
                b.ue()  # five_minus_max_num_merge_cand
            b.se()  # slice_qp_delta
            if pps.slice_chroma_qp_offsets_present:
                b.se()
                b.se()
            if pps.chroma_qp_offset_list_enabled:
                b.skip(1)
            override = b.flag() if pps.deblocking_override_enabled else False
            deblocking_disabled = pps.deblocking_disabled
            if override:
                deblocking_disabled = b.flag()
                if not deblocking_disabled:
                    b.se()
                    b.se()
            if pps.loop_filter_across_slices and (sao_luma or sao_chroma or not deblocking_disabled):
                b.skip(1)
        if pps.tiles_or_wpp:
            entries = b.ue()
            if entries > 0:
                bits = b.ue() + 1
                if bits > 32:
                    raise SubsampleError("offset_len_minus1 > 31")
                b.skip(bits * entries)
        if pps.slice_header_extension_present:
            b.skip(8 * b.ue())
        if b.u(1) != 1:  # byte_alignment(): alignment_bit_equal_to_one
            raise SubsampleError("slice header did not end in byte_alignment()")
        while b.pos & 7:
            b.skip(1)
        return 2 + _escaped_length(b.pos // 8, removed)


def _hevc_pred_weight_table(b: _Bits, chroma_array_type: int, l0: int, l1: int, is_b: bool) -> None:
    """pred_weight_table() of H.265 7.3.6.3, single layer (no reference shares the current POC)."""
    b.ue()
    if chroma_array_type != 0:
        b.se()
    for count in (l0, l1) if is_b else (l0,):
        luma = [b.flag() for _ in range(count)]
        chroma = [b.flag() for _ in range(count)] if chroma_array_type != 0 else [False] * count
        for i in range(count):
            if luma[i]:
                b.se()
                b.se()
            if chroma[i]:
                for _ in range(4):
                    b.se()


# --- the map -------------------------------------------------------------------------------


def subsample_map(
    sample: bytes, parser: NalParser, scheme: Literal["cenc", "cbcs"]
) -> list[SubsampleEntry]:
    """Subsample entries covering the whole sample (sum of clear + protected == len(sample)).

    cbcs: protected data starts at the first byte after each slice header (23001-7 10.4.2).
    cenc: the clear part grows so each protected run is a multiple of 16 bytes (23000-19 8.2.2.2),
    keeping CTR blocks aligned to the slice data.
    """
    length_size = parser.length_size
    entries: list[SubsampleEntry] = []
    clear = 0
    for offset, size in iter_nals(sample, length_size):
        nal = sample[offset : offset + size]
        if not parser.is_vcl(nal):
            parser.observe(nal)
            clear += length_size + size
            continue
        header = parser.slice_header_size(nal)
        if header > size:
            raise SubsampleError(f"slice header of {header} bytes exceeds its {size}-byte NAL")
        protected = size - header
        if scheme == "cenc":
            protected -= protected % _BLOCK
        clear += length_size + size - protected
        if protected == 0:
            continue
        while clear > MAX_CLEAR:
            entries.append(SubsampleEntry(MAX_CLEAR, 0))
            clear -= MAX_CLEAR
        entries.append(SubsampleEntry(clear, protected))
        clear = 0
    while clear > MAX_CLEAR:
        entries.append(SubsampleEntry(MAX_CLEAR, 0))
        clear -= MAX_CLEAR
    if clear or not entries:
        entries.append(SubsampleEntry(clear, 0))
    return entries
