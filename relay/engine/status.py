"""Typed snapshots of live state, as the engine hands them out; the API turns them into JSON.

Nothing here holds a secret: push errors and log lines are masked before they get here.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from relay.engine.slots import Waiting
from relay.ingest.gate import SourceType, StreamInfo, StreamInput, Transport
from relay.pull.runner import PullStatus
from relay.srt.caller import SendStats
from relay.supervisor.states import PushState, PushStatus


class StreamState(StrEnum):
    """What the ingest sees of a stream (`status.state`)."""

    LIVE = "live"
    """A publisher is connected."""
    RECONNECTING = "reconnecting"
    """The publisher dropped; destinations are held for its return (the grace period)."""
    OFFLINE = "offline"


@dataclass(frozen=True, slots=True)
class SrtLinkStatus:
    """libsrt's figures for an SRT publisher's link."""

    rtt_ms: float
    recv_rate_mbps: float
    latency_ms: int
    packets_received: int
    packets_lost: int
    packets_dropped: int
    packets_retransmitted: int
    encrypted: bool


@dataclass(frozen=True, slots=True)
class IngestStatus:
    """The stream's extension `status`: its source as the ingest measures it."""

    state: StreamState
    transport: Transport | None = None
    video_codec: str | None = None
    audio_codec: str | None = None
    bitrate_kbps: int = 0
    bytes_in: int = 0
    """Of the current publishing session."""
    bytes_in_total: int = 0
    """Since start-up, across sessions."""
    uptime_seconds: float = 0
    srt: SrtLinkStatus | None = None
    """Only for an SRT publisher whose link libsrt reports."""


@dataclass(frozen=True, slots=True)
class StreamSnapshot:
    """Everything live about one stream that the API shows beside its definition."""

    stream_id: int
    live: bool
    """A publisher is connected on either input, or one dropped and the destinations are held for its
    return: the destinations are being fed (or held)."""
    source_type: SourceType | None
    """Of the input feeding the destinations, while live."""
    info: StreamInfo | None
    """What the source feeding the destinations looks like, while live."""
    started_at: datetime | None
    """Start of the main input's current or last publishing session since start-up."""
    finished_at: datetime | None
    status: IngestStatus
    """Of the input feeding the destinations."""
    backup_live: bool = False
    """A publisher is connected on the backup input."""
    input: StreamInput | None = None
    """The input feeding the destinations (or that fed them last, while held); None while offline."""
    started_at_backup: datetime | None = None
    finished_at_backup: datetime | None = None
    input_switches: int = 0
    """Times another input took over feeding the destinations since start-up."""
    pull: PullStatus | None = None
    """The relay's own pull of the stream's source, for a stream with `pull: true` that is active."""


@dataclass(frozen=True, slots=True)
class RestreamStatus:
    """The restream's extension `status`: its push as the supervisor observes it."""

    state: PushState
    since: datetime | None
    """Of the last state change; None while no push is supervised."""
    uptime_seconds: float
    bitrate_kbps: int
    bytes: int
    frames: int
    restarts: int
    last_error: str | None
    next_retry_seconds: float | None
    log_tail: tuple[str, ...]
    overflows: int = 0
    """Skips to a keyframe of a destination too slow for the stream (PushStatus.overflows)."""
    srt: SendStats | None = None
    """An SRT destination's link (PushStatus.srt), when the relay sends to it itself."""

    @classmethod
    def waiting(cls, waiting: Waiting) -> RestreamStatus:
        """A push held back for want of a slot: no process, so no figures; `last_error` says which limit."""
        return cls(
            state=PushState.WAITING,
            since=datetime.fromtimestamp(waiting.since, UTC),
            uptime_seconds=0,
            bitrate_kbps=0,
            bytes=0,
            frames=0,
            restarts=0,
            last_error=waiting.reason,
            next_retry_seconds=None,
            log_tail=(),
        )

    @classmethod
    def of_push(cls, status: PushStatus, *, now: float | None = None) -> RestreamStatus:
        """From the supervisor's status; `now` is wall-clock seconds (uptime counts while running)."""
        running = status.state is PushState.RUNNING
        wall = time.time() if now is None else now
        return cls(
            state=status.state,
            since=datetime.fromtimestamp(status.since, UTC),
            uptime_seconds=round(max(0.0, wall - status.since), 1) if running else 0,
            bitrate_kbps=round(status.bitrate_kbps or 0) if running else 0,
            bytes=status.bytes_out,
            frames=status.frames,
            restarts=status.restarts,
            last_error=status.last_error,
            next_retry_seconds=status.next_retry_seconds,
            log_tail=tuple(status.log_tail),
            overflows=status.overflows,
            srt=status.srt,
        )
