"""One start of a push: the process, what we asked of it and what it showed, from spawn to reap.

A new start makes a new `Attempt`, so nothing of a previous run (a stop asked of it, its progress, its
stall clock) can leak into the next. An attempt first opens its process (`Opener`: the runner resolves
and checks the destination, then builds the command; relay/policy.py), then runs it. The process comes
from an injected `ProcessFactory`: `relay.push.srt_process.push_process` in production (`FfmpegProcess`, or
`SrtPushProcess` when the relay itself sends to an SRT destination), an in-memory fake in the
state-machine tests.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from relay.hub.clock import TimerHandle
from relay.hub.subscriber import EndCause, Subscriber
from relay.policy import DestinationRefused, DestinationUnresolved
from relay.push.process import PushExit
from relay.push.progress import Progress
from relay.srt.caller import CallerConfig, SendStats
from relay.supervisor.exits import Asked, AttemptEnd
from relay.supervisor.states import Order


class PushProcess(Protocol):
    """What the runner needs of one push process (`relay.push.process.FfmpegProcess`)."""

    @property
    def recent_lines(self) -> Sequence[str]:
        """Its last log lines, masked."""

    @property
    def link_stats(self) -> SendStats | None:
        """The SRT destination link's latest figures, when the relay sends to it itself."""

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
        srt_output: CallerConfig | None = None,
    ) -> PushProcess: ...


Opener = Callable[[], Awaitable[PushProcess]]
"""Makes the process of one attempt (not yet started). Raises DestinationRefused when the policy refuses
the destination, DestinationUnresolved when its host does not resolve."""


class Attempt:
    """Owns one start of a push: its process (once opened) and subscriber, its start time, what we asked
    of it (and why), the progress it showed and when that last advanced, its stall and stability
    timers, and how it ended. `run` is the one owner of the process from open to reap."""

    def __init__(self, opener: Opener, subscriber: Subscriber, started_at: float) -> None:
        self._opener = opener
        self.process: PushProcess | None = None
        """None until opened, and for good if the destination was refused or did not resolve."""
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
        self.refused = False
        """The destination policy refused it: nothing was attempted (`start_error` says why)."""
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
        if self.process is not None:
            self.process.kill()
        else:  # still resolving (bounded well below the stall timeout): give up the open
            self._stop.set()

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
        """Open, spawn, wait for the exit or a stop request, reap; sets `exit` or `start_error`.

        The subscriber is closed whatever happens; on cancellation the process is killed and reaped.
        """
        process: PushProcess | None = None
        try:
            process = await self._open()
            if process is None:
                return
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
            if process is not None:
                await process.aclose()
            raise
        finally:
            self.subscriber.close()

    async def _open(self) -> PushProcess | None:
        """The process, or None when the open failed (`start_error` set) or a stop came first."""
        opening = asyncio.ensure_future(self._opener())
        stop_wait = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait({opening, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop_wait.cancel()
            if not opening.done():
                opening.cancel()
                await asyncio.gather(opening, return_exceptions=True)
        if opening.cancelled():
            return None
        try:
            process = opening.result()
        except (DestinationRefused, ValueError) as exc:  # ValueError: no command for this definition
            self.start_error, self.refused = str(exc), True
            return None
        except DestinationUnresolved as exc:
            self.start_error = str(exc)
            return None
        self.process = process  # made, so its log tail shows; not spawned if a stop came meanwhile
        return None if self._stop.is_set() else process

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
            refused=result.refused if result else self.refused,
            last_error=result.last_error if result else None,
            input_end=result.input_end if result else None,
        )
