"""FLV tags: classify RTMP media payloads and serialise them as an FLV byte stream.

RTMP audio/video/data message bodies are FLV tag bodies, so the relay never repackages media: it only
adds the 11-byte tag header and the 4-byte back pointer. Enhanced RTMP (HEVC, AV1, VP9, Opus by FourCC)
is recognised by its ExHeader bit and passes through untouched.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

from relay.media.packets import MediaKind, MediaPacket

FLV_HEADER_SIZE = 9
TAG_HEADER_SIZE = 11

# Legacy video codec ids whose second byte is an AVCPacketType (0 = sequence header).
_AVC_LIKE_CODECS = {7, 12, 13}  # AVC, HEVC (unofficial legacy), AV1 (unofficial legacy)
_AAC = 10
_EX_HEADER_AUDIO = 9

_TAG_HEADER = struct.Struct(">II3x")
"""Tag type and 24-bit size, 24-bit timestamp and its extension byte, then the stream id (always 0)."""
_U32 = struct.Struct(">I")


def flv_header(*, has_audio: bool = True, has_video: bool = True) -> bytes:
    """The 9-byte file header plus PreviousTagSize0."""
    flags = (0x04 if has_audio else 0) | (0x01 if has_video else 0)
    return b"FLV\x01" + bytes([flags]) + struct.pack(">I", FLV_HEADER_SIZE) + b"\x00\x00\x00\x00"


def encode_tag(kind: MediaKind, timestamp_ms: int, payload: bytes) -> bytes:
    """One FLV tag with its trailing PreviousTagSize; timestamps wrap at 32 bits like RTMP's."""
    header, trailer = tag_frame(kind, timestamp_ms, len(payload))
    # One join copies the payload once (header + payload + trailer copied it twice).
    return b"".join((header, payload, trailer))


def tag_frame(kind: MediaKind, timestamp_ms: int, size: int) -> tuple[bytes, bytes]:
    """What goes around an FLV tag's body of `size` bytes: its header and its trailing PreviousTagSize, for a
    caller that joins many tags at once (relay.hub.framing)."""
    if size > 0xFFFFFF:
        raise ValueError("FLV tag payload larger than 16 MiB")
    ts = timestamp_ms & 0xFFFFFFFF
    return _TAG_HEADER.pack((kind << 24) | size, ((ts & 0xFFFFFF) << 8) | (ts >> 24)), _U32.pack(TAG_HEADER_SIZE + size)


def is_video_keyframe(payload: bytes) -> bool:
    """Frame type 1 (keyframe) in a legacy or enhanced video tag; command frames (5) are not."""
    if not payload:
        return False
    return (payload[0] >> 4) & 0x07 == 1


def is_video_config(payload: bytes) -> bool:
    """A decoder configuration record (AVC/HEVC sequence header, enhanced SequenceStart)."""
    if len(payload) < 2:
        return False
    first = payload[0]
    if first & 0x80:  # enhanced RTMP: low nibble is the PacketType, 0 = SequenceStart
        return first & 0x0F == 0
    return (first & 0x0F) in _AVC_LIKE_CODECS and payload[1] == 0


def is_audio_config(payload: bytes) -> bool:
    """AAC AudioSpecificConfig, or an enhanced-audio SequenceStart."""
    if len(payload) < 2:
        return False
    sound_format = payload[0] >> 4
    if sound_format == _AAC:
        return payload[1] == 0
    if sound_format == _EX_HEADER_AUDIO:
        return payload[0] & 0x0F == 0
    return False


def classify(kind: MediaKind, timestamp_ms: int, payload: bytes) -> MediaPacket:
    """Build a MediaPacket with its keyframe/config flags worked out from the tag body."""
    # Per packet: the flags passed by position (keyframe, config), which a frozen dataclass takes faster.
    if kind is MediaKind.VIDEO:
        config = is_video_config(payload)
        return MediaPacket(kind, timestamp_ms, payload, not config and is_video_keyframe(payload), config)
    if kind is MediaKind.AUDIO:
        return MediaPacket(kind, timestamp_ms, payload, False, is_audio_config(payload))
    return MediaPacket(kind, timestamp_ms, payload, False, True)


class FlvFormatError(ValueError):
    """The bytes are not a well-formed FLV stream."""


def iter_tags(data: bytes) -> Iterator[MediaPacket]:
    """Parse a whole FLV file held in memory (tests, samples); raises FlvFormatError on bad input."""
    if len(data) < FLV_HEADER_SIZE + 4 or data[:3] != b"FLV":
        raise FlvFormatError("missing FLV header")
    pos = struct.unpack(">I", data[5:9])[0] + 4
    while pos + TAG_HEADER_SIZE <= len(data):
        tag_type = data[pos] & 0x1F
        size = int.from_bytes(data[pos + 1 : pos + 4], "big")
        ts = int.from_bytes(data[pos + 4 : pos + 7], "big") | (data[pos + 7] << 24)
        start = pos + TAG_HEADER_SIZE
        end = start + size
        if end + 4 > len(data):
            break  # truncated last tag, as a live recording may end
        try:
            kind = MediaKind(tag_type)
        except ValueError as exc:
            raise FlvFormatError(f"unknown tag type {tag_type}") from exc
        yield classify(kind, ts, data[start:end])
        pos = end + 4
