"""Rate limits for what anonymous peers can make the relay do: token buckets per key, and a log that writes
at most so many lines of one kind per window and sums up the rest.

Both are bounded whatever the peers do (a bucket per key up to `max_keys`, a count per label), take their
clock from the caller (tests pass a fake one), and are thread-safe: SRT handshakes are decided on libsrt's
receiver thread while the event loop reads the same objects.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable

Clock = Callable[[], float]


class TokenBuckets:
    """Owns one token bucket per key: `burst` tokens, refilled at `per_second`, one taken per attempt.

    At most `max_keys` buckets are kept; the least recently used is forgotten first. A forgotten key starts
    again with a full bucket, so under a flood from more keys than that the limit errs towards letting
    through, never towards refusing a key that has not been seen misbehaving.
    """

    def __init__(self, per_second: float, burst: int, *, max_keys: int = 4096, clock: Clock = time.monotonic) -> None:
        if per_second <= 0 or burst < 1 or max_keys < 1:
            raise ValueError("a token bucket needs a positive rate, a burst of at least 1 and room for a key")
        self.per_second = per_second
        self.burst = burst
        self.max_keys = max_keys
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        """key -> (tokens, when they were counted), least recently used first."""

    def take(self, key: str) -> bool:
        """True if `key` may go ahead now (a token was taken), False if it is over its rate."""
        now = self._clock()
        with self._lock:
            tokens, since = self._buckets.pop(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - since) * self.per_second)
            allowed = tokens >= 1.0
            if allowed:
                tokens -= 1.0
            self._buckets[key] = (tokens, now)
            if len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        return allowed

    def __len__(self) -> int:
        with self._lock:
            return len(self._buckets)


class ThrottledLog:
    """Owns the line budget of one kind of log line: `max_lines` per `window_seconds`, written as they come;
    the rest are counted by label, and one WARNING line per window says how many were held back.

    The summary is written at the first call after its window ended (`log` or `flush`): there is no timer.
    Labels must be short and few (a rejection code, a reason), never text from a client.
    """

    def __init__(
        self,
        logger: logging.Logger,
        what: str,
        *,
        max_lines: int = 20,
        window_seconds: float = 10.0,
        clock: Clock = time.monotonic,
    ) -> None:
        self._logger = logger
        self._what = what
        self.max_lines = max_lines
        self.window_seconds = window_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._window_start = clock()
        self._lines = 0
        self._held: Counter[str] = Counter()

    def log(self, level: int, label: str, message: str, *args: object) -> None:
        """Write this line if the window's budget allows, else count it under `label`."""
        with self._lock:
            summary = self._roll()
            write = self._lines < self.max_lines
            if write:
                self._lines += 1
            else:
                self._held[label] += 1
        if summary:
            self._logger.warning("%s", summary)
        if write:
            self._logger.log(level, message, *args)

    def flush(self) -> None:
        """Write the summary of a window that has ended, if it held lines back."""
        with self._lock:
            summary = self._roll()
        if summary:
            self._logger.warning("%s", summary)

    def _roll(self) -> str | None:
        now = self._clock()
        elapsed = now - self._window_start
        if elapsed < self.window_seconds:
            return None
        held, self._held = self._held, Counter()
        self._window_start, self._lines = now, 0
        if not held:
            return None
        counts = ", ".join(f"{label} x{count}" for label, count in sorted(held.items()))
        return f"{self._what}: {held.total()} more not logged in the last {elapsed:.0f} s ({counts})"
