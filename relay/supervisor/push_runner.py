"""The state machine of one restream's push (in the manner of datarhei core's process.go).

The order (start/stop) is what the engine wants; the state is what we observe. Each start is an
`Attempt` (relay/supervisor/attempt.py) whose task owns the process from spawn to reap; the runner only
asks things of it (stop, restart, stall kill). When it ends, `classify_exit` (exits.py) decides what
follows from the facts, and the runner carries that out: next state, backoff, retry timer.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass

from relay.destinations import parse_destination
from relay.hub.clock import Clock, TimerHandle
from relay.hub.hub import Hub
from relay.hub.subscriber import EndCause, Subscriber
from relay.media.packets import ContainerFormat
from relay.policy import DestinationPolicy, IPAddress
from relay.push.command import PushCommand, UnsupportedDestination, build_command
from relay.push.masking import mask_secrets, mask_uri, secrets_of
from relay.push.progress import Progress
from relay.push.srt_process import push_process
from relay.push.tcp_diag import TcpSample
from relay.srt.caller import SendStats
from relay.supervisor.attempt import Attempt, ProcessFactory, PushProcess
from relay.supervisor.backoff import Backoff
from relay.supervisor.exits import BackoffStep, ExitKind, Verdict, classify_exit, is_clean_exit
from relay.supervisor.settings import BehindPolicy, SupervisorSettings
from relay.supervisor.states import TRANSITIONS, Order, PushSpec, PushState, PushStatus
from relay.transitions import check_transition

log = logging.getLogger("relay.supervisor")


@dataclass(frozen=True, slots=True)
class EndedAttempt:
    """What the status still shows of the last attempt that ended (its figures, why it failed), and
    nothing else: the `Attempt` itself holds its reaped process (pipes, transports, reader tasks, the
    command line), its closed subscriber and the opener's closure, kept until the push ended again.
    Each push's first restart used to add that much to the heap (measured: ~245 Python blocks per
    destination), which is how a soak whose kills reach every destination only ~100 minutes in saw the
    heap grow through its second hour."""

    progress: Progress | None
    log_tail: tuple[str, ...]
    link_stats: SendStats | None

    @classmethod
    def of(cls, attempt: Attempt) -> EndedAttempt:
        process = attempt.process
        return cls(
            attempt.progress,
            tuple(process.recent_lines) if process is not None else (),
            process.link_stats if process is not None else None,
        )


class PushRunner:
    """Owns one restream's order, observed state, restart count, last error, backoff and retry timer,
    and its current `Attempt` (which owns the ffmpeg process)."""

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
        process_factory: ProcessFactory = push_process,
        policy: DestinationPolicy | None = None,
    ) -> None:
        self.spec = spec
        self._settings = settings
        self._hub_lookup = hub_lookup
        self._ffmpeg_path = ffmpeg_path
        self._clock = clock
        self._wall_clock = wall_clock
        self._on_status = on_status
        self._backoff = backoff
        self._process_factory = process_factory
        self._policy = policy
        """Checks where each attempt may connect (relay/policy.py); None: ffmpeg connects as the URI says."""
        self.order = Order.STOP
        self._state = PushState.IDLE
        self._since = wall_clock()
        self._restarts = 0
        self._overflows_before = 0
        """Skips to a keyframe in the attempts that ended (the running one's are on its subscriber)."""
        self._restart_next = False
        """The next launch is a restart (counted), not a first start."""
        self._last_error: str | None = None
        self._retry_timer: TimerHandle | None = None
        self._retry_at: float | None = None
        self._attempt: Attempt | None = None
        """The attempt under way."""
        self._previous: EndedAttempt | None = None
        """The last attempt that ended: the status keeps its figures and log tail (why did it fail?)."""
        self._behind_logged = False
        """Being behind live was logged (a warning) since the push last caught up."""

    # -- queries -------------------------------------------------------------------------------------

    @property
    def state(self) -> PushState:
        return self._state

    @property
    def busy(self) -> bool:
        """An attempt (ffmpeg process) is under way."""
        return self._attempt is not None

    @property
    def _log_prefix(self) -> str:
        return f"restream {self.spec.restream_id} ({mask_uri(self.spec.uri)})"

    def status(self) -> PushStatus:
        shown = EndedAttempt.of(self._attempt) if self._attempt is not None else self._previous
        p = shown.progress if shown is not None else None
        next_retry = None
        if self._retry_at is not None:
            next_retry = max(0.0, self._retry_at - self._clock.now())
        running = self._attempt if self._state is PushState.RUNNING else None
        tcp = running.transport.last if running is not None else None
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
            overflows=self._overflows_before + (self._attempt.subscriber.overflows if self._attempt else 0),
            last_error=self._last_error,
            acked_bitrate_kbps=running.transport.acked_bitrate_kbps() if running is not None else None,
            rtt_ms=tcp.rtt_us / 1000 if tcp is not None else None,
            retransmits=tcp.retransmits if tcp is not None else None,
            unacked_bytes=tcp.unacked_bytes if tcp is not None else None,
            send_window_bytes=tcp.send_window_bytes if tcp is not None else None,
            behind_live_seconds=self._behind_live_seconds(running) if running is not None else None,
            next_retry_seconds=next_retry,
            log_tail=shown.log_tail if shown is not None else (),
            srt=shown.link_stats if shown is not None else None,
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
        if self._attempt is not None:
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
        """End the current attempt and start again at once."""
        if self._attempt is not None:
            log.info("%s: restarting: %s", self._log_prefix, reason)
            self._request_stop(restart=True)
        elif self.order is Order.START:
            self._cancel_retry()
            self.sync()

    def retry_now(self) -> None:
        """Retry a failed or waiting push immediately (the user re-enabled it)."""
        self._backoff.reset()
        if self._state in (PushState.FAILED, PushState.RETRYING) and self._attempt is None:
            self._cancel_retry()
            self._launch("retry requested")

    def sync(self) -> None:
        """Align with the order and the stream's liveness; idempotent."""
        live = self._live()
        if self.order is Order.STOP:
            if self._attempt is not None:
                self._request_stop()
            return
        if self._attempt is not None:
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
        attempt = self._attempt
        if attempt is not None and attempt.task is not None:
            attempt.cancel_stall_watch()
            self._request_stop()
            await asyncio.shield(attempt.task)

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
        try:
            command = self._command(self.spec, hub)
        except (UnsupportedDestination, ValueError) as exc:
            # Nothing can be pushed to this definition: as good as refused by the destination.
            self._last_error = mask_secrets(str(exc), secrets_of(self.spec.uri))
            self._set_state(PushState.STARTING, reason)
            self._schedule_retry(Verdict(ExitKind.REFUSED))
            return
        if self._state in (PushState.RETRYING, PushState.FAILED) or self._restart_next:
            self._restarts += 1
        self._restart_next = False
        subscriber = hub.subscribe()
        spec = self.spec
        attempt = Attempt(
            lambda: self._open(spec, hub, command, subscriber),
            subscriber,
            self._clock.now(),
            self._settings.acked_window_seconds,
        )
        self._attempt = attempt
        self._set_state(PushState.STARTING, reason)
        attempt.task = asyncio.create_task(self._run(attempt))
        self._arm_stall(attempt)

    def _command(self, spec: PushSpec, hub: Hub, connect_to: IPAddress | None = None) -> PushCommand:
        return build_command(
            self._ffmpeg_path,
            spec.uri,
            hub.container or ContainerFormat.FLV,
            no_audio=spec.no_audio,
            no_audio_mode=spec.no_audio_mode,
            tls_verify=spec.tls_verify,
            video_codec=hub.info.video_codec,
            settings=self._settings.command,
            connect_to=connect_to,
        )

    async def _open(self, spec: PushSpec, hub: Hub, command: PushCommand, subscriber: Subscriber) -> PushProcess:
        """The attempt's process: with a policy, only once every address of the host passed it, and then
        pointed at the checked address (raises DestinationRefused or DestinationUnresolved)."""
        if self._policy is not None:
            destination = parse_destination(spec.uri, check_options=False)
            resolved = await self._policy.resolve(
                destination.host,
                destination.port,
                spec.client_id,
                socket_type=socket.SOCK_DGRAM if destination.scheme == "srt" else socket.SOCK_STREAM,
                timeout_seconds=self._settings.resolve_timeout_seconds,
            )
            command = self._command(spec, hub, connect_to=resolved.address_for(self._restarts))
        return self._process_factory(
            command.argv,
            subscriber,
            secrets_of(spec.uri),
            on_progress=self._on_progress,
            on_input_end=self._on_input_end,
            log_prefix=self._log_prefix,
            srt_output=command.srt_output,
        )

    async def _run(self, attempt: Attempt) -> None:
        await attempt.run(self._settings.stop_timeout_seconds)
        attempt.cancel_timers()
        self._attempt, self._previous = None, EndedAttempt.of(attempt)
        self._overflows_before += attempt.subscriber.overflows
        self._on_exit(attempt)

    def _request_stop(self, *, restart: bool = False) -> None:
        if self._attempt is None:
            return
        self._attempt.request_stop(restart=restart)
        if self._state in (PushState.STARTING, PushState.RUNNING):
            self._set_state(PushState.STOPPING, "stop requested")

    def _on_exit(self, attempt: Attempt) -> None:
        result = attempt.exit
        if result is not None:
            clean = is_clean_exit(result.returncode, stopped=result.stopped, killed=result.killed)
            log.info("%s: ffmpeg exited with %s%s", self._log_prefix, result.returncode, " (clean)" if clean else "")
        was_running = self._state is PushState.RUNNING or (
            self._state is PushState.STOPPING and attempt.progress is not None
        )
        verdict = classify_exit(
            attempt.end(order=self.order, live=self._live(), was_running=was_running, now=self._clock.now())
        )
        if verdict.error is not None:
            self._last_error = verdict.error
        if verdict.backoff is BackoffStep.RESET:
            self._backoff.reset()
        if verdict.next_state is PushState.STARTING:
            self._restart_next = True
            self._launch(verdict.kind.value)
        elif verdict.next_state in (PushState.RETRYING, PushState.FAILED):
            self._schedule_retry(verdict)
        else:
            self._set_state(verdict.next_state, verdict.kind.value)

    def _schedule_retry(self, verdict: Verdict) -> None:
        # The retry is set before the state: the status reported on entering retrying or failed (the
        # event feed's `restream.status`) says when the next try is.
        if verdict.backoff is BackoffStep.CAP:
            delay = self._backoff.cap_delay()
            state, reason = PushState.FAILED, f"refused by destination, retry in {delay:.1f}s"
        else:
            delay = self._backoff.next_delay(verdict.run_seconds, self._clock.now())
            state, reason = PushState.RETRYING, f"retry in {delay:.2f}s"
        self._retry_at = self._clock.now() + delay
        self._retry_timer = self._clock.call_later(delay, self._retry_due)
        self._set_state(state, reason)

    def _retry_due(self) -> None:
        self._retry_timer = None
        self._retry_at = None
        if self.order is Order.START and self._attempt is None:
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
        attempt = self._attempt
        if attempt is None:
            return  # cannot happen: a process's readers are reaped before its attempt ends
        attempt.record_progress(progress, self._clock.now())
        if (
            self._state is PushState.STARTING
            and progress.total_size_bytes > 0
            and (progress.out_time_us > 0 or progress.frame > 0)
        ):
            self._set_state(PushState.RUNNING, "output progress")
            attempt.stable_timer = self._clock.call_later(self._settings.stable_after_seconds, self._backoff.reset)
        else:
            self._on_status(self.spec.restream_id, self.status())

    def _on_input_end(self, cause: EndCause | None) -> None:
        # EOF is on its way to ffmpeg; a slow destination may still hold it up, so bound the end.
        if cause in (EndCause.OVERFLOW, EndCause.SOURCE_CHANGED):
            self._request_stop(restart=cause is EndCause.SOURCE_CHANGED and self.order is Order.START)

    def _arm_stall(self, attempt: Attempt) -> None:
        interval = max(0.25, self._settings.stall_timeout_seconds / 4)
        # With slack (relay.hub.clock): a stall is judged while input flows, so a publisher's read is there
        # to carry the check.
        attempt.stall_timer = self._clock.call_later(interval, lambda: self._check_stall(attempt), slack=interval)

    def _check_stall(self, attempt: Attempt) -> None:
        attempt.stall_timer = None
        if attempt is not self._attempt:
            return
        stalled_for = attempt.stalled_for(self._clock.now(), self._settings.stall_timeout_seconds)
        if stalled_for is None:
            self._arm_stall(attempt)
            return
        log.warning("%s: stalled: no output progress for %.0fs, killing ffmpeg", self._log_prefix, stalled_for)
        attempt.kill_for_stall(stalled_for)

    # -- the kernel's view of the connection, behind live ----------------------------------------------

    def transport_pid(self) -> int | None:
        """The pid whose TCP connection to sample: a running RTMP(S) push's ffmpeg; else None."""
        attempt = self._attempt
        if attempt is None or attempt.stop_requested or attempt.process is None:
            return None
        if self._state not in (PushState.STARTING, PushState.RUNNING) or self.spec.uri[:4].lower() != "rtmp":
            return None
        return attempt.process.pid

    def observe_transport(self, sample: TcpSample | None, now: float) -> None:
        """One sampling tick (the supervisor's): record the connection's sample, then act on a destination
        that acknowledges nothing (dead) or one too far behind live (`behind_policy`)."""
        attempt = self._attempt
        if attempt is None or attempt.stop_requested:
            return
        if sample is not None:
            attempt.transport.record(sample, now)
        settings = self._settings
        stalled_for = attempt.transport.ack_stalled_for(now)
        offered = attempt.subscriber.last_offer_at
        input_flowing = offered is not None and now - offered < settings.ack_stall_seconds
        if stalled_for >= settings.ack_stall_seconds and input_flowing:
            # The threshold, not the measured time (a sampling interval more): the message is the same each time.
            error = f"stalled: destination acknowledged nothing for {settings.ack_stall_seconds:g}s"
            log.warning("%s: %s, killing ffmpeg", self._log_prefix, error)
            attempt.kill_for_stall(stalled_for, error)
            return
        if self._state is not PushState.RUNNING:
            return
        behind = self._behind_live_seconds(attempt)
        if behind is None or behind <= settings.max_behind_seconds:
            self._behind_logged = False
            return
        skip = settings.behind_policy is BehindPolicy.SKIP
        if skip and attempt.subscriber.queued_seconds <= 0:
            return  # skipped already, nothing queued since: what is behind is in the kernel, bounded
        what = "skipped to a keyframe" if skip else "restarting"
        self._last_error = f"behind live by {behind:.1f}s (limit {settings.max_behind_seconds:g}s): {what}"
        # Once per spell: a link slower than the stream is behind at every keyframe, and says so in its status.
        log.log(logging.DEBUG if self._behind_logged else logging.WARNING, "%s: %s", self._log_prefix, self._last_error)
        self._behind_logged = True
        if skip:
            attempt.subscriber.skip_to_keyframe()
            self._on_status(self.spec.restream_id, self.status())
        else:
            self.restart("behind live")

    def _behind_live_seconds(self, attempt: Attempt) -> float | None:
        """Media waiting in our queue for this destination, plus what its socket holds unacknowledged
        converted to media time at this output's own bytes per media second (ffmpeg's total size over
        its output time), or, for an SRT destination the relay sends to itself, libsrt's send buffer (sent,
        not yet acknowledged, in ms). What ffmpeg holds between its stdin and its socket (a pipe buffer, a
        few packets) is not counted."""
        behind = attempt.subscriber.queued_seconds
        srt = attempt.process.link_stats if attempt.process is not None else None
        if srt is not None:
            behind += srt.send_buffer_ms / 1000
        tcp, progress = attempt.transport.last, attempt.progress
        if tcp is not None and progress is not None and progress.out_time_us > 0 and progress.total_size_bytes > 0:
            bytes_per_second = progress.total_size_bytes / (progress.out_time_us / 1_000_000)
            behind += tcp.unacked_bytes / bytes_per_second
        return round(behind, 2)

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
