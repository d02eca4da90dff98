"""What the RTMP server session tells its user; every event is a frozen dataclass."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from relay.media.packets import MediaPacket


class Need(Enum):
    """`next_event` answers `NEED_DATA` when no whole event can be built from the bytes so far."""

    DATA = "need data"


NEED_DATA = Need.DATA


@dataclass(frozen=True, slots=True)
class HandshakeDone:
    """The handshake finished; chunk stream parsing has begun."""

    digest_form: bool
    """True if the client used the FP9 digest handshake."""


@dataclass(frozen=True, slots=True)
class ConnectRequested:
    """The client sent `connect`; answer with `accept_connect` or `reject_connect`."""

    app: str
    """The application name (the first path element of the RTMP URL)."""
    tc_url: str
    """The URL the client says it connected to (may be empty)."""
    properties: dict[str, Any] = field(default_factory=dict)
    """The whole command object as decoded (flashVer, objectEncoding, ...)."""


@dataclass(frozen=True, slots=True)
class PublishRequested:
    """The client sent `publish`; answer with `accept_publish` or `reject_publish`."""

    stream_id: int
    """The message stream id the client will publish on."""
    name: str
    """Publishing name including its query string (`<id>?<token>`): secret, never log it."""
    publish_type: str
    """`live`, `record` or `append` as the client sent it."""


@dataclass(frozen=True, slots=True)
class MediaReceived:
    """An audio, video or data message of the stream being published."""

    packet: MediaPacket
    """The message as a media packet (body untouched, timestamp unwrapped)."""


@dataclass(frozen=True, slots=True)
class MetadataReceived:
    """`onMetaData` (possibly wrapped in `@setDataFrame`) of the stream being published."""

    packet: MediaPacket
    """The data packet as ffmpeg's FLV muxer would write it: `onMetaData` and its array."""
    values: dict[str, Any]
    """The metadata properties (width, height, framerate, videocodecid, ...)."""


@dataclass(frozen=True, slots=True)
class Unpublished:
    """The client ended publishing deliberately (FCUnpublish, deleteStream or closeStream)."""

    stream_id: int
    """The message stream that was being published."""
    command: str
    """Which command ended it."""


@dataclass(frozen=True, slots=True)
class CloseRequested:
    """The session has nothing more to do with this client: send `data_to_send()`, then close."""

    reason: str
    """Why, safe to log (e.g. "play refused")."""


Event = (
    HandshakeDone
    | ConnectRequested
    | PublishRequested
    | MediaReceived
    | MetadataReceived
    | Unpublished
    | CloseRequested
)
