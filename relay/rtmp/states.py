"""The RTMP session's state table: where the conversation with a client is, and what may move it.

One table of (state, move) -> state; `next_state` tells whose fault an illegal move is: the client's
(ProtocolError: the server closes that connection) or ours (IllegalTransition: a bug).
"""

from __future__ import annotations

from enum import Enum

from relay.rtmp.errors import ProtocolError
from relay.transitions import IllegalTransition


class SessionState(Enum):
    """Where the conversation with the client is."""

    HANDSHAKE = "handshake"
    AWAIT_CONNECT = "await connect"
    CONNECT_PENDING = "connect pending"
    CONNECTED = "connected"
    PUBLISH_PENDING = "publish pending"
    PUBLISHING = "publishing"
    CLOSED = "closed"
    ERROR = "error"


class Move(Enum):
    """Things that change the state: peer commands and our decisions."""

    HANDSHAKE_DONE = "handshake done"
    CONNECT = "connect"
    ACCEPT_CONNECT = "accept connect"
    PUBLISH = "publish"
    ACCEPT_PUBLISH = "accept publish"
    UNPUBLISH = "unpublish"
    REJECT = "reject"


_S = SessionState
TRANSITIONS: dict[tuple[SessionState, Move], SessionState] = {
    (_S.HANDSHAKE, Move.HANDSHAKE_DONE): _S.AWAIT_CONNECT,
    (_S.AWAIT_CONNECT, Move.CONNECT): _S.CONNECT_PENDING,
    (_S.CONNECT_PENDING, Move.ACCEPT_CONNECT): _S.CONNECTED,
    (_S.CONNECT_PENDING, Move.REJECT): _S.CLOSED,
    (_S.CONNECTED, Move.PUBLISH): _S.PUBLISH_PENDING,
    (_S.CONNECTED, Move.REJECT): _S.CLOSED,
    (_S.PUBLISH_PENDING, Move.ACCEPT_PUBLISH): _S.PUBLISHING,
    (_S.PUBLISH_PENDING, Move.REJECT): _S.CLOSED,
    (_S.PUBLISHING, Move.UNPUBLISH): _S.CONNECTED,
    (_S.PUBLISHING, Move.REJECT): _S.CLOSED,
}
"""The only legal state changes; anything else raises (see `next_state`)."""

PEER_MOVES = frozenset({Move.HANDSHAKE_DONE, Move.CONNECT, Move.PUBLISH, Move.UNPUBLISH})
"""Moves the client makes; the others are our decisions."""


def next_state(state: SessionState, move: Move) -> SessionState:
    """The state after `move`, or the error of whoever moved wrongly: ProtocolError for the peer's
    moves, IllegalTransition for ours."""
    new = TRANSITIONS.get((state, move))
    if new is None:
        if move in PEER_MOVES:
            raise ProtocolError(f"{move.value} not allowed in state {state.value}")
        raise IllegalTransition("RTMP session", state, move)
    return new
