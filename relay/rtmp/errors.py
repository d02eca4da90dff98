"""The RTMP core's errors: one base, split by whose fault it is (as h11 does).

The asyncio layer turns a `ProtocolError` into "close this connection, log one line"; a
`LocalProtocolError` means our own code called the core when it must not, a bug to fix. An illegal
move of ours in the session's state table is the relay's shared `relay.transitions.IllegalTransition`.
Messages are safe to log: they never contain stream names or other client-supplied secrets.
"""

from __future__ import annotations


class RtmpError(Exception):
    """Base of every error the RTMP core raises."""


class ProtocolError(RtmpError):
    """The peer broke the protocol or a configured limit: close its connection."""


class LocalProtocolError(RtmpError):
    """We called the session in a state where that call is not allowed (our bug)."""
