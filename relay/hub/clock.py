"""Time as the relay's engine sees it: a monotonic clock plus one-shot timers.

Everything that waits (grace periods, restart backoff, stall checks) takes a `Clock` so that unit tests
drive time by hand instead of sleeping on the wall clock.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Protocol


class TimerHandle(Protocol):
    """A scheduled callback that may still be cancelled."""

    def cancel(self) -> None: ...


class Clock(Protocol):
    """Monotonic seconds and one-shot timers on the event loop's thread."""

    def now(self) -> float: ...

    def call_later(self, delay: float, callback: Callable[[], None]) -> TimerHandle: ...


class LoopClock:
    """The production clock: the running event loop's monotonic time and `call_later`.

    The loop is looked up on each call so that the object can be built before the loop runs. `now` is
    `time.monotonic`, which is what asyncio's own loops' `time()` returns, without looking the loop up:
    the hub reads the clock for every packet and every subscriber.
    """

    now = staticmethod(time.monotonic)
    """`time.monotonic` itself, not a method calling it: one Python call fewer per packet and subscriber."""

    def call_later(self, delay: float, callback: Callable[[], None]) -> TimerHandle:
        return asyncio.get_running_loop().call_later(max(0.0, delay), callback)
