from __future__ import annotations

import pytest

from relay.media.avc import parse_sps, sps_from_flv_video

# Taken from x264 output (ffmpeg lavfi testsrc2): baseline 320x240 25 fps, and interlaced 1918x1076
# at 30000/1001 with cropping.
SPS_320 = bytes.fromhex("6742c00dda0507ec0440000003004000000c83c50aa8")
SPS_1918_INTERLACED = bytes.fromhex("674d4028f403c0227a93011000003e90000ea601f162ea")
AVC_SEQUENCE_HEADER = bytes.fromhex(
    "17000000000142c00dffe100166742c00dda0507ec0440000003004000000c83c50aa801000468ce0fc8"
)


def test_progressive_sps() -> None:
    info = parse_sps(SPS_320)
    assert info is not None
    assert (info.width, info.height, info.frame_rate, info.profile_idc) == (320, 240, 25.0, 66)


def test_interlaced_cropped_sps() -> None:
    info = parse_sps(SPS_1918_INTERLACED)
    assert info is not None
    assert (info.width, info.height) == (1918, 1076)
    assert info.frame_rate == pytest.approx(29.97, abs=0.01)


def test_from_flv_sequence_header() -> None:
    info = sps_from_flv_video(AVC_SEQUENCE_HEADER)
    assert info is not None and (info.width, info.height) == (320, 240)


@pytest.mark.parametrize("data", [b"", b"\x68\x00", SPS_320[:6], b"\x67" + b"\x00" * 40])
def test_garbage_gives_none(data: bytes) -> None:
    assert parse_sps(data) is None


def test_non_avc_tags_give_none() -> None:
    assert sps_from_flv_video(b"\x27\x01\x00\x00\x00") is None
    assert sps_from_flv_video(AVC_SEQUENCE_HEADER[:12]) is None
