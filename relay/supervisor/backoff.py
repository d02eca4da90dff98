"""Exponential backoff with jitter, reset after a stable run, with a fast-retry window after a break."""

from __future__ import annotations

import random
from collections.abc import Callable

from relay.supervisor.settings import SupervisorSettings


class Backoff:
    """Owns the failure count of one push and turns it into the next delay.

    `random` is injected so tests can pin the jitter.
    """

    def __init__(self, settings: SupervisorSettings, rand: Callable[[], float] = random.random) -> None:
        self._settings = settings
        self._rand = rand
        self.failures = 0
        self._fast_until: float | None = None

    def reset(self) -> None:
        self.failures = 0
        self._fast_until = None

    def next_delay(self, ran_for_seconds: float, now: float) -> float:
        """Delay before the next attempt after a failure of a run that lasted `ran_for_seconds`.

        `ran_for_seconds` is 0 for an attempt that never got running; `now` is the supervisor clock.
        """
        s = self._settings
        if ran_for_seconds >= s.stable_after_seconds:
            self.failures = 0
        if ran_for_seconds >= s.fast_retry_min_run_seconds:
            self._fast_until = now + s.fast_retry_window_seconds
        if self._fast_until is not None and now < self._fast_until:
            base = s.restart_initial_delay_seconds
        else:
            self._fast_until = None
            base = min(
                s.restart_max_delay_seconds, s.restart_initial_delay_seconds * s.restart_multiplier**self.failures
            )
            self.failures += 1
        jitter = 1.0 + s.restart_jitter_ratio * (2.0 * self._rand() - 1.0)
        return max(0.0, min(s.restart_max_delay_seconds, base * jitter))

    def cap_delay(self) -> float:
        """The slow retry period for a refused destination."""
        return self._settings.restart_max_delay_seconds
