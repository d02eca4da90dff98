"""Push states, orders and the status the API exposes.

What the user wants (`Order`) is kept apart from what is observed (`PushState`); `TRANSITIONS` is the
one table of legal state changes, checked on every change with `relay.transitions.check_transition`.
No state lists itself: the runner treats a change to the same state as a refresh, not a transition.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from relay.srt.caller import SendStats


class Order(StrEnum):
    START = "start"
    STOP = "stop"


class PushState(StrEnum):
    IDLE = "idle"
    """Wanted but the stream is not live (or nothing started yet)."""
    STARTING = "starting"
    """ffmpeg runs but has not shown output progress yet."""
    RUNNING = "running"
    """Output progress seen."""
    STOPPING = "stopping"
    RETRYING = "retrying"
    """Failed; a restart is scheduled with backoff."""
    FAILED = "failed"
    """The destination refused us; retried only at the backoff cap, or at once on `retry_now`."""
    DISABLED = "disabled"
    """Not wanted (restream inactive or removed)."""
    WAITING = "waiting"
    """Wanted and its stream live, but no push slot is free (node or client limit). The engine holds
    such a push back before a runner starts it, so no runner is ever in this state."""


TRANSITIONS: dict[PushState, frozenset[PushState]] = {
    PushState.IDLE: frozenset({PushState.STARTING, PushState.DISABLED}),
    PushState.STARTING: frozenset(
        {
            PushState.RUNNING,
            PushState.STOPPING,
            PushState.RETRYING,
            PushState.FAILED,
            PushState.IDLE,
            PushState.DISABLED,
        }
    ),
    PushState.RUNNING: frozenset(
        {
            PushState.STOPPING,
            PushState.RETRYING,
            PushState.FAILED,
            PushState.IDLE,
            PushState.STARTING,
            PushState.DISABLED,
        }
    ),
    PushState.STOPPING: frozenset(
        {PushState.IDLE, PushState.DISABLED, PushState.STARTING, PushState.RETRYING, PushState.FAILED}
    ),
    PushState.RETRYING: frozenset({PushState.STARTING, PushState.IDLE, PushState.DISABLED}),
    PushState.FAILED: frozenset({PushState.STARTING, PushState.IDLE, PushState.DISABLED}),
    PushState.DISABLED: frozenset({PushState.IDLE, PushState.STARTING}),
    PushState.WAITING: frozenset(),
}


@dataclass(frozen=True, slots=True)
class PushSpec:
    """One wanted push, as the engine derives it from the store."""

    restream_id: int
    stream_id: int
    uri: str
    no_audio: bool = False
    no_audio_mode: str = "drop"
    tls_verify: bool = True
    client_id: int | None = None
    """The owner, whose destination policy applies (None: judged as a tenant)."""


@dataclass(frozen=True, slots=True)
class PushStatus:
    """A snapshot of one push, safe to expose: the URI is masked, errors are masked."""

    restream_id: int
    state: PushState
    since: float
    """Wall-clock time (Unix seconds) of the last state change."""
    stream_id: int | None = None
    uri: str = ""
    """Masked."""
    bytes_out: int = 0
    bitrate_kbps: float | None = None
    frames: int = 0
    out_time_seconds: float = 0.0
    speed: float | None = None
    restarts: int = 0
    overflows: int = 0
    """Times its queue overflowed and skipped ahead to a keyframe (the destination took less than the
    stream's rate), over every attempt: a push can fall behind without ever failing."""
    last_error: str | None = None
    next_retry_seconds: float | None = None
    """Seconds until the scheduled retry (RETRYING, FAILED)."""
    log_tail: tuple[str, ...] = ()
    """ffmpeg's last log lines (warnings and errors), masked; of the running process or the last one."""
    srt: SendStats | None = None
    """The SRT destination's link as libsrt measures it (sampled each second), when the relay sends to it
    itself; of the running attempt or the last one."""
