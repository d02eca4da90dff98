"""The FLV byte stream a pull's ffmpeg writes to its stdout, parsed incrementally into media packets.

Sans-I/O: bytes in (`feed`, any split), whole tags out, nothing early. Tag bodies become the same
`MediaPacket`s the RTMP ingest makes of its messages (relay/media/flv.py `classify`), so the hub's FLV
framing, GOP cache and resume check treat a pulled source exactly like a published one. What is held
between calls is bounded by one tag (the FLV format's own maximum, 16 MiB, or less when asked).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

from relay.media.flv import FLV_HEADER_SIZE, TAG_HEADER_SIZE, FlvFormatError, classify
from relay.media.packets import MediaKind, MediaPacket
from relay.rtmp import amf0
from relay.rtmp.errors import RtmpError

MAX_TAG_BYTES = 0xFFFFFF
"""The largest tag body FLV can describe (24-bit size)."""
_METADATA = "onMetaData"


@dataclass(frozen=True, slots=True)
class FlvTag:
    """One tag of the stream as the hub takes it, and the onMetaData values when it is that tag."""

    packet: MediaPacket
    metadata: dict[str, Any] | None = None


class FlvStreamReader:
    """Owns the partial bytes of one FLV stream: the file header first, then tag after tag."""

    def __init__(self, max_tag_bytes: int = MAX_TAG_BYTES) -> None:
        self._max_tag_bytes = max_tag_bytes
        self._buffer = bytearray()
        self._header_done = False
        self.tags = 0
        """Tags parsed so far."""

    @property
    def buffered_bytes(self) -> int:
        return len(self._buffer)

    def feed(self, data: bytes) -> list[FlvTag]:
        """The tags completed by `data`; raises FlvFormatError on bytes that are not FLV."""
        self._buffer += data
        found: list[FlvTag] = []
        if not self._header_done and not self._read_header():
            return found
        buffer = self._buffer
        pos = 0
        while len(buffer) - pos >= TAG_HEADER_SIZE:
            tag_type = buffer[pos] & 0x1F
            if buffer[pos] & 0x20:
                raise FlvFormatError("encrypted FLV tags are not supported")
            size = int.from_bytes(buffer[pos + 1 : pos + 4], "big")
            if size > self._max_tag_bytes:
                raise FlvFormatError(f"FLV tag of {size} bytes is over the limit")
            end = pos + TAG_HEADER_SIZE + size + 4
            if len(buffer) < end:
                break
            timestamp = int.from_bytes(buffer[pos + 4 : pos + 7], "big") | (buffer[pos + 7] << 24)
            body = bytes(buffer[pos + TAG_HEADER_SIZE : end - 4])
            found.append(self._tag(tag_type, timestamp, body))
            self.tags += 1
            pos = end
        del buffer[:pos]
        return found

    def _read_header(self) -> bool:
        if len(self._buffer) < FLV_HEADER_SIZE:
            if not b"FLV".startswith(bytes(self._buffer[:3])):
                raise FlvFormatError("missing FLV header")
            return False
        if self._buffer[:3] != b"FLV":
            raise FlvFormatError("missing FLV header")
        offset = struct.unpack(">I", self._buffer[5:9])[0]
        if not FLV_HEADER_SIZE <= offset <= 64:
            raise FlvFormatError("FLV header has an unusable data offset")
        if len(self._buffer) < offset + 4:
            return False
        del self._buffer[: offset + 4]  # the header and PreviousTagSize0
        self._header_done = True
        return True

    @staticmethod
    def _tag(tag_type: int, timestamp: int, body: bytes) -> FlvTag:
        try:
            kind = MediaKind(tag_type)
        except ValueError:
            raise FlvFormatError(f"unknown FLV tag type {tag_type}") from None
        if kind is not MediaKind.DATA:
            return FlvTag(classify(kind, timestamp, body))
        # ffmpeg's FLV muxer writes "onMetaData" and its array (no "@setDataFrame", which is RTMP's).
        try:
            name, pos = amf0.decode_one(body, 0)
            values: Any = amf0.decode_one(body, pos)[0] if name == _METADATA and pos < len(body) else None
        except (RtmpError, ValueError, IndexError, struct.error):
            return FlvTag(MediaPacket(MediaKind.DATA, timestamp, body))
        if name != _METADATA:
            return FlvTag(MediaPacket(MediaKind.DATA, timestamp, body))  # onTextData, onCuePoint...
        metadata = dict(values) if isinstance(values, dict) else {}
        return FlvTag(MediaPacket(MediaKind.DATA, timestamp, body, config=True), metadata)
