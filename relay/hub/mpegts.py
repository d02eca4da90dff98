"""Just enough MPEG-TS to feed a hub: split into 188-byte packets, flag PAT/PMT and random access points.

The SRT ingest hands the hub runs of TS packets; the hub needs to know which packets are codec
configuration (PAT/PMT, replayed to late joiners and compared on reconnect) and which start a keyframe
(the adaptation field's random_access_indicator, set by muxers on video keyframes).
"""

from __future__ import annotations

from collections.abc import Iterator

from relay.media.packets import MediaKind, MediaPacket

TS_PACKET_SIZE = 188
SYNC_BYTE = 0x47
PAT_PID = 0


def packet_pid(packet: bytes) -> int:
    return ((packet[1] & 0x1F) << 8) | packet[2]


def random_access(packet: bytes) -> bool:
    """True if the adaptation field says a decoder may start here."""
    has_adaptation = packet[3] & 0x20
    return bool(has_adaptation and packet[4] > 0 and packet[5] & 0x40)


def without_continuity(packet: bytes) -> bytes:
    """The packet with its continuity counter zeroed: PAT/PMT repeats compare equal."""
    return packet[:3] + bytes([packet[3] & 0xF0]) + packet[4:]


# Stream types whose random access points are video keyframes (MPEG-1/2/4 video, H.264, HEVC, VVC, CAVS).
VIDEO_STREAM_TYPES = frozenset({0x01, 0x02, 0x10, 0x1B, 0x24, 0x33, 0x42})


def _section(packet: bytes) -> tuple[int, int] | None:
    """(start, end-before-CRC) of the single-packet PSI section in `packet`, or None."""
    if not packet[1] & 0x40:  # payload_unit_start: a section begins here
        return None
    pos = 4
    if packet[3] & 0x20:
        pos += 1 + packet[4]
    if pos >= TS_PACKET_SIZE:
        return None
    pos += 1 + packet[pos]  # pointer field
    if pos + 8 > TS_PACKET_SIZE:
        return None
    section_length = ((packet[pos + 1] & 0x0F) << 8) | packet[pos + 2]
    return pos, min(pos + 3 + section_length - 4, TS_PACKET_SIZE)


def pmt_pids(pat_packet: bytes) -> set[int]:
    """PMT PIDs listed in a single-packet PAT (the only kind encoders send)."""
    bounds = _section(pat_packet) if packet_pid(pat_packet) == PAT_PID else None
    if bounds is None:
        return set()
    pos, end = bounds
    pids: set[int] = set()
    for entry in range(pos + 8, end - 3, 4):
        program = (pat_packet[entry] << 8) | pat_packet[entry + 1]
        if program != 0:
            pids.add(((pat_packet[entry + 2] & 0x1F) << 8) | pat_packet[entry + 3])
    return pids


def video_pids(pmt_packet: bytes) -> set[int]:
    """Elementary PIDs of video streams in a single-packet PMT."""
    bounds = _section(pmt_packet)
    if bounds is None:
        return set()
    pos, end = bounds
    program_info_length = ((pmt_packet[pos + 10] & 0x0F) << 8) | pmt_packet[pos + 11]
    entry = pos + 12 + program_info_length
    pids: set[int] = set()
    while entry + 5 <= end:
        stream_type = pmt_packet[entry]
        pid = ((pmt_packet[entry + 1] & 0x1F) << 8) | pmt_packet[entry + 2]
        es_info_length = ((pmt_packet[entry + 3] & 0x0F) << 8) | pmt_packet[entry + 4]
        if stream_type in VIDEO_STREAM_TYPES:
            pids.add(pid)
        entry += 5 + es_info_length
    return pids


class TsPacketizer:
    """Turns a TS byte stream into MediaPackets, one per 188-byte packet, flagged config/keyframe.

    Keeps only the PIDs learnt from the PAT/PMT and a partial packet between calls; bounded.
    """

    def __init__(self) -> None:
        self._pmt_pids: set[int] = set()
        self._video_pids: set[int] = set()
        self._partial = b""

    def feed(self, data: bytes, timestamp_ms: int) -> Iterator[MediaPacket]:
        data = self._partial + data
        pos = 0
        while pos + TS_PACKET_SIZE <= len(data):
            if data[pos] != SYNC_BYTE:
                pos += 1  # resynchronise on garbage
                continue
            packet = data[pos:pos + TS_PACKET_SIZE]
            pos += TS_PACKET_SIZE
            pid = packet_pid(packet)
            if pid == PAT_PID:
                self._pmt_pids = pmt_pids(packet) or self._pmt_pids
                yield MediaPacket(MediaKind.DATA, timestamp_ms, packet, config=True)
            elif pid in self._pmt_pids:
                self._video_pids = video_pids(packet) or self._video_pids
                yield MediaPacket(MediaKind.DATA, timestamp_ms, packet, config=True)
            elif pid in self._video_pids:
                yield MediaPacket(MediaKind.VIDEO, timestamp_ms, packet, keyframe=random_access(packet))
            else:
                yield MediaPacket(MediaKind.AUDIO, timestamp_ms, packet)
        self._partial = data[pos:][-TS_PACKET_SIZE:]
