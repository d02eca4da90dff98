"""Definition changes, as the store announces them: the one seam through which the engine learns them.

Every write of a stream or restream that the store makes durable is announced here, after the commit,
with the record before and after (None before a create, None after a delete). The engine subscribes;
the API only writes to the store. Another node's writes will arrive through the same seam (a
PostgreSQL store will feed it from LISTEN/NOTIFY).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from relay.store.models import RestreamRecord, StreamRecord

log = logging.getLogger("relay.store.changes")


@dataclass(frozen=True, slots=True)
class StreamChanged:
    """A stream was created (`before` None), updated, or deleted (`after` None) with its restreams."""

    stream_id: int
    before: StreamRecord | None
    after: StreamRecord | None


@dataclass(frozen=True, slots=True)
class RestreamChanged:
    """A restream was created (`before` None), updated, or deleted (`after` None)."""

    restream_id: int
    before: RestreamRecord | None
    after: RestreamRecord | None


Change = StreamChanged | RestreamChanged
ChangeListener = Callable[[Change], Awaitable[None]]


class ChangeFeed:
    """Hands each change to every subscriber in turn; the writer awaits them all.

    Awaiting keeps the order the API promises: when a write answers, the engine has already acted on it
    (a restream switched on is being started). A subscriber's failure is logged and does not undo the
    write, which is durable: the engine's periodic full pass repairs what a failed reaction missed.
    """

    def __init__(self) -> None:
        self._listeners: list[ChangeListener] = []

    def subscribe(self, listener: ChangeListener) -> Callable[[], None]:
        """Add a listener; returns the call that removes it."""
        self._listeners.append(listener)

        def unsubscribe() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return unsubscribe

    async def publish(self, change: Change) -> None:
        for listener in list(self._listeners):
            try:
                await listener(change)
            except Exception:
                log.exception("a listener failed on %s", type(change).__name__)
