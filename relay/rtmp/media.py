"""Media messages of an RTMP publish, sans-I/O: aggregates split into FLV tags, data messages read.

The session hands audio and video bodies on untouched; these helpers only take apart the two message
kinds that carry more than one thing: an aggregate (type 22: FLV tags back to back) and a data message
(type 18, or 15 with an AMF3 format byte: `@setDataFrame onMetaData {...}` or stream content).
"""

from __future__ import annotations

from typing import Any

from relay.media.packets import MediaKind, MediaPacket
from relay.rtmp import amf0
from relay.rtmp.errors import ProtocolError
from relay.rtmp.events import MediaReceived, MetadataReceived

_TAG_HEADER = 11
_PREVIOUS_TAG_SIZE = 4


def split_aggregate(timestamp: int, payload: bytes) -> list[tuple[MediaKind, int, bytes]]:
    """The audio, video and data tags of an aggregate, with absolute timestamps (others are skipped).

    Sub-message timestamps are relative to the first one's; each tag is followed by its size.
    """
    tags: list[tuple[MediaKind, int, bytes]] = []
    pos = 0
    base: int | None = None
    while pos + _TAG_HEADER <= len(payload):
        tag_type = payload[pos]
        size = int.from_bytes(payload[pos + 1 : pos + 4], "big")
        sub_ts = int.from_bytes(payload[pos + 4 : pos + 7], "big") | (payload[pos + 7] << 24)
        end = pos + _TAG_HEADER + size
        if end + _PREVIOUS_TAG_SIZE > len(payload):
            raise ProtocolError("aggregate sub-message truncated")
        if base is None:
            base = sub_ts
        if tag_type in (MediaKind.AUDIO, MediaKind.VIDEO, MediaKind.DATA):
            tags.append((MediaKind(tag_type), timestamp + (sub_ts - base), payload[pos + _TAG_HEADER : end]))
        pos = end + _PREVIOUS_TAG_SIZE
    return tags


def data_event(timestamp: int, payload: bytes, limits: amf0.AmfLimits) -> MetadataReceived | MediaReceived | None:
    """What a data message is: the stream's metadata (decoder configuration), other stream content, or
    nothing (empty). `@setDataFrame` is stripped: what ffmpeg's FLV muxer writes is the rest."""
    if not payload:
        return None
    name, pos = amf0.decode_one(payload, 0, limits)
    if name == "@setDataFrame":
        payload = payload[pos:]
        if not payload:
            return None
        name, pos = amf0.decode_one(payload, 0, limits)
    if name == "onMetaData":
        values: dict[str, Any] = {}
        if pos < len(payload):
            decoded, _ = amf0.decode_one(payload, pos, limits)
            if isinstance(decoded, dict):
                values = dict(decoded)
        return MetadataReceived(MediaPacket(MediaKind.DATA, timestamp, payload, config=True), values)
    # onTextData, onCuePoint...: stream content, not decoder configuration.
    return MediaReceived(MediaPacket(MediaKind.DATA, timestamp, payload))


def strip_amf3_format(payload: bytes) -> bytes:
    """Type 15/17 messages start with a format byte; 0 means the rest is plain AMF0."""
    if not payload or payload[0] != 0:
        raise ProtocolError("AMF3-encoded messages are not supported")
    return payload[1:]
