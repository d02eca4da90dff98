"""Sequence parameter sets of H.264 and HEVC: the picture size (and H.264's frame rate) a stream declares.

One parser per codec for every ingest: the SRT ingest reads the SPS it finds in a video PES
(relay.media.pes), the RTMP ingest the one of the FLV AVC sequence header (relay.media.avc).
"""

from __future__ import annotations

from dataclasses import dataclass

from relay.media.bits import BitReader, BitstreamError, unescape_rbsp

_H264_HIGH_PROFILES = {100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135}


@dataclass(frozen=True, slots=True)
class VideoParams:
    """Picture size and (when the SPS carries timing) frame rate."""

    width: int
    height: int
    frame_rate: float | None = None


def _skip_scaling_list(r: BitReader, size: int) -> None:
    last, nxt = 8, 8
    for _ in range(size):
        if nxt != 0:
            nxt = (last + r.se() + 256) % 256
        last = nxt if nxt != 0 else last


def parse_h264_sps(nal: bytes) -> VideoParams:
    """Width, height and VUI frame rate from an H.264 SPS NAL unit (header byte included)."""
    if not nal or nal[0] & 0x1F != 7:
        raise BitstreamError("not an H.264 SPS")
    r = BitReader(unescape_rbsp(nal[1:]))
    profile_idc = r.bits(8)
    r.skip(16)  # constraint flags, level_idc
    r.ue()  # seq_parameter_set_id
    chroma_format_idc = 1
    separate_colour_plane = 0
    if profile_idc in _H264_HIGH_PROFILES:
        chroma_format_idc = r.ue()
        if chroma_format_idc > 3:
            raise BitstreamError("bad chroma_format_idc")
        if chroma_format_idc == 3:
            separate_colour_plane = r.bits(1)
        r.ue()  # bit_depth_luma_minus8
        r.ue()  # bit_depth_chroma_minus8
        r.skip(1)  # qpprime_y_zero_transform_bypass_flag
        if r.bits(1):  # seq_scaling_matrix_present_flag
            for i in range(8 if chroma_format_idc != 3 else 12):
                if r.bits(1):
                    _skip_scaling_list(r, 16 if i < 6 else 64)
    r.ue()  # log2_max_frame_num_minus4
    poc_type = r.ue()
    if poc_type == 0:
        r.ue()  # log2_max_pic_order_cnt_lsb_minus4
    elif poc_type == 1:
        r.skip(1)
        r.se()
        r.se()
        cycle = r.ue()
        if cycle > 255:
            raise BitstreamError("bad num_ref_frames_in_pic_order_cnt_cycle")
        for _ in range(cycle):
            r.se()
    elif poc_type != 2:
        raise BitstreamError("bad pic_order_cnt_type")
    r.ue()  # max_num_ref_frames
    r.skip(1)  # gaps_in_frame_num_value_allowed_flag
    width_mbs = r.ue() + 1
    height_map_units = r.ue() + 1
    frame_mbs_only = r.bits(1)
    if not frame_mbs_only:
        r.skip(1)  # mb_adaptive_frame_field_flag
    r.skip(1)  # direct_8x8_inference_flag
    width = width_mbs * 16
    height = (2 - frame_mbs_only) * height_map_units * 16
    if r.bits(1):  # frame_cropping_flag
        left, right, top, bottom = r.ue(), r.ue(), r.ue(), r.ue()
        if chroma_format_idc == 0 or separate_colour_plane:
            crop_x, crop_y = 1, 2 - frame_mbs_only
        else:
            sub_w = 1 if chroma_format_idc == 3 else 2
            sub_h = 2 if chroma_format_idc == 1 else 1
            crop_x, crop_y = sub_w, sub_h * (2 - frame_mbs_only)
        width -= crop_x * (left + right)
        height -= crop_y * (top + bottom)
    if width <= 0 or height <= 0:
        raise BitstreamError("cropping larger than the picture")
    return VideoParams(width, height, _h264_vui_frame_rate(r))


def _h264_vui_frame_rate(r: BitReader) -> float | None:
    try:
        if not r.bits(1):  # vui_parameters_present_flag
            return None
        if r.bits(1):  # aspect_ratio_info_present_flag
            if r.bits(8) == 255:  # Extended_SAR
                r.skip(32)
        if r.bits(1):  # overscan_info_present_flag
            r.skip(1)
        if r.bits(1):  # video_signal_type_present_flag
            r.skip(4)
            if r.bits(1):  # colour_description_present_flag
                r.skip(24)
        if r.bits(1):  # chroma_loc_info_present_flag
            r.ue()
            r.ue()
        if not r.bits(1):  # timing_info_present_flag
            return None
        num_units_in_tick = r.bits(32)
        time_scale = r.bits(32)
    except BitstreamError:
        return None
    if num_units_in_tick == 0 or time_scale == 0:
        return None
    rate = time_scale / (2 * num_units_in_tick)
    return round(rate, 3) if 1 <= rate <= 1000 else None


def parse_hevc_sps(nal: bytes) -> VideoParams:
    """Width and height from an HEVC SPS NAL unit (2-byte header included)."""
    if len(nal) < 3 or (nal[0] >> 1) & 0x3F != 33:
        raise BitstreamError("not an HEVC SPS")
    r = BitReader(unescape_rbsp(nal[2:]))
    r.skip(4)  # sps_video_parameter_set_id
    max_sub_layers_minus1 = r.bits(3)
    r.skip(1)  # sps_temporal_id_nesting_flag
    # profile_tier_level(1, max_sub_layers_minus1)
    r.skip(96)  # general profile (88 bits) + general_level_idc
    present = [(r.bits(1), r.bits(1)) for _ in range(max_sub_layers_minus1)]
    if max_sub_layers_minus1 > 0:
        r.skip(2 * (8 - max_sub_layers_minus1))
    for profile_present, level_present in present:
        if profile_present:
            r.skip(88)
        if level_present:
            r.skip(8)
    r.ue()  # sps_seq_parameter_set_id
    chroma_format_idc = r.ue()
    if chroma_format_idc > 3:
        raise BitstreamError("bad chroma_format_idc")
    separate_colour_plane = r.bits(1) if chroma_format_idc == 3 else 0
    width = r.ue()
    height = r.ue()
    if r.bits(1):  # conformance_window_flag
        left, right, top, bottom = r.ue(), r.ue(), r.ue(), r.ue()
        if separate_colour_plane or chroma_format_idc == 0:
            sub_w = sub_h = 1
        else:
            sub_w = 1 if chroma_format_idc == 3 else 2
            sub_h = 2 if chroma_format_idc == 1 else 1
        width -= sub_w * (left + right)
        height -= sub_h * (top + bottom)
    if width <= 0 or height <= 0 or width > 65535 or height > 65535:
        raise BitstreamError("impossible picture size")
    return VideoParams(width, height, None)
