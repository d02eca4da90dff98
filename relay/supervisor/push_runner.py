"""The state machine of one restream's push (in the manner of datarhei core's process.go).

The order (start/stop) is what the engine wants; the state is what we observe. One attempt task owns
the ffmpeg process from spawn to reap; everything else (stop requests, stall kills, restarts) talks to
it through the process object or the stop event, so there is never a second owner.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from relay.hub.clock import Clock, TimerHandle
from relay.hub.hub import Hub
from relay.hub.subscriber import EndCause, Subscriber
from relay.media.packets import ContainerFormat
from relay.push.command import UnsupportedDestination, build_command
from relay.push.masking import mask_secrets, mask_uri, secrets_of
from relay.push.process import FfmpegProcess, PushExit
from relay.push.progress import Progress
from relay.supervisor.backoff import Backoff
from relay.supervisor.settings import SupervisorSettings
from relay.supervisor.states import TRANSITIONS, Order, PushSpec, PushState, PushStatus
from relay.transitions import check_transition

log = logging.getLogger("relay.supervisor")

_STREAM_OVER = frozenset({EndCause.UNPUBLISHED, EndCause.SOURCE_LOST, EndCause.HUB_CLOSED})


class PushRunner:
    """Owns one restream's order, observed state, counters, backoff, retry and stall timers, and the
    attempt task that owns its ffmpeg process."""

    def __init__(
        self,
        spec: PushSpec,
        settings: SupervisorSettings,
        hub_lookup: Callable[[int], Hub | None],
        ffmpeg_path: str,
        clock: Clock,
        wall_clock: Callable[[], float],
        on_status: Callable[[int, PushStatus], None],
        backoff: Backoff,
    ) -> None:
        self.spec = spec
        self._settings = settings
        self._hub_lookup = hub_lookup
        self._ffmpeg_path = ffmpeg_path
        self._clock = clock
        self._wall_clock = wall_clock
        self._on_status = on_status
        self._backoff = backoff
        self.order = Order.STOP
        self._state = PushState.IDLE
        self._since = wall_clock()
        self._restarts = 0
        self._last_error: str | None = None
        self._progress: Progress | None = None
        self._retry_timer: TimerHandle | None = None
        self._retry_at: float | None = None
        self._stall_timer: TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None
        self._process: FfmpegProcess | None = None
        self._log_tail: tuple[str, ...] = ()
        """The last ffmpeg's last log lines (masked), kept after it exits: why did it fail?"""
        self._subscriber: Subscriber | None = None
        self._stop_event = asyncio.Event()
        self._restart_requested = False
        self._restarts_pending = False
        """The next launch is a restart (counted), not a first start."""
        self._kill_reason: str | None = None
        self._started_at = 0.0
        self._last_progress_at = 0.0
        self._stable_timer: TimerHandle | None = None

    # -- queries -------------------------------------------------------------------------------------

    @property
    def state(self) -> PushState:
        return self._state

    @property
    def busy(self) -> bool:
        """An attempt (ffmpeg process) is under way."""
        return self._task is not None

    @property
    def _log_prefix(self) -> str:
        return f"restream {self.spec.restream_id} ({mask_uri(self.spec.uri)})"

    def status(self) -> PushStatus:
        p = self._progress
        next_retry = None
        if self._retry_at is not None:
            next_retry = max(0.0, self._retry_at - self._clock.now())
        return PushStatus(
            restream_id=self.spec.restream_id,
            state=self._state,
            since=self._since,
            stream_id=self.spec.stream_id,
            uri=mask_uri(self.spec.uri),
            bytes_out=p.total_size_bytes if p else 0,
            bitrate_kbps=p.bitrate_kbps if p else None,
            frames=p.frame if p else 0,
            out_time_seconds=p.out_time_us / 1_000_000 if p else 0.0,
            speed=p.speed if p else None,
            restarts=self._restarts,
            last_error=self._last_error,
            next_retry_seconds=next_retry,
            log_tail=tuple(self._process.recent_lines) if self._process is not None else self._log_tail,
        )

    # -- orders --------------------------------------------------------------------------------------

    def start(self) -> None:
        """Want this push running whenever its stream is live."""
        self.order = Order.START
        self.sync()

    def stop(self) -> None:
        """Do not want it: end the process cleanly, no restart."""
        self.order = Order.STOP
        self._cancel_retry()
        if self._task is not None:
            self._request_stop()
        elif self._state is not PushState.DISABLED:
            self._set_state(PushState.DISABLED, "stopped")

    def update_spec(self, spec: PushSpec) -> None:
        """A changed definition (e.g. URI): restart with it, now."""
        if spec == self.spec:
            return
        self.spec = spec
        self._last_error = None
        self._backoff.reset()
        self.restart("definition changed")

    def restart(self, reason: str) -> None:
        """End the current attempt and start again at once (source changed, spec changed)."""
        if self._task is not None:
            log.info("%s: restarting: %s", self._log_prefix, reason)
            self._restart_requested = True
            self._request_stop()
        elif self.order is Order.START:
            self._cancel_retry()
            self.sync()

    def retry_now(self) -> None:
        """Retry a failed or waiting push immediately (the user re-enabled it)."""
        self._backoff.reset()
        if self._state in (PushState.FAILED, PushState.RETRYING) and self._task is None:
            self._cancel_retry()
            self._launch("retry requested")

    def sync(self) -> None:
        """Align with the order and the stream's liveness; idempotent."""
        live = self._live()
        if self.order is Order.STOP:
            if self._task is not None:
                self._request_stop()
            return
        if self._task is not None:
            if not live:
                self._request_stop()
            return
        if not live:
            self._cancel_retry()
            if self._state is not PushState.IDLE:
                self._set_state(PushState.IDLE, "stream not live")
            return
        if self._state in (PushState.IDLE, PushState.DISABLED):
            self._launch("stream live")

    async def close(self) -> None:
        """Stop for good and wait until the process is reaped."""
        self.order = Order.STOP
        self._cancel_retry()
        self._cancel_stall()
        task = self._task
        if task is not None:
            self._request_stop()
            await asyncio.shield(task)

    # -- attempts ------------------------------------------------------------------------------------

    def _live(self) -> bool:
        hub = self._hub_lookup(self.spec.stream_id)
        return hub is not None and hub.live

    def _launch(self, reason: str) -> None:
        hub = self._hub_lookup(self.spec.stream_id)
        if hub is None or not hub.live:
            if self._state is not PushState.IDLE:
                self._set_state(PushState.IDLE, "stream not live")
            return
        container = hub.container or ContainerFormat.FLV
        try:
            command = build_command(
                self._ffmpeg_path, self.spec.uri, container,
                no_audio=self.spec.no_audio, no_audio_mode=self.spec.no_audio_mode,
                tls_verify=self.spec.tls_verify, video_codec=hub.info.video_codec,
                settings=self._settings.command,
            )
        except (UnsupportedDestination, ValueError) as exc:
            self._last_error = mask_secrets(str(exc), secrets_of(self.spec.uri))
            self._set_state(PushState.STARTING, reason)
            self._fail(refused=True)
            return
        if self._state in (PushState.RETRYING, PushState.FAILED) or self._restarts_pending:
            self._restarts += 1
        self._restarts_pending = False
        subscriber = hub.subscribe()
        self._subscriber = subscriber
        self._stop_event = asyncio.Event()
        self._kill_reason = None
        self._progress = None
        self._started_at = self._last_progress_at = self._clock.now()
        self._process = FfmpegProcess(
            command.argv, subscriber, secrets_of(self.spec.uri),
            on_progress=self._on_progress, on_input_end=self._on_input_end, log_prefix=self._log_prefix,
        )
        self._set_state(PushState.STARTING, reason)
        self._task = asyncio.create_task(self._attempt(self._process, subscriber))
        self._arm_stall()

    async def _attempt(self, process: FfmpegProcess, subscriber: Subscriber) -> None:
        result: PushExit | None = None
        error: str | None = None
        try:
            try:
                await process.start()
            except OSError as exc:
                error = f"cannot start ffmpeg: {exc.strerror or exc}"
            else:
                stop_wait = asyncio.ensure_future(self._stop_event.wait())
                exit_wait = asyncio.ensure_future(process.exited())
                try:
                    await asyncio.wait({stop_wait, exit_wait}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    stop_wait.cancel()
                    exit_wait.cancel()
                if self._stop_event.is_set():
                    result = await process.stop(self._settings.stop_timeout_seconds)
                else:
                    result = await process.wait()
        except asyncio.CancelledError:
            await process.aclose()
            raise
        finally:
            subscriber.close()
        self._task = None
        self._log_tail = tuple(process.recent_lines)
        self._process = None
        self._subscriber = None
        self._on_exit(result, error)

    def _request_stop(self) -> None:
        if self._task is None:
            return
        self._stop_event.set()
        if self._state in (PushState.STARTING, PushState.RUNNING):
            self._set_state(PushState.STOPPING, "stop requested")

    def _on_exit(self, result: PushExit | None, error: str | None) -> None:
        self._cancel_stall()
        self._cancel_stable()
        ran_for = self._clock.now() - self._started_at
        was_running = self._state is PushState.RUNNING or (
            self._state is PushState.STOPPING and self._progress is not None
        )
        if result is not None:
            log.info("%s: ffmpeg exited with %s%s", self._log_prefix, result.returncode,
                     " (clean)" if result.clean else "")
        if self.order is Order.STOP:
            self._set_state(PushState.DISABLED, "stopped")
            return
        if self._restart_requested:
            self._restart_requested = False
            self._restarts_pending = True
            self._launch("restart")
            return
        input_end = result.input_end if result else None
        if not self._live() or (input_end in _STREAM_OVER and result is not None and result.clean):
            self._backoff.reset()
            self._set_state(PushState.IDLE, "stream ended")
            return
        if input_end is EndCause.SOURCE_CHANGED:
            self._restarts_pending = True
            self._launch("source changed")
            return
        if self._kill_reason is not None:
            self._last_error = self._kill_reason
        elif input_end is EndCause.OVERFLOW:
            self._last_error = "destination too slow: fell behind repeatedly"
        elif error is not None:
            self._last_error = error
        elif result is not None:
            self._last_error = result.last_error or f"ffmpeg exited with code {result.returncode}"
        self._fail(refused=bool(result and result.refused), ran_for=ran_for if was_running else 0.0)

    def _fail(self, *, refused: bool, ran_for: float = 0.0) -> None:
        if refused:
            delay = self._backoff.cap_delay()
            self._set_state(PushState.FAILED, f"refused by destination, retry in {delay:.1f}s")
        else:
            delay = self._backoff.next_delay(ran_for, self._clock.now())
            self._set_state(PushState.RETRYING, f"retry in {delay:.2f}s")
        self._retry_at = self._clock.now() + delay
        self._retry_timer = self._clock.call_later(delay, self._retry_due)

    def _retry_due(self) -> None:
        self._retry_timer = None
        self._retry_at = None
        if self.order is Order.START and self._task is None:
            if self._live():
                self._launch("retry")
            else:
                self._set_state(PushState.IDLE, "stream not live")

    def _cancel_retry(self) -> None:
        if self._retry_timer is not None:
            self._retry_timer.cancel()
        self._retry_timer = None
        self._retry_at = None

    # -- progress, stall, stability --------------------------------------------------------------------

    def _on_progress(self, progress: Progress) -> None:
        previous = self._progress
        self._progress = progress
        advanced = previous is None or (
            progress.out_time_us > previous.out_time_us or progress.total_size_bytes > previous.total_size_bytes
        )
        if advanced:
            self._last_progress_at = self._clock.now()
        if (
            self._state is PushState.STARTING
            and progress.total_size_bytes > 0
            and (progress.out_time_us > 0 or progress.frame > 0)
        ):
            self._set_state(PushState.RUNNING, "output progress")
            self._stable_timer = self._clock.call_later(
                self._settings.stable_after_seconds, self._backoff.reset
            )
        else:
            self._on_status(self.spec.restream_id, self.status())

    def _on_input_end(self, cause: EndCause | None) -> None:
        # EOF is on its way to ffmpeg; a slow destination may still hold it up, so bound the end.
        if cause in (EndCause.OVERFLOW, EndCause.SOURCE_CHANGED):
            if cause is EndCause.SOURCE_CHANGED and self.order is Order.START:
                self._restart_requested = True
            self._request_stop()

    def _arm_stall(self) -> None:
        interval = max(0.25, self._settings.stall_timeout_seconds / 4)
        self._stall_timer = self._clock.call_later(interval, self._check_stall)

    def _cancel_stall(self) -> None:
        if self._stall_timer is not None:
            self._stall_timer.cancel()
        self._stall_timer = None

    def _cancel_stable(self) -> None:
        if self._stable_timer is not None:
            self._stable_timer.cancel()
        self._stable_timer = None

    def _check_stall(self) -> None:
        self._stall_timer = None
        process, subscriber = self._process, self._subscriber
        if process is None or subscriber is None:
            return
        now = self._clock.now()
        timeout = self._settings.stall_timeout_seconds
        input_flowing = subscriber.last_offer_at is not None and now - subscriber.last_offer_at < timeout
        if input_flowing and now - self._last_progress_at >= timeout and not self._stop_event.is_set():
            self._kill_reason = f"stalled: no output progress for {now - self._last_progress_at:.0f}s"
            log.warning("%s: %s, killing ffmpeg", self._log_prefix, self._kill_reason)
            process.kill()
            return
        self._arm_stall()

    # -- transitions ---------------------------------------------------------------------------------

    def _set_state(self, new: PushState, reason: str) -> None:
        old = self._state
        if new is not old:  # staying put refreshes `since` and the status; the table lists no self-loops
            check_transition(TRANSITIONS, self._log_prefix, old, new)
        self._state = new
        self._since = self._wall_clock()
        if new is not old:
            level = logging.WARNING if new in (PushState.RETRYING, PushState.FAILED) else logging.INFO
            suffix = f" ({self._last_error})" if new in (PushState.RETRYING, PushState.FAILED) else ""
            log.log(level, "%s: %s -> %s: %s%s", self._log_prefix, old.value, new.value, reason, suffix)
        self._on_status(self.spec.restream_id, self.status())
