"""A hand-driven clock implementing relay.hub.clock.Clock: time moves only when a test advances it."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable


class FakeTimer:
    def __init__(self, when: float, callback: Callable[[], None]) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        """Lets go of the callback, as asyncio's `TimerHandle.cancel` does (what it refers to may be freed)."""
        self.cancelled = True
        self.callback = _nothing


def _nothing() -> None:
    pass


class FakeClock:
    """Owns a virtual time and the timers due on it; `advance` fires them in order."""

    def __init__(self, start: float = 1000.0) -> None:
        self._now = start
        self._timers: list[tuple[float, int, FakeTimer]] = []
        self._seq = itertools.count()

    def now(self) -> float:
        return self._now

    def call_later(self, delay: float, callback: Callable[[], None], slack: float = 0.0) -> FakeTimer:
        """A timer with slack fires when due, as the relay's clock runs it when a publisher's read comes then."""
        timer = FakeTimer(self._now + max(0.0, delay), callback)
        heapq.heappush(self._timers, (timer.when, next(self._seq), timer))
        return timer

    def woke(self) -> None:
        """Nothing waits for a wake: every timer fires when due."""

    def pending(self) -> list[float]:
        """Delays from now of the timers still armed."""
        return sorted(t.when - self._now for _, _, t in self._timers if not t.cancelled)

    def advance(self, seconds: float) -> None:
        target = self._now + seconds
        while self._timers and self._timers[0][0] <= target:
            when, _, timer = heapq.heappop(self._timers)
            if timer.cancelled:
                continue
            self._now = max(self._now, when)
            timer.callback()
        self._now = target
