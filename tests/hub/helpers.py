"""Builders of FLV and TS packets for hub tests, and a reader that drains a subscriber."""

from __future__ import annotations

from relay.hub import Hub, HubEvent, Subscriber
from relay.media.flv import classify, iter_tags
from relay.media.packets import MediaKind, MediaPacket
from relay.media.psi import crc32_mpeg2

VIDEO_CONFIG = b"\x17\x00\x00\x00\x00\x01\x64\x00\x1f\xff\xe1"
AUDIO_CONFIG = b"\xaf\x00\x12\x10"
METADATA = b"\x02\x00\x0aonMetaData\x08\x00\x00\x00\x00\x00\x00\x09"


def video(ts: int, key: bool = False, size: int = 100) -> MediaPacket:
    return classify(MediaKind.VIDEO, ts, (b"\x17\x01" if key else b"\x27\x01") + b"\x00" * 3 + b"v" * size)


def audio(ts: int, size: int = 20) -> MediaPacket:
    return classify(MediaKind.AUDIO, ts, b"\xaf\x01" + b"a" * size)


def config_packets(video_config: bytes = VIDEO_CONFIG) -> list[MediaPacket]:
    return [
        classify(MediaKind.DATA, 0, METADATA),
        classify(MediaKind.VIDEO, 0, video_config),
        classify(MediaKind.AUDIO, 0, AUDIO_CONFIG),
    ]


def drain(sub: Subscriber) -> bytes:
    """Everything queued right now (the queue is synchronous under the hood)."""
    out = bytearray()
    while sub.queued_bytes:
        chunk = sub._queue.popleft()  # reading without an event loop round trip
        sub._queued_bytes -= len(chunk.data)
        out += chunk.data
    return bytes(out)


def tags(data: bytes) -> list[MediaPacket]:
    return list(iter_tags(data))


class Recorder:
    def __init__(self) -> None:
        self.events: list[HubEvent] = []

    def __call__(self, event: HubEvent) -> None:
        self.events.append(event)

    def kinds(self) -> list[str]:
        return [type(e).__name__ for e in self.events]


def feed(hub_sink: object, packets: list[MediaPacket]) -> None:
    for p in packets:
        hub_sink.write(p)  # type: ignore[attr-defined]


def with_crc(section: bytes) -> bytes:
    return section + crc32_mpeg2(section).to_bytes(4, "big")


def ts_packet(pid: int, cc: int, payload: bytes = b"", pusi: bool = True, rai: bool = False) -> bytes:
    """One 188-byte TS packet: payload only, or with a random_access_indicator adaptation field."""
    head = bytes([0x47, (0x40 if pusi else 0) | (pid >> 8), pid & 0xFF])
    if rai:
        body = bytes([0x30 | cc, 1, 0x40]) + payload
    else:
        body = bytes([0x10 | cc]) + payload
    return (head + body).ljust(188, b"\xff")


def ts_pat(cc: int) -> bytes:
    """A PAT: program 1 with its PMT on PID 0x1000."""
    section = with_crc(bytes([0x00, 0xB0, 13, 0, 1, 0xC1, 0, 0, 0, 1, 0xF0, 0x00]))
    return ts_packet(0, cc, b"\x00" + section)


def ts_pmt(cc: int, stream_type: int = 0x1B) -> bytes:
    """The PMT of program 1: one stream of `stream_type` (H.264 unless told) on PID 0x100."""
    section = with_crc(bytes([0x02, 0xB0, 18, 0, 1, 0xC1, 0, 0, 0xE1, 0x00, 0xF0, 0, stream_type, 0xE1, 0x00, 0xF0, 0]))
    return ts_packet(0x1000, cc, b"\x00" + section)


__all__ = ["Hub"]
