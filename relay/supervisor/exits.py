"""How one push attempt ended and what follows, decided by a pure function (datarhei core's waiter).

When an attempt's process is reaped, the runner gathers the facts into an `AttemptEnd`: what the user
wants now, what we asked of the process, whether the stream is still live, how ffmpeg exited and what
its log said. `classify_exit` turns them into a `Verdict`: the next state, what happens to the backoff,
and the error to show. No clock, no process, no I/O: the rules are tested as a table
(tests/supervisor/test_exits.py).
"""

from __future__ import annotations

import signal
from dataclasses import dataclass
from enum import IntEnum, StrEnum

from relay.hub.subscriber import EndCause
from relay.supervisor.states import Order, PushState

_STREAM_OVER = frozenset({EndCause.UNPUBLISHED, EndCause.SOURCE_LOST, EndCause.HUB_CLOSED})


class Asked(IntEnum):
    """What we asked of one attempt. Asks only grow: a restart outranks a stall kill, which outranks a
    plain stop (a stall kill is only ever made before any stop)."""

    NOTHING = 0
    STOP = 1
    """End it (EOF, SIGINT, SIGKILL at the timeout): not wanted, stream not live, or its input overflowed."""
    STALL_KILL = 2
    """SIGKILLed: no output progress while input flowed."""
    RESTART = 3
    """End it and start again at once (the definition or the source changed)."""


class ExitKind(StrEnum):
    """The classes of attempt ends; each value is the reason logged with the state change."""

    STOPPED = "stopped"
    """Not wanted any more."""
    RESTART = "restart"
    """We asked for a restart."""
    SOURCE_CHANGED = "source changed"
    """The hub ended our input for a new source: start again on it."""
    STREAM_ENDED = "stream ended"
    """The stream is over (or no longer live): wait for it, idle."""
    REFUSED = "refused"
    """The destination said no (key, auth, passphrase): retry only at the backoff cap."""
    ERROR = "error"
    """Anything else broke: retry with backoff."""


class BackoffStep(StrEnum):
    KEEP = "keep"
    RESET = "reset"
    CAP = "cap"
    """Wait the cap, count nothing."""
    GROW = "grow"
    """The next delay of the exponential backoff (fast-retry window included)."""


_OUTCOMES: dict[ExitKind, tuple[PushState, BackoffStep]] = {
    ExitKind.STOPPED: (PushState.DISABLED, BackoffStep.KEEP),
    ExitKind.RESTART: (PushState.STARTING, BackoffStep.KEEP),
    ExitKind.SOURCE_CHANGED: (PushState.STARTING, BackoffStep.KEEP),
    ExitKind.STREAM_ENDED: (PushState.IDLE, BackoffStep.RESET),
    ExitKind.REFUSED: (PushState.FAILED, BackoffStep.CAP),
    ExitKind.ERROR: (PushState.RETRYING, BackoffStep.GROW),
}


@dataclass(frozen=True, slots=True)
class AttemptEnd:
    """The facts of one attempt's end: the input of `classify_exit`."""

    order: Order
    """What the user wants now."""
    asked: Asked
    live: bool
    """The stream is still live (a dropped publisher's grace period included)."""
    was_running: bool
    """The push had shown output progress (state RUNNING, or STOPPING after progress)."""
    ran_for_seconds: float
    """From start to exit."""
    stalled_for_seconds: float
    """How long output had not progressed when we killed it for a stall (with `Asked.STALL_KILL`)."""
    stall_error: str | None
    """Why it was killed for a stall when it was not for want of output progress (the destination
    acknowledged nothing): the error to show."""
    start_error: str | None
    """The process could not be started (`returncode` is then None)."""
    returncode: int | None
    """ffmpeg's exit status; negative: the signal that ended it."""
    stopped: bool
    """We ended its input / sent SIGINT (`FfmpegProcess.stop`)."""
    killed: bool
    """We SIGKILLed it (stop timeout, stall, broken output)."""
    refused: bool
    """Its log said the destination refused us."""
    last_error: str | None
    """Its most telling error line, masked."""
    input_end: EndCause | None
    """Why its subscriber ended, if it did."""


@dataclass(frozen=True, slots=True)
class Verdict:
    """What follows an attempt's end."""

    kind: ExitKind
    error: str | None = None
    """The new last error (REFUSED, ERROR); None leaves the last error as it is."""
    run_seconds: float = 0.0
    """How long the backoff counts the run as having lasted: 0 unless it had been running."""

    @property
    def next_state(self) -> PushState:
        return _OUTCOMES[self.kind][0]

    @property
    def backoff(self) -> BackoffStep:
        return _OUTCOMES[self.kind][1]


def is_clean_exit(returncode: int | None, *, stopped: bool, killed: bool) -> bool:
    """Exit 0, or 255 / SIGINT after our own stop: the destination got a proper end."""
    if killed or returncode is None:
        return False
    return returncode == 0 or (stopped and returncode in (255, -signal.SIGINT))


def classify_exit(end: AttemptEnd) -> Verdict:
    """The verdict on one attempt's end; the checks run in order of precedence."""
    if end.order is Order.STOP:
        return Verdict(ExitKind.STOPPED)
    if end.asked is Asked.RESTART:
        return Verdict(ExitKind.RESTART)
    clean = is_clean_exit(end.returncode, stopped=end.stopped, killed=end.killed)
    if not end.live or (end.input_end in _STREAM_OVER and clean):
        return Verdict(ExitKind.STREAM_ENDED)
    if end.input_end is EndCause.SOURCE_CHANGED:
        return Verdict(ExitKind.SOURCE_CHANGED)
    kind = ExitKind.REFUSED if end.refused else ExitKind.ERROR
    return Verdict(kind, _error(end), end.ran_for_seconds if end.was_running else 0.0)


def _error(end: AttemptEnd) -> str | None:
    # What we did to it says more than what it printed while dying.
    if end.asked is Asked.STALL_KILL:
        if end.stall_error is not None:
            return end.stall_error
        return f"stalled: no output progress for {end.stalled_for_seconds:.0f}s"
    if end.input_end is EndCause.OVERFLOW:
        return "destination too slow: fell behind repeatedly"
    if end.start_error is not None:
        return end.start_error
    if end.returncode is not None:
        return end.last_error or f"ffmpeg exited with code {end.returncode}"
    return None
