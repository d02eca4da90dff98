"""The RTMP session's state table alone (as h11's test_state.py tests its ConnectionState): every legal
move goes through; an illegal one is the peer's ProtocolError or our IllegalTransition, by who moved."""

from __future__ import annotations

import itertools

import pytest

from relay.rtmp.errors import ProtocolError
from relay.rtmp.session import ServerSession
from relay.rtmp.states import PEER_MOVES, TRANSITIONS, Move, SessionState, next_state
from relay.transitions import IllegalTransition

S = SessionState

LEGAL = [
    (S.HANDSHAKE, Move.HANDSHAKE_DONE, S.AWAIT_CONNECT),
    (S.AWAIT_CONNECT, Move.CONNECT, S.CONNECT_PENDING),
    (S.CONNECT_PENDING, Move.ACCEPT_CONNECT, S.CONNECTED),
    (S.CONNECT_PENDING, Move.REJECT, S.CLOSED),
    (S.CONNECTED, Move.PUBLISH, S.PUBLISH_PENDING),
    (S.CONNECTED, Move.REJECT, S.CLOSED),
    (S.PUBLISH_PENDING, Move.ACCEPT_PUBLISH, S.PUBLISHING),
    (S.PUBLISH_PENDING, Move.REJECT, S.CLOSED),
    (S.PUBLISHING, Move.UNPUBLISH, S.CONNECTED),
    (S.PUBLISHING, Move.REJECT, S.CLOSED),
]


def test_peer_moves_are_the_clients() -> None:
    assert {Move.HANDSHAKE_DONE, Move.CONNECT, Move.PUBLISH, Move.UNPUBLISH} == PEER_MOVES


@pytest.mark.parametrize(("state", "move", "new"), LEGAL)
def test_every_legal_move_goes_through(state: SessionState, move: Move, new: SessionState) -> None:
    assert next_state(state, move) is new


def test_the_table_holds_nothing_else() -> None:
    assert {(state, move): new for state, move, new in LEGAL} == TRANSITIONS


@pytest.mark.parametrize(
    ("state", "move"),
    [
        (S.HANDSHAKE, Move.CONNECT),  # connect before the handshake completed
        (S.AWAIT_CONNECT, Move.PUBLISH),  # publish before connect
        (S.CONNECT_PENDING, Move.PUBLISH),  # publish while connect is unanswered
        (S.PUBLISHING, Move.PUBLISH),  # a second publish on the connection
        (S.CONNECTED, Move.UNPUBLISH),  # unpublish of nothing
        (S.CONNECTED, Move.CONNECT),  # connect twice
        (S.CLOSED, Move.PUBLISH),
        (S.ERROR, Move.HANDSHAKE_DONE),
    ],
)
def test_illegal_peer_moves_are_protocol_errors(state: SessionState, move: Move) -> None:
    with pytest.raises(ProtocolError, match=f"{move.value} not allowed in state {state.value}"):
        next_state(state, move)


@pytest.mark.parametrize(
    ("state", "move"),
    [
        (S.HANDSHAKE, Move.ACCEPT_PUBLISH),  # accepting what nobody asked for
        (S.AWAIT_CONNECT, Move.ACCEPT_CONNECT),
        (S.CONNECTED, Move.ACCEPT_CONNECT),  # answering connect twice
        (S.CONNECT_PENDING, Move.ACCEPT_PUBLISH),  # answering the wrong request
        (S.PUBLISHING, Move.ACCEPT_PUBLISH),
        (S.CLOSED, Move.REJECT),  # rejecting twice
        (S.HANDSHAKE, Move.REJECT),
        (S.ERROR, Move.ACCEPT_CONNECT),
    ],
)
def test_illegal_moves_of_ours_are_illegal_transitions(state: SessionState, move: Move) -> None:
    with pytest.raises(IllegalTransition) as raised:
        next_state(state, move)
    assert (raised.value.machine, raised.value.old, raised.value.new) == ("RTMP session", state, move)


def test_every_other_pair_raises_by_who_moved() -> None:
    for state, move in itertools.product(SessionState, Move):
        if (state, move) in TRANSITIONS:
            continue
        expected = ProtocolError if move in PEER_MOVES else IllegalTransition
        with pytest.raises(expected):
            next_state(state, move)


def test_the_session_moves_through_the_table() -> None:
    session = ServerSession()
    with pytest.raises(IllegalTransition, match="RTMP session: illegal transition handshake -> accept connect"):
        session.accept_connect()
    assert session.state is S.HANDSHAKE  # an illegal move changes nothing
