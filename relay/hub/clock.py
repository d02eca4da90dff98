"""Time as the relay's engine sees it: a monotonic clock plus one-shot timers.

Everything that waits (grace periods, restart backoff, stall checks) takes a `Clock` so that unit tests
drive time by hand instead of sleeping on the wall clock.

A timer with slack (`call_later(delay, callback, slack=...)`) is housekeeping that need not wake the
process itself: it runs at the first wake the media path makes anyway once it is due (`woke`, at the end of
each publisher read's write), and only without such a wake on a timer of its own, `slack` seconds late.
In place, a wake is dear and its work cheap: the relay process's main thread spends ~300-400 µs a wake-up
of which the work, warm, is a tenth (the caches are cold after 66 ms of the machine's other processes).
The supervisor's sampling tick, two wakes a second of its own, cost ~0.05 CPU s/min of a relay process
that spends ~0.5 at one destination (relay/supervisor/supervisor.py), and each push's progress pipe, a wake
a second, ~0.01 a push (relay/push/process.py).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
import weakref
from collections.abc import Callable
from typing import Protocol


class TimerHandle(Protocol):
    """A scheduled callback that may still be cancelled."""

    def cancel(self) -> None: ...


class Clock(Protocol):
    """Monotonic seconds and one-shot timers on the event loop's thread."""

    def now(self) -> float: ...

    def call_later(self, delay: float, callback: Callable[[], None], slack: float = 0.0) -> TimerHandle:
        """Run `callback` in `delay` seconds; with `slack`, at the first `woke` from then on, and at the
        latest `slack` seconds after that."""
        ...

    def woke(self) -> None:
        """The media path is awake (a publisher's read was just written): run the slack timers now due."""
        ...


class _Rider:
    """A slack timer: due at `due`, run by `LoopClock.woke` or by its own timer at `due` + slack."""

    __slots__ = ("callback", "due", "timer")

    def __init__(self, due: float, callback: Callable[[], None]) -> None:
        self.due = due
        self.callback: Callable[[], None] | None = callback
        self.timer: asyncio.TimerHandle | None = None

    def take(self) -> Callable[[], None] | None:
        """Its callback, the first time only (a rider runs once, at a wake or on its own timer), and its own
        timer cancelled. Let go of here: what it refers to is not kept, as asyncio's `TimerHandle.cancel`."""
        callback, self.callback = self.callback, None
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        return callback

    def cancel(self) -> None:
        self.take()

    def run(self) -> None:
        """Its own timer fired: no wake came within the slack (an error goes to the loop, as any timer's)."""
        self.timer = None
        callback = self.take()
        if callback is not None:
            callback()


class _Riders:
    """The slack timers of one event loop, a heap by due time, and whether a run of them is armed."""

    __slots__ = ("armed", "heap", "next_due", "order")

    def __init__(self) -> None:
        self.heap: list[tuple[float, int, _Rider]] = []
        """One that is cancelled or ran on its own timer stays until it comes up at a wake or reaches the top
        as another is armed (without wakes, the heap keeps no more than the timers armed since the last one
        ran)."""
        self.next_due = float("inf")
        self.order = itertools.count()
        self.armed = False

    def add(self, loop: asyncio.AbstractEventLoop, delay: float, slack: float, callback: Callable[[], None]) -> _Rider:
        heap = self.heap
        while heap and heap[0][2].callback is None:
            heapq.heappop(heap)  # run by its own timer (no wake came) or cancelled: done with
        rider = _Rider(time.monotonic() + delay, callback)
        rider.timer = loop.call_later(delay + slack, rider.run)
        heapq.heappush(heap, (rider.due, next(self.order), rider))
        self.next_due = heap[0][0]
        return rider

    def run_due(self) -> None:
        self.armed = False
        heap = self.heap
        now = time.monotonic()
        due: list[_Rider] = []
        while heap and heap[0][0] <= now:
            due.append(heapq.heappop(heap)[2])
        self.next_due = heap[0][0] if heap else float("inf")
        loop = asyncio.get_running_loop()
        for rider in due:
            callback = rider.take()
            if callback is None:
                continue  # cancelled, or run by its own timer already
            try:
                callback()
            except Exception as exc:  # as the loop reports a timer callback's error; the others still run
                loop.call_exception_handler({"message": "error in a slack timer's callback", "exception": exc})


_LOOP_RIDERS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Riders] = weakref.WeakKeyDictionary()
"""The slack timers are the loop's, not a clock's: every `LoopClock` on a loop shares them, so a push's
progress poll (relay.push.process) rides a hub's read as the supervisor's tick does."""


class LoopClock:
    """The production clock: the running event loop's monotonic time and `call_later`.

    The loop is looked up on each call so that the object can be built before the loop runs. `now` is
    `time.monotonic`, which is what asyncio's own loops' `time()` returns, without looking the loop up:
    the hub reads the clock for every packet and every subscriber. Timers with slack are the loop's
    (`_LOOP_RIDERS`), whichever clock armed them and whichever calls `woke`.
    """

    now = staticmethod(time.monotonic)
    """`time.monotonic` itself, not a method calling it: one Python call fewer per packet and subscriber."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._riders = _Riders()
        """`_LOOP_RIDERS`'s entry for `_loop`, kept for as long as this clock runs on it (until the first call,
        an empty stand-in)."""

    def _riders_of(self, loop: asyncio.AbstractEventLoop) -> _Riders:
        if loop is not self._loop:
            riders = _LOOP_RIDERS.get(loop)
            if riders is None:
                riders = _LOOP_RIDERS[loop] = _Riders()
            self._loop, self._riders = loop, riders
        return self._riders

    def call_later(self, delay: float, callback: Callable[[], None], slack: float = 0.0) -> TimerHandle:
        loop = asyncio.get_running_loop()
        delay = max(0.0, delay)
        if slack <= 0:
            return loop.call_later(delay, callback)
        return self._riders_of(loop).add(loop, delay, slack, callback)

    def woke(self) -> None:
        # Once a publisher's read: one comparison until a slack timer is due.
        loop = asyncio.get_running_loop()
        riders = self._riders_of(loop)
        if riders.next_due > time.monotonic() or riders.armed:
            return
        # Not run from inside the media path's call (its callbacks may call back into a hub that is
        # writing): on the loop's next turn, which follows at once, within the same wake-up.
        riders.armed = True
        loop.call_soon(riders.run_due)
