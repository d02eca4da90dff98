"""Counters the operator sees: bytes and bitrate of a flow, measured over a short sliding window."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable


class RateMeter:
    """Total bytes and the bitrate over the last `window_seconds`, in one-second buckets.

    O(1) per packet; memory bounded by the window. Time comes from the injected clock.
    """

    def __init__(self, clock: Callable[[], float], window_seconds: int = 5) -> None:
        self._clock = clock
        self._window = window_seconds
        self._buckets: deque[list[int]] = deque()  # [second, bytes]
        self.total_bytes = 0
        self.packets = 0
        self.started_at = clock()

    def add(self, size: int, packets: int = 1) -> None:
        self.total_bytes += size
        self.packets += packets
        second = int(self._clock())
        if self._buckets and self._buckets[-1][0] == second:
            self._buckets[-1][1] += size
        else:
            self._buckets.append([second, size])
            while len(self._buckets) > self._window + 1:
                self._buckets.popleft()

    def bitrate_kbps(self) -> int:
        """Average over the last full seconds of the window (the current, partial second left out)."""
        now = int(self._clock())
        span = min(self._window, max(1, now - int(self.started_at)))
        counted = sum(size for second, size in self._buckets if now - span <= second < now)
        return int(counted * 8 / span / 1000)
