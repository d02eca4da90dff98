"""Media packets as the ingest hands them to the hub.

A packet is one FLV tag body (RTMP ingest) or a run of whole 188-byte MPEG-TS packets (SRT ingest).
Nothing here does I/O; the hub decides how packets become the byte stream a push reads.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, IntEnum


class ContainerFormat(str, Enum):
    """How a stream's media is carried from ingest to the pushes (and so ffmpeg's input format)."""

    FLV = "flv"
    MPEGTS = "mpegts"


class MediaKind(IntEnum):
    """What a packet carries; for FLV the values are the FLV tag types."""

    AUDIO = 8
    VIDEO = 9
    DATA = 18


@dataclass(frozen=True, slots=True)
class MediaPacket:
    """One unit of media from a publisher.

    For FLV sources `payload` is the tag body exactly as the RTMP message carried it (so enhanced
    RTMP codecs pass through untouched) and `timestamp_ms` is the RTMP message timestamp (a DTS).
    For MPEG-TS sources `payload` is one or more whole 188-byte TS packets and `timestamp_ms` is
    the receive time in milliseconds since the session started.
    """

    kind: MediaKind
    timestamp_ms: int
    payload: bytes
    keyframe: bool = False
    """A video random-access point: a late joiner may start decoding here."""
    config: bool = False
    """Codec configuration a decoder needs first: AVC/HEVC/AV1 sequence header, AAC AudioSpecificConfig,
    `onMetaData`, or for MPEG-TS the PAT/PMT."""
