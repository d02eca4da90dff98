"""The engine: keeps media flowing as the definitions say.

It is the `PublishGate` behind every ingest server. It owns one hub per live stream and the push
supervisor, and delegates the rest: admission decides who may publish, the registry keeps the
sessions and meters, the supervisor runs the pushes (see docs/architecture.md):

    ingest server --open_publish--> Engine --open_session--> Hub <--subscribe-- push (Supervisor)

Definitions reach it through one seam, the store's change feed. Desired pushes are the active
restreams of active streams, read from the store on every change and every
`reconcile_interval_seconds`; the supervisor starts those whose stream is live.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime

import imageio_ffmpeg

from relay.config import Settings
from relay.engine.admission import Admission
from relay.engine.events import (
    EngineEvent,
    InputSwitched,
    RemoteRestreamChanged,
    RemoteStreamChanged,
    RestreamStateChanged,
    StreamInfoChanged,
    StreamLiveChanged,
)
from relay.engine.outage_log import OutageLog
from relay.engine.ownership import ClaimRefused, LocalOwnership, NoRemote, Ownership, RemoteView
from relay.engine.pulls import PullPlan, pulled
from relay.engine.pushes import PushPlan
from relay.engine.registry import LiveRegistry, LiveSession
from relay.engine.sink import SessionSink
from relay.engine.slots import PushSlots, Waiting
from relay.engine.status import RestreamStatus, StreamSnapshot, StreamState
from relay.hub.clock import LoopClock
from relay.hub.events import (
    HubEvent,
    HubSettings,
    HubState,
    LiveEnded,
    LiveStarted,
    PublisherDropped,
    SourceChanged,
    SourceResumed,
)
from relay.hub.events import InputSwitched as HubInputSwitched
from relay.hub.hub import Hub
from relay.ingest.gate import (
    EndReason,
    IngestSink,
    PublisherHandle,
    PublishRefused,
    PublishRequest,
    RefusalReason,
    SourceType,
    StreamInfo,
    StreamInput,
    Transport,
)
from relay.keys import ADMIN_CLIENT_ID
from relay.media.packets import ContainerFormat
from relay.policy import DestinationPolicy, parse_rules
from relay.pull.process import PullProcess
from relay.pull.runner import ProcessFactory as PullProcessFactory
from relay.pull.runner import PullSettings
from relay.push.command import CommandSettings
from relay.push.srt_process import push_process
from relay.push.tcp_diag import SockDiagProbe
from relay.store.base import Store
from relay.store.changes import Change, StreamChanged
from relay.store.models import RestreamRecord, StreamRecord
from relay.supervisor.attempt import ProcessFactory
from relay.supervisor.settings import BehindPolicy, SupervisorSettings
from relay.supervisor.states import PushState, PushStatus
from relay.supervisor.supervisor import Supervisor
from relay.supervisor.transport import TransportProbe

log = logging.getLogger("relay.engine")

EventListener = Callable[[EngineEvent], None]


def supervisor_settings(settings: Settings) -> SupervisorSettings:
    """The pushes' settings an operator can change (the rest are the supervisor's defaults)."""
    return SupervisorSettings(
        ack_stall_seconds=settings.push_ack_stall_seconds,
        max_behind_seconds=settings.push_max_behind_seconds,
        behind_policy=BehindPolicy(settings.push_behind_policy),
        command=CommandSettings(
            tcp_send_buffer_bytes=settings.push_send_buffer_bytes or None,
            srt_push=settings.srt_push,
            srt_peer_idle_timeout_ms=settings.srt_push_peer_idle_timeout_ms,
        ),
    )


class Engine:
    """Owns the hubs, the supervisor and the live registry; answers what the API asks of live state."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        *,
        clock: Callable[[], float] = time.monotonic,
        process_factory: ProcessFactory = push_process,
        pull_process_factory: PullProcessFactory = PullProcess,
        transport_probe: TransportProbe | None = None,
        ownership: Ownership | None = None,
        remote: RemoteView | None = None,
    ) -> None:
        """`transport_probe`: how push connections are read (default: the kernel's sock_diag)."""
        self.settings = settings
        self.ownership: Ownership = ownership or LocalOwnership(settings.resolved_node_id)
        """Which streams this node may run (a lease each when several nodes share PostgreSQL)."""
        self.ownership.on_lost(self._on_lost)
        self.remote: RemoteView = remote or NoRemote()
        """Streams and restreams other nodes run, as they publish them (the API shows them)."""
        self.store = store
        self.registry = LiveRegistry(clock)
        self.admission = Admission(store, self.registry.publisher_of, settings.takeover_idle_seconds)
        self._hubs: dict[int, Hub] = {}
        self._hub_settings = HubSettings(
            grace_period_seconds=settings.publisher_grace_seconds,
            input_silence_seconds=settings.input_switch_silence_seconds,
            merge_interval_seconds=settings.merge_interval_ms / 1000,
        )
        ffmpeg_path = settings.ffmpeg_path or imageio_ffmpeg.get_ffmpeg_exe()
        push_ffmpeg_path = settings.push_ffmpeg_path or ffmpeg_path
        self.destination_policy = DestinationPolicy(
            ADMIN_CLIENT_ID, parse_rules(settings.destination_allow), parse_rules(settings.destination_deny)
        )
        """Where each client may push (the API checks new URIs with it, each push start its addresses)."""
        self.supervisor = Supervisor(
            supervisor_settings(settings),
            self._hubs.get,
            push_ffmpeg_path,
            LoopClock(),
            self._on_push_status,
            process_factory=process_factory,
            policy=self.destination_policy,
            transport_probe=transport_probe or SockDiagProbe(),
        )
        self.limits = limits = settings.limits()
        slots = PushSlots(limits.node_pushes, lambda client_id: limits.of(client_id).pushes)
        self.pushes = PushPlan(self.supervisor, slots, self.is_live, self._on_waiting)
        pull_settings = PullSettings(
            retry_max_delay_seconds=settings.pull_retry_max_delay_seconds,
            stall_timeout_seconds=settings.pull_stall_timeout_seconds,
        )
        self.pulls = PullPlan(
            self._open_pulled,
            self.destination_policy,
            ffmpeg_path,
            pull_settings,
            process_factory=pull_process_factory,
        )
        """The streams the relay feeds itself (`pull: true`), as publishers of their hubs."""
        self._push_states: dict[int, PushState] = {}
        self._listeners: list[EventListener] = []
        self._reconcile_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self._unsubscribe_store: Callable[[], None] | None = None
        self._closed = False

    # Observers --------------------------------------------------------------------------------
    def subscribe(self, listener: EventListener) -> Callable[[], None]:
        """Call `listener` with every engine event (in the loop); returns the call that stops it."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def emit_remote(self, event: RemoteStreamChanged | RemoteRestreamChanged) -> None:
        """Hand another node's status change to this node's observers (the cluster's view calls it)."""
        self._emit(event)

    def client_of(self, stream_id: int) -> int | None:
        """The client of a stream that published here since start-up."""
        return self.registry.client_of(stream_id)

    def client_of_restream(self, restream_id: int) -> int | None:
        """The client of a wanted restream."""
        return self.pushes.client_of(restream_id)

    def _emit(self, event: EngineEvent) -> None:
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:  # an observer's bug must not break publishing
                log.exception("event listener failed")

    def _emit_live(self, stream_id: int, reason: str | None = None) -> None:
        client_id = self.registry.client_of(stream_id)
        if client_id is not None:
            backup_live = self.registry.current(stream_id, StreamInput.BACKUP) is not None
            live, state = self.is_live(stream_id), self._stream_state(stream_id)
            self._emit(StreamLiveChanged(client_id, stream_id, live, state, reason, backup_live))

    # PublishGate ------------------------------------------------------------------------------
    async def open_publish(self, request: PublishRequest) -> IngestSink:
        admitted = await self.admission.admit(request)
        stream = admitted.stream
        stream_input = admitted.input
        transport = request.publisher.transport
        try:
            await self.ownership.claim(stream.id, takeover_idle_seconds=self.settings.takeover_idle_seconds)
        except ClaimRefused as refused:
            self.admission.refused(transport, refused.reason)
            raise
        if self._closed or (admitted.replaces is None and self.registry.publisher_of(stream.id, stream_input)):
            # Another publisher of this input came in while the claim was on its way.
            self.admission.refused(transport, RefusalReason.ALREADY_LIVE)
            raise PublishRefused(RefusalReason.ALREADY_LIVE, f"stream {stream.id} already has a publisher")
        if admitted.replaces is not None:
            log.warning(
                "stream %d: %s publisher silent for %.1f s, the newcomer takes over",
                stream.id,
                stream_input.value,
                admitted.replaces.idle_seconds(),
            )
            self._disconnect(stream.id, stream_input, EndReason.KICKED, ended_as=EndReason.DROP)
            # DROP towards the registry: the newcomer's session replaces this one as a reconnect would.
        source_type = SourceType.SRT if transport is Transport.SRT else SourceType.RTMP
        return self._open_session(
            stream.id, stream.client_id, request.publisher, request.container, source_type, stream_input
        )

    def _open_pulled(
        self, stream_id: int, client_id: int, publisher: PublisherHandle, source_type: SourceType
    ) -> IngestSink:
        """The session of a pulled source (relay/pull/): the engine started the pull itself, so no key is
        checked; it feeds the hub as the stream's main input, as a publisher does."""
        if self._closed:
            raise PublishRefused(RefusalReason.UNAVAILABLE, "relay is shutting down")
        if self.registry.current(stream_id) is not None:
            # A publisher from before the stream was switched to pull: the pull takes over, as a reconnect.
            self._disconnect(stream_id, StreamInput.MAIN, EndReason.KICKED, ended_as=EndReason.DROP)
        return self._open_session(stream_id, client_id, publisher, ContainerFormat.FLV, source_type, StreamInput.MAIN)

    def _open_session(
        self,
        stream_id: int,
        client_id: int,
        publisher: PublisherHandle,
        container: ContainerFormat,
        source_type: SourceType,
        stream_input: StreamInput,
    ) -> IngestSink:
        transport = publisher.transport
        session = LiveSession(
            stream_id=stream_id,
            client_id=client_id,
            source_type=source_type,
            started_at=datetime.now(UTC),
            publisher=publisher,
            input=stream_input,
        )
        self.registry.open(session)
        # Without leases (one node) nothing is asked per packet or per write: the answers never change.
        leased = self.ownership.leased
        hub = self._hubs.get(stream_id)
        if hub is None:
            hub = Hub(
                stream_id,
                self._hub_settings,
                LoopClock(),
                self._on_hub_event,
                may_deliver=functools.partial(self._may_deliver, stream_id) if leased else None,
            )
            self._hubs[stream_id] = hub
        log.info(
            "stream %d live from %s via %s (%s input)", stream_id, publisher.peer, transport.value, stream_input.value
        )
        hub_sink = hub.open_session(container, source_type, transport, stream_input)
        self._emit_live(stream_id)
        may_write = self._may_write if leased else None
        return SessionSink(
            session, hub_sink, self.registry, self._info_changed, self._session_ended, may_write=may_write
        )

    def _may_write(self, stream_id: int) -> bool:
        """Per packet: the stream's lease is still provable. When not, the packet goes nowhere and the
        stream is dropped as lost before anything else runs (a node frozen past its deadline, resumed)."""
        if self.ownership.media(stream_id):
            return True
        asyncio.get_running_loop().call_soon(self._on_lost, stream_id)
        return False

    def _may_deliver(self, stream_id: int) -> bool:
        """Right before bytes of the stream leave for a push: the lease has not lapsed unnoticed. A node
        frozen past its deadline resumes with callbacks already due (a write armed before the freeze)
        that run before the lease's timers: they must send nothing (`_may_write` guards what comes in)."""
        if not self.ownership.lapsed(stream_id):
            return True
        asyncio.get_running_loop().call_soon(self._on_lost, stream_id)
        return False

    def _on_lost(self, stream_id: int) -> None:
        """The lease is gone (taken over, expired, not provable in time): publishers, pull and pushes end
        now. `is_live` is already false, so no push of the stream is placed again."""
        running = self.registry.sessions(stream_id) or stream_id in self._hubs or self.pulls.status(stream_id)
        if self._closed or not running:
            return
        log.warning("stream %d: this node lost its lease, its publishers and pushes end", stream_id)
        self.pulls.set(stream_id, None, reason=EndReason.KICKED)
        hub = self._hubs.get(stream_id)
        if hub is not None and hub.live:
            hub.close(discard=True)  # before the publishers go: nothing queued reaches a destination
        self.end_stream(stream_id)
        self._place_stream(stream_id)

    def _release_if_idle(self, stream_id: int) -> None:
        """Give the lease up once nothing of the stream runs here (no publisher, no held hub, no pull)."""
        hub = self._hubs.get(stream_id)
        if self.registry.sessions(stream_id) or (hub is not None and hub.live) or self.pulls.status(stream_id):
            return
        if stream_id in self.ownership.owned():
            self.ownership.release(stream_id)

    def _info_changed(self, session: LiveSession, info: StreamInfo) -> None:
        self._emit(StreamInfoChanged(session.client_id, session.stream_id, info))

    def _session_ended(self, session: LiveSession, reason: EndReason) -> None:
        if self.registry.end(session):
            log.info("stream %d %s publishing ended (%s)", session.stream_id, session.input.value, reason.value)
            self._place_stream(session.stream_id)  # not live any more unless the hub holds it (grace)
            self._emit_live(session.stream_id, reason.value)
            self._release_if_idle(session.stream_id)

    def _disconnect(self, stream_id: int, stream_input: StreamInput, reason: EndReason, *, ended_as: EndReason) -> None:
        session = self.registry.current(stream_id, stream_input)
        if session is not None and session.publisher is not None:
            session.publisher.disconnect(reason)
            self._session_ended(session, ended_as)

    # Hub and push events ----------------------------------------------------------------------
    def _on_hub_event(self, event: HubEvent) -> None:
        stream_id = event.stream_id
        if isinstance(event, LiveStarted):
            self._place_stream(stream_id)
        elif isinstance(event, LiveEnded):
            # The hub is idle with an empty GOP cache; dropping it guarantees no stale replay later.
            hub = self._hubs.get(stream_id)
            if hub is not None and hub.state is HubState.IDLE:
                del self._hubs[stream_id]
            log.info("stream %d: pushes end (%s)", stream_id, event.reason.value)
            self._place_stream(stream_id)
            self._emit_live(stream_id, event.reason.value)
            self._release_if_idle(stream_id)
        elif isinstance(event, PublisherDropped):
            log.info("stream %d: holding destinations for %.0f s", stream_id, event.grace_period_seconds)
        elif isinstance(event, SourceResumed):
            log.info(
                "stream %d: publisher back, destinations continue (offset %d ms)", stream_id, event.timestamp_offset_ms
            )
        elif isinstance(event, SourceChanged):
            log.info("stream %d: publisher back with another configuration, pushes restart", stream_id)
        elif isinstance(event, HubInputSwitched):
            log.info(
                "stream %d: the %s input feeds the destinations (%s)", stream_id, event.to.value, event.reason.value
            )
            self.registry.count_switch(stream_id)
            client_id = self.registry.client_of(stream_id)
            if client_id is not None:
                self._emit(InputSwitched(client_id, stream_id, event.to, event.reason.value, event.restarted))

    def _on_push_status(self, restream_id: int, status: PushStatus) -> None:
        previous = self._push_states.get(restream_id)
        self._push_states[restream_id] = status.state
        if previous is status.state:
            return  # progress ticks arrive every second; observers get state changes
        client_id = self.pushes.client_of(restream_id)
        if client_id is not None:
            self._emit(RestreamStateChanged(client_id, status.stream_id, restream_id, RestreamStatus.of_push(status)))
        if status.state is PushState.DISABLED and not self.pushes.wanted(restream_id):
            # Its last word said: forget the push, or every restream ever deleted stays here (the soak's
            # API churn found ~100 bytes per created and deleted restream that were never freed).
            del self._push_states[restream_id]
            self.pushes.forget(restream_id)

    def _on_waiting(self, client_id: int, stream_id: int, restream_id: int, waiting: Waiting) -> None:
        log.info("restream %d: %s", restream_id, waiting.reason)
        self._push_states[restream_id] = PushState.WAITING
        self._emit(RestreamStateChanged(client_id, stream_id, restream_id, RestreamStatus.waiting(waiting)))

    def _place_stream(self, stream_id: int) -> None:
        if not self._closed:
            self.pushes.place_stream(stream_id)

    # What the API asks ------------------------------------------------------------------------
    def is_live(self, stream_id: int) -> bool:
        """A publisher is connected, or one dropped and the destinations are held for its return; and this
        node holds the stream's lease (only the lease holder runs pushes)."""
        hub = self._hubs.get(stream_id)
        running = bool(self.registry.sessions(stream_id)) or (hub is not None and hub.live)
        return running and self.ownership.owns(stream_id)

    def live_count(self) -> int:
        return sum(1 for stream_id in set(self.registry.publishing()) | set(self._hubs) if self.is_live(stream_id))

    def _stream_state(self, stream_id: int) -> StreamState:
        if self.registry.sessions(stream_id):
            return StreamState.LIVE
        return StreamState.RECONNECTING if self.is_live(stream_id) else StreamState.OFFLINE

    def feeding_input(self, stream_id: int) -> StreamInput | None:
        """The input feeding the stream's destinations (or held for), None while the stream is offline."""
        hub = self._hubs.get(stream_id)
        if hub is not None and hub.input is not None:
            return hub.input
        sessions = self.registry.sessions(stream_id)
        return sessions[0].input if sessions else None

    def stream_snapshot(self, stream_id: int) -> StreamSnapshot:
        live = self.is_live(stream_id)
        feeding = self.feeding_input(stream_id) if live else None
        main = self.registry.latest(stream_id, StreamInput.MAIN)
        backup = self.registry.latest(stream_id, StreamInput.BACKUP)
        source = self.registry.latest(stream_id, feeding) if feeding is not None else None
        return StreamSnapshot(
            stream_id=stream_id,
            live=live,
            source_type=source.source_type if source is not None else None,
            info=source.info if source is not None else None,
            started_at=main.started_at if main is not None else None,
            finished_at=main.finished_at if main is not None else None,
            status=self.registry.ingest_status(stream_id, self._stream_state(stream_id), feeding or StreamInput.MAIN),
            backup_live=self.registry.current(stream_id, StreamInput.BACKUP) is not None,
            input=feeding,
            started_at_backup=backup.started_at if backup is not None else None,
            finished_at_backup=backup.finished_at if backup is not None else None,
            input_switches=self.registry.switches(stream_id),
            pull=self.pulls.status(stream_id),
        )

    def restream_status(self, restream: RestreamRecord) -> RestreamStatus:
        """The push's observed state; a restream that is not supervised has no push and no `since`."""
        status = RestreamStatus.of_push(self.supervisor.status(restream.id))
        if not restream.active:
            return replace(status, state=PushState.DISABLED, since=None)
        waiting = self.pushes.waiting(restream.id)
        if waiting is not None:
            return RestreamStatus.waiting(waiting)
        if not self.pushes.wanted(restream.id) and status.state is PushState.DISABLED:
            return replace(status, state=PushState.IDLE, since=None)  # its stream is inactive
        return status

    def push_status(self, restream_id: int) -> RestreamStatus | None:
        """The push of a wanted restream (active, of an active stream), as `restream_status` shows it."""
        if not self.pushes.wanted(restream_id):
            return None
        waiting = self.pushes.waiting(restream_id)
        return (
            RestreamStatus.waiting(waiting)
            if waiting is not None
            else RestreamStatus.of_push(self.supervisor.status(restream_id))
        )

    def restreams_of(self, stream_id: int) -> list[int]:
        """The wanted restreams of a stream."""
        return self.pushes.of_stream(stream_id)

    # Definition changes (the store's change feed) ---------------------------------------------
    async def _on_change(self, change: Change) -> None:
        """Act on one definition change, touching only the pushes it concerns."""
        async with self._reconcile_lock:
            if self._closed:
                return
            if isinstance(change, StreamChanged):
                after, before = change.after, change.before
                self.pulls.set(change.stream_id, after if await self._may_pull(after) else None)
                if after is not None and after.active and pulled(before) and not pulled(after):
                    self.end_stream(change.stream_id)  # not pulled any more: a held grace period ends too
                if after is None or not after.active:
                    self.end_stream(change.stream_id)  # deleted or deactivated: refuse and stop at once
                    self.pushes.drop_stream(change.stream_id)
                    if after is None:
                        self.registry.forget(change.stream_id)
                elif before is not None and not before.active:  # switched on: its restreams are wanted again
                    for active in await self.store.active_restreams(change.stream_id):
                        self.pushes.set(active.id, active)
                if after is not None and before is not None and after.token != before.token:
                    self.end_stream(change.stream_id)  # its publishers came in on a token that is gone
                self._release_if_idle(change.stream_id)
                return
            record, previous = change.after, change.before
            stream = await self.store.get_stream(record.stream_id) if record is not None else None
            wanted = record is not None and record.active and stream is not None and stream.active
            self.pushes.set(change.restream_id, record if wanted else None)
            if record is not None and wanted and (previous is None or not previous.active):
                self.supervisor.retry_now(record.id)  # switched on: no waiting out a backoff

    def end_stream(self, stream_id: int) -> None:
        """Disconnect every publisher of the stream, whichever input it came in on, and end the pushes at
        once: no grace, the stream is gone, off, or its token was reset (an encoder given the new token
        starts them again)."""
        for stream_input in StreamInput:
            self._disconnect(stream_id, stream_input, EndReason.KICKED, ended_as=EndReason.KICKED)
        hub = self._hubs.get(stream_id)
        if hub is not None and hub.live:
            hub.close()

    async def reconcile(self) -> None:
        """The full pass: read every wanted push from the store and bring the supervisor in line.

        At start and every `reconcile_interval_seconds`, as a safety net behind the change feed."""
        async with self._reconcile_lock:
            records = await self.store.active_restreams()
            streams = await self.store.all_streams()
            mine = [stream for stream in streams if not pulled(stream) or await self._may_pull(stream)]
            if not self._closed:
                self.pushes.replace_all(records)
                self.pulls.replace_all(mine)

    async def _may_pull(self, stream: StreamRecord | None) -> bool:
        """A pulled stream is pulled by one node: the one holding its lease, claimed first come (a live
        lease is never taken over; an expired one, a dead node's, is)."""
        if stream is None or not pulled(stream):
            return False
        if self.ownership.owns(stream.id):
            return True
        remote = self.remote.stream(stream.id)
        if remote is not None and remote.live:
            return False  # pulled by its owner, whose lease is valid: no claim to send
        try:
            await self.ownership.claim(stream.id, takeover_idle_seconds=None)
        except ClaimRefused:
            return False
        return not self._closed

    async def _reconcile_periodically(self) -> None:
        interval = self.settings.reconcile_interval_seconds
        outage = OutageLog(log, "periodic reconcile", interval)
        while True:
            await asyncio.sleep(interval)
            try:
                await self.reconcile()
            except Exception as exc:  # the store may be locked or away for a while; next round retries
                outage.failed(exc)
            else:
                outage.succeeded()

    # Lifecycle --------------------------------------------------------------------------------
    async def start(self) -> None:
        """Follow the store's changes and bring the pushes in line with the definitions."""
        self._unsubscribe_store = self.store.changes.subscribe(self._on_change)
        await self.ownership.start()
        await self.reconcile()
        task = asyncio.get_running_loop().create_task(self._reconcile_periodically(), name="reconcile")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """Refuse publishers, end every publishing session and hub, then stop every push. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self.admission.stop_accepting()
        if self._unsubscribe_store is not None:
            self._unsubscribe_store()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for stream_id in self.registry.publishing():
            self.end_stream(stream_id)
        await self.pulls.close()
        for hub in list(self._hubs.values()):
            hub.close()
        await self.supervisor.close()
        await self.ownership.close()  # after the pushes stopped: leases are given up last
