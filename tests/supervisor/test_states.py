"""The push state table alone (in the manner of h11's test_state.py): what it allows and what it refuses."""

from __future__ import annotations

import pytest

from relay.supervisor.exits import ExitKind, Verdict
from relay.supervisor.states import TRANSITIONS, PushState
from relay.transitions import IllegalTransition, check_transition

S = PushState
LEGAL = sorted((old, new) for old, targets in TRANSITIONS.items() for new in targets)


def test_every_state_has_a_row() -> None:
    assert set(TRANSITIONS) == set(PushState)


@pytest.mark.parametrize("ended_in", [S.STARTING, S.RUNNING, S.STOPPING])
def test_every_verdict_is_legal_from_every_state_an_attempt_ends_in(ended_in: PushState) -> None:
    # An overflow stops the push (STOPPING) and then retries it: STOPPING -> RETRYING must be legal.
    for kind in ExitKind:
        new = Verdict(kind).next_state
        if new is not ended_in:  # staying put is the runner's no-op
            check_transition(TRANSITIONS, "push", ended_in, new)


@pytest.mark.parametrize(("old", "new"), LEGAL, ids=[f"{o.value}->{n.value}" for o, n in LEGAL])
def test_legal_transition_passes(old: PushState, new: PushState) -> None:
    check_transition(TRANSITIONS, "push", old, new)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (S.IDLE, S.RUNNING),  # output progress needs a process: it starts first
        (S.IDLE, S.RETRYING),  # nothing ran, nothing to retry
        (S.IDLE, S.STOPPING),
        (S.DISABLED, S.RUNNING),
        (S.DISABLED, S.FAILED),
        (S.STOPPING, S.RUNNING),  # a process asked to stop does not come back to running
        (S.RETRYING, S.RUNNING),  # a retry starts a new process first
        (S.FAILED, S.RETRYING),
        (S.RETRYING, S.STOPPING),
        *[(state, state) for state in PushState],  # staying put is the runner's no-op, never the table's
    ],
    ids=lambda state: state.value,
)
def test_illegal_transition_raises(old: PushState, new: PushState) -> None:
    with pytest.raises(IllegalTransition) as caught:
        check_transition(TRANSITIONS, "restream 1", old, new)
    assert caught.value.machine == "restream 1"
    assert (caught.value.old, caught.value.new) == (old, new)
    assert str(caught.value) == f"restream 1: illegal transition {old.value} -> {new.value}"
