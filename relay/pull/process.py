"""One pull's ffmpeg child (an `OwnedChild`, as a push's is): stdout (the media) and stderr (its log)
each drained by one task, stopped with SIGINT then SIGKILL, always reaped.

It shares the push's hygiene (relay/push/process.py): a minimal environment (`child_environment`: no
RELAY_API_KEY for a child that parses what a remote server sends), no core dump (its memory holds the
source's credentials), log lines capped in length and masked before they are kept or logged.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from relay.push.masking import mask_secrets
from relay.push.process import OwnedChild, capped_lines
from relay.push.progress import classify_error

log = logging.getLogger("relay.pull")

_READ_BYTES = 64 * 1024
_KEEP_LINES = 20


@dataclass(frozen=True, slots=True)
class PullExit:
    """How one ffmpeg run ended, as facts."""

    returncode: int | None
    stopped: bool
    """We asked it to stop."""
    killed: bool
    """We killed it (a stall, unreadable output, a stop that took too long)."""
    last_error: str | None
    """Its last error line, secrets masked."""


class PullProcess(OwnedChild):
    """Owns one ffmpeg child and its two pipe tasks until `wait` returns.

    `on_data` gets each chunk of stdout as it arrives (on the loop); if it raises, the process is
    killed and the exception's message becomes `last_error` (it must be safe to show).
    """

    _log = log

    def __init__(
        self,
        argv: Sequence[str],
        secrets: Sequence[str],
        *,
        on_data: Callable[[bytes], None],
        log_prefix: str,
    ) -> None:
        super().__init__(argv, log_prefix)
        self._secrets = tuple(secrets)
        self._on_data = on_data
        self._stopped = False
        self._last_error: str | None = None
        self.recent_lines: deque[str] = deque(maxlen=_KEEP_LINES)
        self.bytes_out = 0
        """Media bytes read from its stdout."""

    async def start(self) -> None:
        """Spawn ffmpeg; raises OSError if it cannot be started."""
        await self._start_child(asyncio.subprocess.DEVNULL)
        self._spawn(self._read_media())
        self._spawn(self._read_log())

    async def wait(self) -> PullExit:
        """Wait for the exit and for the pipes to drain; reaps the child and every task."""
        returncode = await self._reap(list(self._tasks))  # its tasks are its two pipe readers
        return PullExit(returncode, self._stopped, self._killed, self._last_error)

    async def stop(self, timeout_seconds: float) -> PullExit:
        """SIGINT (ffmpeg closes its source cleanly), SIGKILL after `timeout_seconds`; always reaps."""
        assert self._proc is not None
        self._stopped = True
        self._signal(signal.SIGINT)
        try:
            await asyncio.wait_for(asyncio.shield(self._proc.wait()), timeout_seconds)
        except TimeoutError:
            log.warning("%s: ffmpeg did not stop within %.1fs, killing", self._log_prefix, timeout_seconds)
            self.kill()
        return await self.wait()

    async def _read_media(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        stdout = self._proc.stdout
        while data := await stdout.read(_READ_BYTES):
            self.bytes_out += len(data)
            try:
                self._on_data(data)
            except ValueError as exc:  # FlvFormatError: nothing more of this run can be trusted
                self._last_error = str(exc)
                log.warning("%s: %s", self._log_prefix, exc)
                self.kill()
                return

    async def _read_log(self) -> None:
        assert self._proc is not None and self._proc.stderr is not None
        async for raw in capped_lines(self._proc.stderr):
            line = mask_secrets(raw, self._secrets)
            self.recent_lines.append(line)
            if classify_error(line) is None:
                log.debug("%s: %s", self._log_prefix, line)
                continue
            if not self._killed:
                self._last_error = line
            log.warning("%s: %s", self._log_prefix, line)
