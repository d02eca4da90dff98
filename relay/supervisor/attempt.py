"""One start of a push: the process, what we asked of it and what it showed, from spawn to reap.

A new start makes a new `Attempt`, so nothing of a previous run (a stop asked of it, its progress, its
stall clock) can leak into the next. The process comes from an injected `ProcessFactory`:
`FfmpegProcess` in production, an in-memory fake in the state-machine tests.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Protocol

from relay.hub.clock import TimerHandle
from relay.hub.subscriber import EndCause, Subscriber
from relay.push.process import PushExit
from relay.push.progress import Progress
from relay.supervisor.exits import Asked, AttemptEnd
from relay.supervisor.states import Order


class PushProcess(Protocol):
    """What the runner needs of one push process (`relay.push.process.FfmpegProcess`)."""

    @property
    def recent_lines(self) -> Sequence[str]:
        """Its last log lines, masked."""

    async def start(self) -> None:
        """Spawn it; raises OSError if it cannot be started."""

    async def exited(self) -> int:
        """Wait for the exit only."""

    async def wait(self) -> PushExit:
        """Wait for the exit and reap everything."""

    async def stop(self, timeout_seconds: float) -> PushExit:
        """End it cleanly if it can within the timeout, else kill it; reaps."""

    async def aclose(self) -> None:
        """Kill and reap at once (cancellation)."""

    def kill(self) -> None: ...


class ProcessFactory(Protocol):
    """Makes the (not yet started) process that pushes `subscriber` with `argv`."""

    def __call__(
        self,
        argv: Sequence[str],
        subscriber: Subscriber,
        secrets: Sequence[str],
        *,
        on_progress: Callable[[Progress], None],
        on_input_end: Callable[[EndCause | None], None],
        log_prefix: str,
    ) -> PushProcess: ...


class Attempt:
    """Owns one start of a push: its process and subscriber, its start time, what we asked of it (and
    why), the progress it showed and when that last advanced, its stall and stability timers, and how
    it ended. `run` is the one owner of the process from spawn to reap."""

    def __init__(self, process: PushProcess, subscriber: Subscriber, started_at: float) -> None:
        self.process = process
        self.subscriber = subscriber
        self.started_at = started_at
        self.asked = Asked.NOTHING
        self.stalled_for_seconds = 0.0
        self.progress: Progress | None = None
        self.last_progress_at = started_at
        """Only progress resets the stall clock, never mere output (datarhei's parser lesson)."""
        self.stall_timer: TimerHandle | None = None
        self.stable_timer: TimerHandle | None = None
        self.start_error: str | None = None
        self.exit: PushExit | None = None
        self.task: asyncio.Task[None] | None = None
        """The runner's task around `run`."""
        self._stop = asyncio.Event()

    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set()

    def request_stop(self, *, restart: bool = False) -> None:
        """End the process (its `run` does it); `restart`: start again at once afterwards."""
        self.asked = max(self.asked, Asked.RESTART if restart else Asked.STOP)
        self._stop.set()

    def kill_for_stall(self, stalled_for_seconds: float) -> None:
        self.asked = max(self.asked, Asked.STALL_KILL)
        self.stalled_for_seconds = stalled_for_seconds
        self.process.kill()

    def record_progress(self, progress: Progress, now: float) -> None:
        previous = self.progress
        self.progress = progress
        if previous is None or (
            progress.out_time_us > previous.out_time_us or progress.total_size_bytes > previous.total_size_bytes
        ):
            self.last_progress_at = now

    def stalled_for(self, now: float, timeout_seconds: float) -> float | None:
        """Seconds without output progress, if input flows and that reached the timeout; else None.

        Input that stopped (a quiet publisher, a grace period) is not a stall of ours.
        """
        offered = self.subscriber.last_offer_at
        input_flowing = offered is not None and now - offered < timeout_seconds
        idle = now - self.last_progress_at
        if input_flowing and idle >= timeout_seconds and not self.stop_requested:
            return idle
        return None

    def cancel_stall_watch(self) -> None:
        if self.stall_timer is not None:
            self.stall_timer.cancel()
        self.stall_timer = None

    def cancel_timers(self) -> None:
        self.cancel_stall_watch()
        if self.stable_timer is not None:
            self.stable_timer.cancel()
        self.stable_timer = None

    async def run(self, stop_timeout_seconds: float) -> None:
        """Spawn, wait for the exit or a stop request, reap; sets `exit` or `start_error`.

        The subscriber is closed whatever happens; on cancellation the process is killed and reaped.
        """
        process = self.process
        try:
            try:
                await process.start()
            except OSError as exc:
                self.start_error = f"cannot start ffmpeg: {exc.strerror or exc}"
                return
            stop_wait = asyncio.ensure_future(self._stop.wait())
            exit_wait = asyncio.ensure_future(process.exited())
            try:
                await asyncio.wait({stop_wait, exit_wait}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stop_wait.cancel()
                exit_wait.cancel()
            if self._stop.is_set():
                self.exit = await process.stop(stop_timeout_seconds)
            else:
                self.exit = await process.wait()
        except asyncio.CancelledError:
            await process.aclose()
            raise
        finally:
            self.subscriber.close()

    def end(self, *, order: Order, live: bool, was_running: bool, now: float) -> AttemptEnd:
        """The facts of this attempt's end, with the runner's view of the moment (`classify_exit`'s input)."""
        result = self.exit
        return AttemptEnd(
            order=order,
            asked=self.asked,
            live=live,
            was_running=was_running,
            ran_for_seconds=now - self.started_at,
            stalled_for_seconds=self.stalled_for_seconds,
            start_error=self.start_error,
            returncode=result.returncode if result else None,
            stopped=result.stopped if result else False,
            killed=result.killed if result else False,
            refused=result.refused if result else False,
            last_error=result.last_error if result else None,
            input_end=result.input_end if result else None,
        )
