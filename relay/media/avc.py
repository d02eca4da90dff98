"""H.264 sequence parameter sets: the picture size and frame rate a stream declares.

Used when a publisher's onMetaData lacks width/height/framerate: the AVC sequence header carries
them.  Only configuration records go through here (a few dozen bytes per session), so a plain bit
reader is fine.
"""

from __future__ import annotations

from dataclasses import dataclass

_HIGH_PROFILES = {100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135}
_MAX_SPS_BYTES = 4096


@dataclass(frozen=True, slots=True)
class SpsInfo:
    """What a sequence parameter set says about the picture."""

    width: int
    """Displayed width in pixels (after cropping)."""
    height: int
    """Displayed height in pixels (after cropping)."""
    frame_rate: float | None
    """Frames per second from the VUI timing info, if present."""
    profile_idc: int
    """H.264 profile (66 baseline, 77 main, 100 high, ...)."""
    level_idc: int
    """H.264 level times ten."""


class _Bits:
    __slots__ = ("data", "pos", "size")

    def __init__(self, data: bytes) -> None:
        self.data = int.from_bytes(data, "big")
        self.size = len(data) * 8
        self.pos = 0

    def u(self, count: int) -> int:
        if self.pos + count > self.size:
            raise ValueError("SPS truncated")
        self.pos += count
        return (self.data >> (self.size - self.pos)) & ((1 << count) - 1)

    def ue(self) -> int:
        zeros = 0
        while self.u(1) == 0:
            zeros += 1
            if zeros > 31:
                raise ValueError("exp-Golomb code too long")
        return (1 << zeros) - 1 + self.u(zeros)

    def se(self) -> int:
        value = self.ue()
        return (value + 1) // 2 if value & 1 else -(value // 2)


def _unescape(nal: bytes) -> bytes:
    # Remove emulation prevention bytes (00 00 03 -> 00 00).
    return nal.replace(b"\x00\x00\x03", b"\x00\x00")


def parse_sps(nal: bytes) -> SpsInfo | None:
    """Parse an SPS NAL unit (with its 1-byte NAL header); None if it is not one we can read."""
    if not nal or nal[0] & 0x1F != 7 or len(nal) > _MAX_SPS_BYTES:
        return None
    try:
        return _parse(_Bits(_unescape(nal[1:])))
    except ValueError:
        return None


def _skip_scaling_list(bits: _Bits, size: int) -> None:
    last = next_scale = 8
    for _ in range(size):
        if next_scale:
            next_scale = (last + bits.se() + 256) % 256
        last = next_scale or last


def _parse(bits: _Bits) -> SpsInfo:
    profile = bits.u(8)
    bits.u(8)  # constraint flags
    level = bits.u(8)
    bits.ue()  # seq_parameter_set_id
    chroma_format = 1
    separate_planes = 0
    if profile in _HIGH_PROFILES:
        chroma_format = bits.ue()
        if chroma_format == 3:
            separate_planes = bits.u(1)
        bits.ue()  # bit_depth_luma_minus8
        bits.ue()  # bit_depth_chroma_minus8
        bits.u(1)  # qpprime_y_zero_transform_bypass_flag
        if bits.u(1):  # seq_scaling_matrix_present_flag
            for index in range(8 if chroma_format != 3 else 12):
                if bits.u(1):
                    _skip_scaling_list(bits, 16 if index < 6 else 64)
    bits.ue()  # log2_max_frame_num_minus4
    poc_type = bits.ue()
    if poc_type == 0:
        bits.ue()
    elif poc_type == 1:
        bits.u(1)
        bits.se()
        bits.se()
        cycle = bits.ue()
        if cycle > 255:
            raise ValueError("POC cycle too long")
        for _ in range(cycle):
            bits.se()
    bits.ue()  # max_num_ref_frames
    bits.u(1)  # gaps_in_frame_num_value_allowed_flag
    width_mbs = bits.ue() + 1
    height_units = bits.ue() + 1
    frame_mbs_only = bits.u(1)
    if not frame_mbs_only:
        bits.u(1)  # mb_adaptive_frame_field_flag
    bits.u(1)  # direct_8x8_inference_flag
    crop = (0, 0, 0, 0)
    if bits.u(1):
        crop = (bits.ue(), bits.ue(), bits.ue(), bits.ue())
    if chroma_format == 0 or separate_planes:
        crop_x, crop_y = 1, 2 - frame_mbs_only
    else:
        sub_width = 1 if chroma_format == 3 else 2
        sub_height = 2 if chroma_format == 1 else 1
        crop_x, crop_y = sub_width, sub_height * (2 - frame_mbs_only)
    width = width_mbs * 16 - crop_x * (crop[0] + crop[1])
    height = (2 - frame_mbs_only) * height_units * 16 - crop_y * (crop[2] + crop[3])
    frame_rate = _vui_frame_rate(bits) if bits.u(1) else None
    if width <= 0 or height <= 0:
        raise ValueError("SPS picture size is not positive")
    return SpsInfo(width, height, frame_rate, profile, level)


def _vui_frame_rate(bits: _Bits) -> float | None:
    if bits.u(1):  # aspect_ratio_info_present_flag
        if bits.u(8) == 255:
            bits.u(32)
    if bits.u(1):  # overscan_info_present_flag
        bits.u(1)
    if bits.u(1):  # video_signal_type_present_flag
        bits.u(4)
        if bits.u(1):
            bits.u(24)
    if bits.u(1):  # chroma_loc_info_present_flag
        bits.ue()
        bits.ue()
    if not bits.u(1):  # timing_info_present_flag
        return None
    units = bits.u(32)
    scale = bits.u(32)
    if not units or not scale:
        return None
    return scale / (2 * units)


def sps_from_flv_video(payload: bytes) -> SpsInfo | None:
    """The first SPS of a legacy FLV AVC sequence header (codec 7, packet type 0), parsed."""
    if len(payload) < 5 + 8 or payload[0] & 0x0F != 7 or payload[1] != 0:
        return None
    record = payload[5:]
    count = record[5] & 0x1F
    if count < 1:
        return None
    length = int.from_bytes(record[6:8], "big")
    nal = record[8:8 + length]
    if len(nal) != length:
        return None
    return parse_sps(nal)
