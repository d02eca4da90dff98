"""Exponential backoff with jitter, reset after a stable run."""

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

    def reset(self) -> None:
        self.failures = 0

    def next_delay(self, ran_for_seconds: float) -> float:
        """Delay before the next attempt after a failure of a run that lasted `ran_for_seconds`."""
        s = self._settings
        if ran_for_seconds >= s.stable_after_seconds:
            self.failures = 0
        base = min(s.restart_max_delay_seconds, s.restart_initial_delay_seconds * s.restart_multiplier ** self.failures)
        self.failures += 1
        jitter = 1.0 + s.restart_jitter_ratio * (2.0 * self._rand() - 1.0)
        return max(0.0, min(s.restart_max_delay_seconds, base * jitter))

    def cap_delay(self) -> float:
        """The slow retry period for a refused destination."""
        return self._settings.restart_max_delay_seconds
