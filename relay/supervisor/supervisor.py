"""The supervisor: reconciles wanted pushes with running ones."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Iterable

from relay.hub.clock import Clock, TimerHandle
from relay.hub.hub import Hub
from relay.policy import DestinationPolicy
from relay.push.srt_process import push_process
from relay.supervisor.attempt import ProcessFactory
from relay.supervisor.backoff import Backoff
from relay.supervisor.push_runner import PushRunner
from relay.supervisor.settings import SupervisorSettings
from relay.supervisor.states import Order, PushSpec, PushState, PushStatus
from relay.supervisor.transport import TransportProbe

log = logging.getLogger("relay.supervisor")


class Supervisor:
    """Owns one PushRunner per known restream (and through them every ffmpeg child).

    `apply` brings one push in line with its wanted spec (the engine calls it for each restream a change
    touches: added, toggled, edited, removed, its stream going live or not); `reconcile` does it for all
    (the engine's periodic safety net). Both are idempotent. Each runner starts, stops or restarts its
    own push without touching the others. `process_factory` makes each attempt's process: `push_process`
    (ffmpeg, and for SRT destinations the relay's own caller) unless a test passes an in-memory fake.
    `policy` decides where each push may connect (the engine passes the node's; without one, ffmpeg
    connects wherever the URI says).
    `transport_probe` reads, once per `transport_sample_interval_seconds` and for all pushes at once,
    the kernel's view of each RTMP(S) push's connection (`SockDiagProbe`; None: not watched).
    """

    def __init__(
        self,
        settings: SupervisorSettings,
        hub_lookup: Callable[[int], Hub | None],
        ffmpeg_path: str,
        clock: Clock,
        on_status: Callable[[int, PushStatus], None],
        *,
        wall_clock: Callable[[], float] = time.time,
        rand: Callable[[], float] = random.random,
        process_factory: ProcessFactory = push_process,
        policy: DestinationPolicy | None = None,
        transport_probe: TransportProbe | None = None,
    ) -> None:
        self._settings = settings
        self._hub_lookup = hub_lookup
        self._ffmpeg_path = ffmpeg_path
        self._clock = clock
        self._on_status = on_status
        self._wall_clock = wall_clock
        self._rand = rand
        self._process_factory = process_factory
        self._policy = policy
        self._runners: dict[int, PushRunner] = {}
        self._closed = False
        self._probe = transport_probe
        self._sample_timer: TimerHandle | None = None
        self._sampling: asyncio.Task[None] | None = None
        """The tick under way (a probe's dump reads the kernel off the loop, in a worker thread)."""
        if transport_probe is not None:
            self._arm_sampling()

    def _arm_sampling(self) -> None:
        # With slack: a tick rides the wake of a publisher's read (relay.hub.clock), and a push is sampled only
        # while its stream's media flows, so the ticks that matter are never late by more than a read's
        # interval. Two wake-ups a second of its own cost ~0.05 CPU s/min of the relay process at one push
        # (bench.relay_ab, N=1: with sampling and without).
        interval = self._settings.transport_sample_interval_seconds
        self._sample_timer = self._clock.call_later(interval, self._tick, slack=interval)

    def _tick(self) -> None:
        self._sample_timer = None
        if self._closed:
            return
        if self._sampling is None or self._sampling.done():
            self._sampling = asyncio.create_task(self._sample())
        self._arm_sampling()

    async def _sample(self) -> None:
        """One tick: every watched push's connection in one probe call (one sock_diag dump per family)."""
        assert self._probe is not None
        pids = {rid: pid for rid, runner in self._runners.items() if (pid := runner.transport_pid()) is not None}
        if not pids:
            return
        try:
            samples = await self._probe.sample(set(pids.values()))
        except OSError as exc:
            log.warning("cannot read the push connections (sock_diag): %s", exc)
            samples = {}
        now = self._clock.now()
        for rid, pid in pids.items():
            runner = self._runners.get(rid)
            if runner is not None and runner.transport_pid() == pid:  # still the same process
                runner.observe_transport(samples.get(pid), now)

    def reconcile(self, desired: Iterable[PushSpec]) -> None:
        """Make the running pushes match `desired` (the active restreams) and the streams' liveness."""
        wanted = {spec.restream_id: spec for spec in desired}
        for restream_id in [rid for rid in self._runners if rid not in wanted]:
            self.apply(restream_id, None)
        for restream_id, spec in wanted.items():
            self.apply(restream_id, spec)

    def apply(self, restream_id: int, spec: PushSpec | None) -> None:
        """Bring one push in line: run `spec` while its stream is live, or (None) stop it. Touches no other."""
        if self._closed:
            return
        runner = self._runners.get(restream_id)
        if spec is None:
            if runner is not None:
                if runner.order is Order.START:
                    runner.stop()
                if runner.state is PushState.DISABLED and not runner.busy:
                    del self._runners[restream_id]
            return
        if runner is None:
            runner = PushRunner(
                spec,
                self._settings,
                self._hub_lookup,
                self._ffmpeg_path,
                self._clock,
                self._wall_clock,
                self._on_status,
                Backoff(self._settings, self._rand),
                self._process_factory,
                self._policy,
            )
            self._runners[restream_id] = runner
        else:
            runner.update_spec(spec)
        if runner.order is not Order.START:
            runner.start()
        else:
            runner.sync()

    def status(self, restream_id: int) -> PushStatus:
        """The push's status; an unknown restream is reported as disabled."""
        runner = self._runners.get(restream_id)
        if runner is None:
            return PushStatus(restream_id=restream_id, state=PushState.DISABLED, since=self._wall_clock())
        return runner.status()

    def statuses(self) -> dict[int, PushStatus]:
        return {rid: runner.status() for rid, runner in self._runners.items()}

    def retry_now(self, restream_id: int) -> None:
        """Retry a failed or backing-off push at once (e.g. the user toggled `active`)."""
        runner = self._runners.get(restream_id)
        if runner is not None:
            runner.retry_now()

    async def close(self) -> None:
        """Stop every push and wait until every ffmpeg child is reaped."""
        self._closed = True
        if self._sample_timer is not None:
            self._sample_timer.cancel()
            self._sample_timer = None
        if self._sampling is not None:
            self._sampling.cancel()
            await asyncio.gather(self._sampling, return_exceptions=True)
            self._sampling = None
        runners = list(self._runners.values())
        results = await asyncio.gather(*(r.close() for r in runners), return_exceptions=True)
        for runner, result in zip(runners, results, strict=True):
            if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
                log.error("restream %d: error while closing: %r", runner.spec.restream_id, result)
        self._runners.clear()
