"""The little MPEG-TS the hub itself needs: packet size, PID, and continuity-free comparison.

Splitting and classifying TS (PAT/PMT as config, random access points as keyframes) is the SRT
ingest's job (relay.media.mpegts.MpegTsReader); the hub only compares configuration packets on a
reconnect, where continuity counters legitimately differ.
"""

from __future__ import annotations

TS_PACKET_SIZE = 188


def packet_pid(packet: bytes) -> int:
    return ((packet[1] & 0x1F) << 8) | packet[2]


def without_continuity(packet: bytes) -> bytes:
    """The packet with its continuity counter zeroed: PAT/PMT repeats compare equal."""
    return packet[:3] + bytes([packet[3] & 0xF0]) + packet[4:]
