"""The contract between an ingest server (RTMP, RTMPS, SRT) and the engine behind it.

An ingest server knows protocols, not streams: when a client asks to publish it hands the stream key
to a `PublishGate`, which checks it against the store and either refuses (`PublishRefused`) or opens an
`IngestSink` that takes the media. The gate may disconnect an earlier publisher of the same stream
through its `PublisherHandle` (a crashed encoder must not lock its own key out).
"""

from __future__ import annotations

import re
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from enum import Enum
from typing import Protocol

from relay.media.packets import ContainerFormat, MediaPacket


class SourceType(str, Enum):
    """Protocol a publisher used; the value is what the API reports as `stream_source_type`."""

    RTMP = "rtmp"
    """RTMP and RTMPS alike: Gcore reports both as "rtmp"."""
    SRT = "srt"
    HTTPS = "https"
    """A pulled HLS or MPEG-TS source over HTTP(S) (Gcore's value for HTTP sources)."""
    RTSP = "rtsp"
    """A pulled RTSP source **(ours: Gcore's list stops at rtmp, srt, webrtc, https)**."""


class Transport(str, Enum):
    """The listener a publisher came in on (finer than SourceType, for logs and metrics)."""

    RTMP = "rtmp"
    RTMPS = "rtmps"
    SRT = "srt"
    PULL = "pull"
    """No listener: the relay pulls the stream itself (relay/pull/)."""


class EndReason(str, Enum):
    """Why a publishing session ended; the hub treats the two very differently."""

    UNPUBLISH = "unpublish"
    """The encoder said it is done (FCUnpublish, deleteStream, closeStream, SRT close): end pushes now."""
    DROP = "drop"
    """The connection broke (reset, timeout, protocol error): keep pushes for the grace period."""
    KICKED = "kicked"
    """The relay ended it (stream deleted or deactivated, a newcomer took over a silent session)."""


class StreamInput(str, Enum):
    """Which ingest of a stream a publisher uses; every stream has both (Gcore's `push_url` and
    `backup_push_url`). The value is what logs, events and metrics show."""

    MAIN = "main"
    """The key `<id>?<token>` (SRT `<id>#<token>`): feeds the destinations whenever it sends."""
    BACKUP = "backup"
    """The key `<id>b?<token>` (SRT `<id>b#<token>`): feeds them while the main is gone or silent."""


class RefusalReason(str, Enum):
    """Why a publish request was refused; used in logs and metrics, never with the key itself."""

    UNKNOWN_STREAM = "unknown_stream"
    BAD_TOKEN = "bad_token"
    INACTIVE = "inactive"
    ALREADY_LIVE = "already_live"
    BAD_REQUEST = "bad_request"
    UNAVAILABLE = "unavailable"
    CONNECTION_LIMIT = "connection_limit"
    """Too many connections (in all, or from the publisher's address): refused before the gate."""
    EVICTED = "evicted"
    """An anonymous connection (not publishing yet) closed to make room for a newer one: the budget of
    unauthenticated connections was full (a flood, or clients stuck before publishing)."""
    RATE_LIMITED = "rate_limited"
    """An SRT handshake over its address's rate, refused before the stream was looked up."""
    PULLED = "pulled"
    """The stream is fed by the relay's own pull (`pull: true`): it takes no publisher."""
    OWNED_ELSEWHERE = "owned_elsewhere"
    """Another node of the cluster holds the stream's lease and its publisher is not silent."""
    DATABASE_UNAVAILABLE = "database_unavailable"
    """The cluster's database did not answer the claim: ownership cannot be proved, so no publishing."""
    PASSPHRASE = "passphrase"
    """SRT: the streamid and token were good, then libsrt's key exchange refused the caller: its passphrase
    is wrong or missing, or the stream has none (counted once the admitted handshake is forgotten)."""


class PublishRefused(Exception):
    """Raised by `PublishGate.open_publish`; `reason` says why, the message is safe to log."""

    def __init__(self, reason: RefusalReason, message: str = "") -> None:
        super().__init__(message or reason.value)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class StreamInfo:
    """What the ingest learnt about the source (from onMetaData, sequence headers or the TS PMT)."""

    video_width: int | None = None
    video_height: int | None = None
    frame_rate: float | None = None
    video_codec: str | None = None
    audio_codec: str | None = None
    extra: dict[str, str] = field(default_factory=dict)


class PublisherHandle(Protocol):
    """The ingest side of one publishing connection, as the gate sees it."""

    @property
    def transport(self) -> Transport: ...

    @property
    def peer(self) -> str:
        """`host:port` of the publisher (safe to log)."""
        ...

    def idle_seconds(self) -> float:
        """Seconds since the publisher last sent any byte."""
        ...

    def disconnect(self, reason: EndReason) -> None:
        """Close the connection soon (non-blocking, idempotent); the sink is then closed with `reason`."""
        ...


class IngestSink(Protocol):
    """Takes one publishing session's media. All methods are called from the event loop, never block."""

    def write(self, packet: MediaPacket) -> None: ...

    def write_many(self, packets: list[MediaPacket]) -> None:
        """`write` of each, in order (a read's media in one call); the list is not kept."""
        ...

    def batch(self, merged: bool = False) -> AbstractContextManager[None]:
        """`with sink.batch():` around the writes of one read: what they fan out is written to the
        destinations when the batch ends (one write each), not on the loop's next turn. `merged`: the reader
        itself waits `merge_interval_seconds` between its reads (a plain RTMP connection), so the batch's
        end writes at once instead of holding the write for the hub's own interval."""
        ...

    def update_info(self, info: StreamInfo) -> None: ...

    def close(self, reason: EndReason) -> None:
        """Called exactly once, when the session ends for whatever reason."""
        ...


UNNAMED_STREAM = "(no id)"
"""What a log line names when a stream key holds no stream id."""
_TOKEN_SEPARATOR = re.compile(r"[?#]|%23", re.IGNORECASE)
_STREAM_ID = re.compile(r"[0-9]{1,18}b?")


def stream_label(stream_key: str) -> str:
    """The stream id a publish key names (`5` of `5?token`, `in/5#token`, `5%23token`, or of an SRT
    streamid's parsed id; `5b` for the backup input): the only part of a key that may be logged.
    Whatever does not parse as an id may be the token (a key written the wrong way round), so it is
    never shown."""
    ident = _TOKEN_SEPARATOR.split(stream_key, maxsplit=1)[0].rsplit("/", 1)[-1]
    return ident if _STREAM_ID.fullmatch(ident) else UNNAMED_STREAM


@dataclass(frozen=True, slots=True)
class PublishRequest:
    """A client asks to publish. `stream_key` is secret: never log it."""

    stream_key: str
    """For RTMP the publish name with its query, `<id>?<token>`; for SRT the streamid as received."""
    container: ContainerFormat
    publisher: PublisherHandle
    app: str = ""
    """RTMP application name from connect (`in`); empty for SRT."""


class PublishGate(Protocol):
    """The engine's side: decide whether a request may publish and where its media goes."""

    async def open_publish(self, request: PublishRequest) -> IngestSink:
        """Return a sink, or raise `PublishRefused`."""
        ...
