"""What a hub is configured with, the states it goes through, and the events it tells its owner.

Frozen values only; the hub itself (relay/hub/hub.py) owns the behaviour.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from relay.hub.subscriber import SubscriberLimits
from relay.ingest.gate import SourceType, StreamInput, Transport
from relay.media.packets import ContainerFormat


@dataclass(frozen=True, slots=True)
class HubSettings:
    """Bounds and timings of a hub; names carry units."""

    grace_period_seconds: float = 10.0
    """How long pushes survive a dropped publisher, waiting for it to come back."""
    gop_cache_max_bytes: int = 12 * 1024 * 1024
    resume_gap_ms: int = 33
    """FLV: the timestamp step inserted between the last packet before a drop and the first after."""
    input_silence_seconds: float = 1.0
    """An input that sent no media this long while another publishes is switched away from."""
    merge_interval_seconds: float = 0.0
    """0: what a publisher's read brings is written to the subscribers' pipes at the read's end (a frame
    may wait for the next packet: `Hub._end_batch`). > 0: the subscribers are written at most this often,
    everything that came in between in one write a pipe (`Hub._merge_write`; an RTMP publisher is read
    that often too): fewer pipe writes, and fewer reads in each push's ffmpeg, for up to that much more
    delay (`RELAY_MERGE_INTERVAL_MS`)."""
    subscriber: SubscriberLimits = field(default_factory=SubscriberLimits)


class HubState(StrEnum):
    IDLE = "idle"
    LIVE = "live"
    GRACE = "grace"
    """The publisher dropped; subscribers wait for it."""
    RESUMING = "resuming"
    """A publisher came back during the grace period; waiting for its codec configuration."""


class LiveEndReason(StrEnum):
    UNPUBLISHED = "unpublished"
    KICKED = "kicked"
    GRACE_EXPIRED = "grace_expired"
    HUB_CLOSED = "hub_closed"


@dataclass(frozen=True, slots=True)
class LiveStarted:
    stream_id: int
    container: ContainerFormat
    source_type: SourceType
    transport: Transport | None


@dataclass(frozen=True, slots=True)
class LiveEnded:
    stream_id: int
    reason: LiveEndReason


@dataclass(frozen=True, slots=True)
class PublisherDropped:
    """Still live: the pushes continue for `grace_period_seconds`."""

    stream_id: int
    grace_period_seconds: float


@dataclass(frozen=True, slots=True)
class SourceResumed:
    """A publisher came back with the same configuration; subscribers continue without a break."""

    stream_id: int
    timestamp_offset_ms: int


@dataclass(frozen=True, slots=True)
class SourceChanged:
    """A publisher came back with a different configuration; every subscriber was ended."""

    stream_id: int
    container: ContainerFormat
    source_type: SourceType


class SwitchReason(StrEnum):
    """Why the input feeding the subscribers changed."""

    DROPPED = "dropped"
    """The feeding input's publisher ended (dropped or unpublished) while the other one publishes."""
    SILENT = "silent"
    """The feeding input sent no media for `input_silence_seconds`."""
    PREFERRED = "preferred"
    """The main input is back: it takes over again at its keyframe."""
    RETURNED = "returned"
    """No input was left (grace period); a publisher came back on the other input."""


@dataclass(frozen=True, slots=True)
class InputSwitched:
    """Another input feeds the subscribers now (`timestamp_offset_ms`: FLV rebasing; 0 for MPEG-TS).
    `restarted`: the codecs differed, so the subscribers were ended (SourceChanged came first)."""

    stream_id: int
    to: StreamInput
    reason: SwitchReason
    timestamp_offset_ms: int
    restarted: bool = False


HubEvent = LiveStarted | LiveEnded | PublisherDropped | SourceResumed | SourceChanged | InputSwitched
