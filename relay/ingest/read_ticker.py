"""One timer for every publisher connection that waits a merge interval between its reads.

With `RELAY_MERGE_INTERVAL_MS` a plain RTMP publisher is read once an interval
(`RtmpConnection._merge_reads`). Each connection had a loop timer of its own, so a relay with K publishers
woke K times an interval, each wake-up finding the interpreter's code and data cold again: on this
project's VMs a wake-up costs ~40-150 µs of the main thread before any of the relay's code runs, and the
read's own work costs several times more cold than warm. Here the connections waiting for their next read
share one timer: at each tick every one of them is read, one after the other, in the same wake-up.

A connection waits at most one interval, as with a timer of its own (less when it starts waiting while a
tick is already armed: its read comes early, never late). What a read does is the connection's business:
a callback that raises is reported to the loop's exception handler, and the others are still read.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class ReadTicker:
    """Calls each waiting callback once, at the next tick; a tick is armed only while one waits."""

    __slots__ = ("_interval", "_loop", "_timer", "_waiting")

    def __init__(self, interval_seconds: float, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._interval = interval_seconds
        self._loop = loop
        self._waiting: dict[object, Callable[[], None]] = {}
        """By waiter, in the order they started waiting (the order they are read in)."""
        self._timer: asyncio.TimerHandle | None = None

    @property
    def waiting(self) -> int:
        """How many wait for the next tick."""
        return len(self._waiting)

    def wait(self, waiter: object, callback: Callable[[], None]) -> None:
        """Call `callback` at the next tick (once; waiting again replaces the callback, not the place)."""
        self._waiting[waiter] = callback
        if self._timer is None:
            loop = self._loop
            if loop is None:
                loop = self._loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self._interval, self._tick)

    def cancel(self, waiter: object) -> None:
        """`waiter` no longer waits; the tick stays armed for the others (or fires and finds none)."""
        self._waiting.pop(waiter, None)

    def close(self) -> None:
        """Nobody waits any more and no tick is armed."""
        self._waiting.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _tick(self) -> None:
        self._timer = None
        due, self._waiting = self._waiting, {}
        for callback in due.values():  # each may wait again: that arms the next tick, one interval on
            try:
                callback()
            except Exception as exc:  # one connection's fault must not skip the others' reads
                assert self._loop is not None
                self._loop.call_exception_handler(
                    {"message": "read ticker callback failed", "exception": exc, "callback": callback}
                )
