"""classify_exit as a table: the facts of an attempt's end -> the verdict (datarhei core's waiter, tested
row by row). Each row names only the facts that differ from a plain live push that exited with 1."""

from __future__ import annotations

import dataclasses

import pytest

from relay.hub.subscriber import EndCause
from relay.supervisor.exits import Asked, AttemptEnd, BackoffStep, ExitKind, classify_exit, is_clean_exit
from relay.supervisor.states import Order, PushState

BASE = AttemptEnd(
    order=Order.START,
    asked=Asked.NOTHING,
    live=True,
    was_running=False,
    ran_for_seconds=3.0,
    stalled_for_seconds=0.0,
    stall_error=None,
    start_error=None,
    returncode=1,
    stopped=False,
    killed=False,
    refused=False,
    last_error=None,
    input_end=None,
)
K, S, B = ExitKind, PushState, BackoffStep
BAD_NAME = "[rtmp @ 0x1] [error] Server error: NetStream.Publish.BadName"
TRAILER = "[out#0/mpegts @ 0x1] [error] Error writing trailer: Input/output error"
STOPPED_BY_US = {"asked": Asked.STOP, "stopped": True}

ROWS = [
    # -- not wanted: whatever happened, it ends disabled ---------------------------------------------
    ("stop order, clean end", dict(order=Order.STOP, returncode=0, **STOPPED_BY_US), K.STOPPED, None, 0),
    ("stop order beats a refusal", dict(order=Order.STOP, refused=True, last_error=BAD_NAME), K.STOPPED, None, 0),
    (
        "stop order beats a stall kill",
        dict(order=Order.STOP, asked=Asked.STALL_KILL, returncode=-9, killed=True),
        K.STOPPED,
        None,
        0,
    ),
    (
        "stop order, never started",
        dict(order=Order.STOP, returncode=None, start_error="cannot start ffmpeg: x"),
        K.STOPPED,
        None,
        0,
    ),
    # -- a restart we asked for: start again at once ---------------------------------------------------
    ("restart asked, SIGINT", dict(asked=Asked.RESTART, stopped=True, returncode=255), K.RESTART, None, 0),
    ("restart asked, stream gone meanwhile", dict(asked=Asked.RESTART, live=False, returncode=0), K.RESTART, None, 0),
    (
        "restart asked, killed at the stop timeout",
        dict(asked=Asked.RESTART, stopped=True, killed=True, returncode=-9),
        K.RESTART,
        None,
        0,
    ),
    # -- the stream is over -----------------------------------------------------------------------------
    ("stream not live, killed", dict(live=False, returncode=-9, killed=True, **STOPPED_BY_US), K.STREAM_ENDED, None, 0),
    (
        "stream not live, never started",
        dict(live=False, returncode=None, start_error="cannot start ffmpeg: x"),
        K.STREAM_ENDED,
        None,
        0,
    ),
    (
        "unpublished, exit 0 at EOF, live again",
        dict(input_end=EndCause.UNPUBLISHED, returncode=0),
        K.STREAM_ENDED,
        None,
        0,
    ),
    (
        "source lost, 255 after our SIGINT",
        dict(input_end=EndCause.SOURCE_LOST, returncode=255, **STOPPED_BY_US),
        K.STREAM_ENDED,
        None,
        0,
    ),
    (
        "hub closed, SIGINT after our stop",
        dict(input_end=EndCause.HUB_CLOSED, returncode=-2, **STOPPED_BY_US),
        K.STREAM_ENDED,
        None,
        0,
    ),
    (
        "unpublished but 255 unasked: not clean",
        dict(input_end=EndCause.UNPUBLISHED, returncode=255),
        K.ERROR,
        "ffmpeg exited with code 255",
        0,
    ),
    (
        "unpublished but killed at the stop timeout",
        dict(input_end=EndCause.UNPUBLISHED, returncode=-9, killed=True, **STOPPED_BY_US),
        K.ERROR,
        "ffmpeg exited with code -9",
        0,
    ),
    # -- the hub ended our input for a new source ---------------------------------------------------------
    ("source changed", dict(input_end=EndCause.SOURCE_CHANGED, returncode=0), K.SOURCE_CHANGED, None, 0),
    # -- refused by the destination: retry at the cap ------------------------------------------------------
    ("refused key", dict(refused=True, last_error=BAD_NAME), K.REFUSED, BAD_NAME, 0),
    (
        "refused after running",
        dict(refused=True, last_error=BAD_NAME, was_running=True, ran_for_seconds=40.0),
        K.REFUSED,
        BAD_NAME,
        40.0,
    ),
    # -- anything else: retry with backoff ------------------------------------------------------------------
    ("exit 1 with an error line", dict(last_error="Connection refused"), K.ERROR, "Connection refused", 0),
    ("exit 1, nothing said", {}, K.ERROR, "ffmpeg exited with code 1", 0),
    ("exit 0 on its own while live", dict(returncode=0), K.ERROR, "ffmpeg exited with code 0", 0),
    ("SIGKILL from outside", dict(returncode=-9), K.ERROR, "ffmpeg exited with code -9", 0),
    (
        "broke after running 70 s",
        dict(was_running=True, ran_for_seconds=70.0),
        K.ERROR,
        "ffmpeg exited with code 1",
        70.0,
    ),
    ("broke after 70 s, never running", dict(ran_for_seconds=70.0), K.ERROR, "ffmpeg exited with code 1", 0),
    (
        "broken output: trailer error, killed",
        dict(returncode=-9, killed=True, last_error=TRAILER, was_running=True),
        K.ERROR,
        TRAILER,
        3.0,
    ),
    (
        "stall kill",
        dict(
            asked=Asked.STALL_KILL,
            stalled_for_seconds=16.4,
            returncode=-9,
            killed=True,
            last_error="x",
            was_running=True,
        ),
        K.ERROR,
        "stalled: no output progress for 16s",
        3.0,
    ),
    (
        "stall kill: the destination acknowledged nothing",
        dict(
            asked=Asked.STALL_KILL,
            stalled_for_seconds=4.2,
            stall_error="stalled: destination acknowledged nothing for 4s",
            returncode=-9,
            killed=True,
            was_running=True,
        ),
        K.ERROR,
        "stalled: destination acknowledged nothing for 4s",
        3.0,
    ),
    (
        "overflow, stopped cleanly",
        dict(input_end=EndCause.OVERFLOW, returncode=0, **STOPPED_BY_US),
        K.ERROR,
        "destination too slow: fell behind repeatedly",
        0,
    ),
    (
        "stall kill beats overflow",
        dict(asked=Asked.STALL_KILL, stalled_for_seconds=15, input_end=EndCause.OVERFLOW, returncode=-9, killed=True),
        K.ERROR,
        "stalled: no output progress for 15s",
        0,
    ),
    (
        "cannot start",
        dict(returncode=None, start_error="cannot start ffmpeg: No such file or directory"),
        K.ERROR,
        "cannot start ffmpeg: No such file or directory",
        0,
    ),
]

OUTCOMES = {
    K.STOPPED: (S.DISABLED, B.KEEP),
    K.RESTART: (S.STARTING, B.KEEP),
    K.SOURCE_CHANGED: (S.STARTING, B.KEEP),
    K.STREAM_ENDED: (S.IDLE, B.RESET),
    K.REFUSED: (S.FAILED, B.CAP),
    K.ERROR: (S.RETRYING, B.GROW),
}


@pytest.mark.parametrize(
    ("facts", "kind", "error", "run_seconds"), [row[1:] for row in ROWS], ids=[row[0] for row in ROWS]
)
def test_classify_exit(facts: dict[str, object], kind: ExitKind, error: str | None, run_seconds: float) -> None:
    verdict = classify_exit(dataclasses.replace(BASE, **facts))  # type: ignore[arg-type]
    assert (verdict.kind, verdict.error, verdict.run_seconds) == (kind, error, run_seconds)
    assert (verdict.next_state, verdict.backoff) == OUTCOMES[kind]


def test_every_kind_has_an_outcome_and_a_row() -> None:
    assert set(OUTCOMES) == set(ExitKind)
    assert {row[2] for row in ROWS} == set(ExitKind)


@pytest.mark.parametrize(
    ("returncode", "stopped", "killed", "clean"),
    [
        (0, False, False, True),
        (0, True, False, True),  # EOF made it finish: the usual stop
        (255, True, False, True),  # ffmpeg's exit after our SIGINT
        (-2, True, False, True),  # died of our SIGINT
        (255, False, False, False),  # 255 that we did not cause
        (-2, False, False, False),
        (1, True, False, False),
        (-9, True, True, False),
        (0, True, True, False),  # a kill is never clean
        (None, False, False, False),  # never ran
    ],
)
def test_is_clean_exit(returncode: int | None, stopped: bool, killed: bool, clean: bool) -> None:
    assert is_clean_exit(returncode, stopped=stopped, killed=killed) is clean
