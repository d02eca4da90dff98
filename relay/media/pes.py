"""PES: the header's timestamp, and the first picture and SPS of a video PES (H.264, HEVC).

The MPEG-TS reader marks a PES as a keyframe when its first picture is a random access point; it
scans at most 32 KiB of elementary stream per PES to find out (the SPS comes first, before any picture).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from relay.media.bits import BitstreamError
from relay.media.sps import VideoParams, parse_h264_sps, parse_hevc_sps

_SCAN_LIMIT_BYTES = 32 * 1024  # ES bytes of one PES kept to find its first picture and the SPS

_NO_OPTIONAL_HEADER = {0xBC, 0xBE, 0xBF, 0xF0, 0xF1, 0xF2, 0xF8, 0xFF}


def _timestamp(b: bytes, off: int) -> int:
    return ((b[off] >> 1) & 0x07) << 30 | b[off + 1] << 22 | (b[off + 2] >> 1) << 15 | b[off + 3] << 7 | b[off + 4] >> 1


def parse_pes_header(payload: bytes) -> tuple[int, int | None] | None:
    """(offset of the elementary stream data, DTS or else PTS in 90 kHz) of a PES start."""
    if len(payload) < 9 or payload[:3] != b"\x00\x00\x01":
        return None
    if payload[3] in _NO_OPTIONAL_HEADER:
        return 6, None
    flags = payload[7] >> 6
    es_offset = 9 + payload[8]
    if es_offset > len(payload):
        return None
    ts: int | None = None
    if flags == 3 and len(payload) >= 19:
        ts = _timestamp(payload, 14)
    elif flags & 2 and len(payload) >= 14:
        ts = _timestamp(payload, 9)
    return es_offset, ts


@dataclass(slots=True)
class VideoPesScan:
    """The first bytes of one video PES: finds its first picture's type and any SPS."""

    codec: str
    start_index: int
    """Absolute index of the PES's first TS packet (the one to mark as keyframe)."""
    keyframe: bool | None
    want_sps: bool
    data: bytearray = field(default_factory=bytearray)
    pos: int = 0
    nal_start: int | None = None
    sps: VideoParams | None = None

    @property
    def done(self) -> bool:
        return self.keyframe is not None and not self.want_sps

    @property
    def full(self) -> bool:
        """The scan limit was reached: later elementary stream bytes of this PES are not looked at."""
        return len(self.data) >= _SCAN_LIMIT_BYTES

    def feed(self, es: bytes) -> None:
        if self.done or self.full:
            return
        self.data += es[: _SCAN_LIMIT_BYTES - len(self.data)]
        data = self.data
        while True:
            found = data.find(b"\x00\x00\x01", self.pos)
            if found < 0:
                self.pos = max(self.pos, len(data) - 2)
                return
            header_at = found + 3
            if header_at + 2 > len(data):
                return  # need the NAL header bytes: keep pos at this start code
            self._nal_ends(found)
            self.nal_start = header_at
            self.pos = header_at
            self._nal_begins(header_at)
            if self.done:
                return

    def finish(self) -> None:
        """The PES ended (or the scan limit was hit): close the last NAL, decide "no keyframe"."""
        self._nal_ends(len(self.data))
        if self.keyframe is None:
            self.keyframe = False
        self.want_sps = False

    def _nal_type(self, at: int) -> int:
        if self.codec == "h264":
            return self.data[at] & 0x1F
        return (self.data[at] >> 1) & 0x3F

    def _nal_begins(self, at: int) -> None:
        nal_type = self._nal_type(at)
        if self.codec == "h264":
            is_vcl, is_irap = 1 <= nal_type <= 5, nal_type == 5
        else:
            is_vcl, is_irap = nal_type <= 31, 16 <= nal_type <= 23
        if is_vcl:
            if self.keyframe is None:
                self.keyframe = is_irap
            self.want_sps = False  # parameter sets come before the first picture
            self.nal_start = None

    def _nal_ends(self, end: int) -> None:
        start = self.nal_start
        self.nal_start = None
        if start is None or not self.want_sps:
            return
        nal = bytes(self.data[start:end]).rstrip(b"\x00")  # trailing zeros belong to the next start code
        try:
            if self.codec == "h264" and self._nal_type(start) == 7:
                self.sps = parse_h264_sps(nal)
            elif self.codec == "hevc" and self._nal_type(start) == 33:
                self.sps = parse_hevc_sps(nal)
            else:
                return
        except (BitstreamError, IndexError, ValueError):
            return
        self.want_sps = False
