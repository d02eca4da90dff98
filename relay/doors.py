"""What an ingest listener refuses or cuts at its door, before or around the publish gate: counted per
reason for /metrics (`relay_ingest_connections_*`), beside the gate's own publish refusals."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum


class DoorRefusal(str, Enum):
    """Why a connection (RTMP) or a handshake (SRT) was refused before it was served."""

    MAX_CONNECTIONS = "max_connections"
    """The listener's `max_connections` was full and no connection could make room."""
    MAX_CONNECTIONS_PER_ADDRESS = "max_connections_per_address"
    """The peer's address (IPv6: its /64) held its limit and none of its connections could make room."""
    MAX_UNAUTHENTICATED_CONNECTIONS = "max_unauthenticated_connections"
    """The budget of connections not publishing yet was full and none could make room."""
    RATE_LIMITED = "rate_limited"
    """SRT: a handshake over its address's rate (`srt_handshakes_per_second_per_address`)."""
    BAD_HANDSHAKE = "bad_handshake"
    """SRT: an HSv4 caller, or a streamid that is not UTF-8 or not of the relay's form."""
    INTERNAL_ERROR = "internal_error"
    """SRT: the stream's settings could not be applied to the new socket, or our callback failed."""


class DoorCut(str, Enum):
    """Why the relay closed a connection it had taken in, other than an operator's or a takeover's kick."""

    EVICTED = "evicted"
    """Not publishing yet, closed to make room for a newcomer (a limit was full)."""
    HANDSHAKE_TIMEOUT = "handshake_timeout"
    """The TLS or RTMP handshake did not end in time."""
    PUBLISH_TIMEOUT = "publish_timeout"
    """No publish accepted within `preauth_timeout_seconds`."""
    IDLE_TIMEOUT = "idle_timeout"
    """Nothing received for `idle_timeout_seconds` (publishing or not)."""
    PROTOCOL_ERROR = "protocol_error"
    """The client broke the protocol or the pre-auth message limits."""


@dataclass(frozen=True, slots=True)
class DoorCounts:
    """One listener's door at one moment: its open connections and its counts since it started."""

    transport: str
    """rtmp, rtmps or srt."""
    open_connections: int
    refused: Mapping[DoorRefusal, int]
    cut: Mapping[DoorCut, int]
