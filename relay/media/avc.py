"""The H.264 SPS of an FLV AVC sequence header: the picture size, frame rate, profile and level.

Used when a publisher's onMetaData lacks width/height/framerate: the AVC sequence header carries
them.  Only configuration records go through here (a few dozen bytes per session).
"""

from __future__ import annotations

from dataclasses import dataclass

from relay.media.bits import BitstreamError
from relay.media.sps import parse_h264_sps

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


def parse_sps(nal: bytes) -> SpsInfo | None:
    """Parse an SPS NAL unit (with its 1-byte NAL header); None if it is not one we can read.

    The bit-level parse is relay.media.sps's (one H.264 SPS parser for RTMP and SRT ingest alike).
    """
    if len(nal) < 4 or nal[0] & 0x1F != 7 or len(nal) > _MAX_SPS_BYTES:
        return None
    try:
        params = parse_h264_sps(nal)
    except BitstreamError:
        return None
    # profile_idc and level_idc are the first and third bytes after the NAL header (never escaped).
    return SpsInfo(params.width, params.height, params.frame_rate, profile_idc=nal[1], level_idc=nal[3])


def sps_from_flv_video(payload: bytes) -> SpsInfo | None:
    """The first SPS of a legacy FLV AVC sequence header (codec 7, packet type 0), parsed."""
    if len(payload) < 5 + 8 or payload[0] & 0x0F != 7 or payload[1] != 0:
        return None
    record = payload[5:]
    count = record[5] & 0x1F
    if count < 1:
        return None
    length = int.from_bytes(record[6:8], "big")
    nal = record[8 : 8 + length]
    if len(nal) != length:
        return None
    return parse_sps(nal)
