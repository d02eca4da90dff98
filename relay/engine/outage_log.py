"""One log line per outage of a periodic job, not one per round.

A job that runs every few seconds (the engine's reconcile) and fails while the store is away would
otherwise write the same traceback every round for as long as the outage lasts. `OutageLog` writes the
first failure (a warning with the reason when the store says it is unavailable, the traceback for anything
else), a new line only when the reason changes, and one line when the job works again, with how long and
how many rounds it failed.
"""

from __future__ import annotations

import logging
import time

from relay.store.base import StoreUnavailable


class OutageLog:
    def __init__(self, log: logging.Logger, what: str, interval_seconds: float) -> None:
        self._log = log
        self._what = what
        self._interval = interval_seconds
        self._since: float | None = None
        self._rounds = 0
        self._reason: str | None = None

    @property
    def failing(self) -> bool:
        return self._since is not None

    def failed(self, exc: Exception) -> None:
        """Call from the `except` block of a failed round."""
        if self._since is None:
            self._since = time.monotonic()
        self._rounds += 1
        reason = f"{type(exc).__name__}: {exc}"
        if reason == self._reason:
            return
        self._reason = reason
        if isinstance(exc, StoreUnavailable):
            self._log.warning("%s failed: %s; retrying every %g s", self._what, exc, self._interval)
        else:
            self._log.exception("%s failed; retrying every %g s", self._what, self._interval)

    def succeeded(self) -> None:
        """Call after a round that worked: one line if rounds had failed before it."""
        if self._since is None:
            return
        self._log.info(
            "%s works again after %d failed rounds (%.0f s)",
            self._what,
            self._rounds,
            time.monotonic() - self._since,
        )
        self._since, self._rounds, self._reason = None, 0, None
