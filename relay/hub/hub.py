"""The hub of one live stream: publisher sessions in, subscribers out.

State of the source, as one table (`TRANSITIONS`):

    IDLE ──open──▶ LIVE ──close(DROP)──▶ GRACE ──open──▶ RESUMING ──first media──▶ LIVE
      ▲              │                     │                 │  (same config: rebased, pushes kept;
      │              │ close(UNPUBLISH,    │ grace expired   │   changed: subscribers end, restart)
      └──────────────┴─ KICKED) ◀──────────┘ ◀───────────────┘

A second publisher opening while one is live takes over: the old session is treated as dropped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

from relay.hub.clock import Clock, TimerHandle
from relay.hub.framing import Framing, framing_for
from relay.hub.gop_cache import GopCache
from relay.hub.subscriber import Chunk, EndCause, Subscriber, SubscriberLimits
from relay.ingest.gate import EndReason, IngestSink, SourceType, StreamInfo, Transport
from relay.media.packets import ContainerFormat, MediaPacket
from relay.transitions import check_transition

log = logging.getLogger("relay.hub")


@dataclass(frozen=True, slots=True)
class HubSettings:
    """Bounds and timings of a hub; names carry units."""

    grace_period_seconds: float = 10.0
    """How long pushes survive a dropped publisher, waiting for it to come back."""
    gop_cache_max_bytes: int = 12 * 1024 * 1024
    resume_gap_ms: int = 33
    """FLV: the timestamp step inserted between the last packet before a drop and the first after."""
    subscriber: SubscriberLimits = field(default_factory=SubscriberLimits)


class HubState(StrEnum):
    IDLE = "idle"
    LIVE = "live"
    GRACE = "grace"
    """The publisher dropped; subscribers wait for it."""
    RESUMING = "resuming"
    """A publisher came back during the grace period; waiting for its codec configuration."""


class LiveEndReason(StrEnum):
    UNPUBLISHED = "unpublished"
    KICKED = "kicked"
    GRACE_EXPIRED = "grace_expired"
    HUB_CLOSED = "hub_closed"


@dataclass(frozen=True, slots=True)
class LiveStarted:
    stream_id: int
    container: ContainerFormat
    source_type: SourceType
    transport: Transport | None


@dataclass(frozen=True, slots=True)
class LiveEnded:
    stream_id: int
    reason: LiveEndReason


@dataclass(frozen=True, slots=True)
class PublisherDropped:
    """Still live: the pushes continue for `grace_period_seconds`."""

    stream_id: int
    grace_period_seconds: float


@dataclass(frozen=True, slots=True)
class SourceResumed:
    """A publisher came back with the same configuration; subscribers continue without a break."""

    stream_id: int
    timestamp_offset_ms: int


@dataclass(frozen=True, slots=True)
class SourceChanged:
    """A publisher came back with a different configuration; every subscriber was ended."""

    stream_id: int
    container: ContainerFormat
    source_type: SourceType


HubEvent = LiveStarted | LiveEnded | PublisherDropped | SourceResumed | SourceChanged

TRANSITIONS: dict[HubState, frozenset[HubState]] = {
    HubState.IDLE: frozenset({HubState.LIVE}),
    HubState.LIVE: frozenset({HubState.IDLE, HubState.GRACE, HubState.RESUMING}),
    HubState.GRACE: frozenset({HubState.IDLE, HubState.RESUMING}),
    HubState.RESUMING: frozenset({HubState.IDLE, HubState.LIVE, HubState.GRACE, HubState.RESUMING}),
}
"""The only legal changes of `Hub.state` (the diagram above); any other raises `IllegalTransition`."""


class _Session:
    """The IngestSink of one publisher connection; forwards to the hub while it is the current one.

    Its `framing` carries the stream when this session starts (or replaces) the source; a session that
    resumes the source only keeps its configuration there, to be compared with the source's.
    """

    def __init__(
        self,
        hub: Hub,
        container: ContainerFormat,
        source_type: SourceType,
        transport: Transport | None,
        framing: Framing,
    ) -> None:
        self._hub = hub
        self.container = container
        self.source_type = source_type
        self.transport = transport
        self.framing = framing
        self.closed = False

    def write(self, packet: MediaPacket) -> None:
        if not self.closed:
            self._hub._on_packet(self, packet)

    def update_info(self, info: StreamInfo) -> None:
        if not self.closed:
            self._hub._on_info(self, info)

    def close(self, reason: EndReason) -> None:
        if not self.closed:
            self.closed = True
            self._hub._on_session_closed(self, reason)


class Hub:
    """Owns one stream's live state: the current publisher session, the source's framing (its codec
    configuration and timestamps, relay.hub.framing), the GOP cache, the grace timer and the subscribers.

    `on_event` is called synchronously with each `HubEvent`; it must not call back into the hub's
    session methods (subscribing from it is fine).
    """

    def __init__(
        self,
        stream_id: int,
        settings: HubSettings,
        clock: Clock,
        on_event: Callable[[HubEvent], None],
    ) -> None:
        self.stream_id = stream_id
        self._settings = settings
        self._clock = clock
        self._on_event = on_event
        self._state = HubState.IDLE
        self._session: _Session | None = None
        self._container: ContainerFormat | None = None
        self._source_type: SourceType | None = None
        self._info = StreamInfo()
        self._framing: Framing | None = None
        """The framing of the current source; None while idle."""
        self._gop = GopCache(settings.gop_cache_max_bytes)
        self._subscribers: dict[int, Subscriber] = {}
        self._next_subscriber_id = 1
        self._grace_timer: TimerHandle | None = None

    # -- public -------------------------------------------------------------------------------------

    @property
    def state(self) -> HubState:
        return self._state

    @property
    def live(self) -> bool:
        """True from the first publisher until the stream ends (a dropped publisher's grace included)."""
        return self._state is not HubState.IDLE

    @property
    def container(self) -> ContainerFormat | None:
        return self._container

    @property
    def source_type(self) -> SourceType | None:
        return self._source_type

    @property
    def info(self) -> StreamInfo:
        return self._info

    @property
    def has_video(self) -> bool:
        return self._framing is not None and self._framing.has_video

    @property
    def gop_cache_bytes(self) -> int:
        return self._gop.size_bytes

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

    def open_session(
        self,
        container: ContainerFormat,
        source_type: SourceType,
        transport: Transport | None = None,
    ) -> IngestSink:
        """A publisher connection was accepted: return the sink for its media."""
        framing = framing_for(container, resume_gap_ms=self._settings.resume_gap_ms)
        session = _Session(self, container, source_type, transport, framing)
        old = self._session
        if old is not None and not old.closed:
            # A newcomer took over (the gate disconnects the old one): treat the old as dropped.
            old.closed = True
            self._on_session_closed(old, EndReason.DROP)
        self._session = session
        if self._state is HubState.IDLE:
            self._start_live(session)
        else:
            self._transition(HubState.RESUMING)
        return session

    def subscribe(self) -> Subscriber:
        """A new reader: it gets the container header, the codec configuration and the GOP at once."""
        sid = self._next_subscriber_id
        self._next_subscriber_id += 1
        sub = Subscriber(sid, self._settings.subscriber, self._clock, self._forget_subscriber)
        self._subscribers[sid] = sub
        if self._state is not HubState.IDLE:
            sub.offer_initial(self._header_chunks() + self._gop.chunks())
        else:
            sub.end(EndCause.SOURCE_LOST)
        return sub

    def close(self) -> None:
        """Shut the hub down (engine shutdown): the session is detached, subscribers end."""
        if self._session is not None:
            self._session.closed = True
        if self._state is not HubState.IDLE:
            self._end_live(LiveEndReason.HUB_CLOSED, EndCause.HUB_CLOSED)

    # -- session callbacks ----------------------------------------------------------------------------

    def _on_packet(self, session: _Session, packet: MediaPacket) -> None:
        if session is not self._session:
            return
        if self._state is HubState.RESUMING:
            self._resuming_packet(session, packet)
            return
        if self._state is not HubState.LIVE:
            return
        self._accept(packet)

    def _on_info(self, session: _Session, info: StreamInfo) -> None:
        if session is self._session:
            self._info = info

    def _on_session_closed(self, session: _Session, reason: EndReason) -> None:
        if session is not self._session:
            return
        self._session = None
        if reason is EndReason.DROP:
            if self._state in (HubState.LIVE, HubState.RESUMING):
                self._transition(HubState.GRACE)
                self._arm_grace_timer()
                log.info(
                    "stream %d: publisher dropped, grace %.1fs", self.stream_id, self._settings.grace_period_seconds
                )
                self._emit(PublisherDropped(self.stream_id, self._settings.grace_period_seconds))
            return
        cause = LiveEndReason.KICKED if reason is EndReason.KICKED else LiveEndReason.UNPUBLISHED
        self._end_live(cause, EndCause.UNPUBLISHED)

    # -- internals ----------------------------------------------------------------------------------

    def _transition(self, new: HubState) -> None:
        check_transition(TRANSITIONS, f"hub {self.stream_id}", self._state, new)
        log.debug("stream %d: %s -> %s", self.stream_id, self._state.value, new.value)
        self._state = new

    def _emit(self, event: HubEvent) -> None:
        self._on_event(event)

    def _start_live(self, session: _Session) -> None:
        self._transition(HubState.LIVE)
        self._start_source(session)
        log.info("stream %d: live (%s over %s)", self.stream_id, session.container.value, session.source_type.value)
        self._emit(LiveStarted(self.stream_id, session.container, session.source_type, session.transport))

    def _start_source(self, session: _Session) -> None:
        """The session's media becomes the source, with the configuration its framing kept so far."""
        self._container = session.container
        self._source_type = session.source_type
        self._framing = session.framing
        self._gop.clear()

    def _end_live(self, reason: LiveEndReason, cause: EndCause) -> None:
        self._cancel_grace_timer()
        self._transition(HubState.IDLE)
        self._end_subscribers(cause)
        self._framing = None
        self._gop.clear()  # a later session must never replay a stale GOP
        log.info("stream %d: live ended (%s)", self.stream_id, reason.value)
        self._emit(LiveEnded(self.stream_id, reason))

    def _end_subscribers(self, cause: EndCause) -> None:
        for sub in list(self._subscribers.values()):
            sub.end(cause)
        self._subscribers.clear()

    def _forget_subscriber(self, sub: Subscriber) -> None:
        self._subscribers.pop(sub.subscriber_id, None)
        if sub.end_cause is EndCause.OVERFLOW:
            # Its owner (the push) sees the end cause and restarts; the hub only says why.
            log.warning("stream %d: subscriber %d overflowed repeatedly, ended", self.stream_id, sub.subscriber_id)

    def _arm_grace_timer(self) -> None:
        self._cancel_grace_timer()
        self._grace_timer = self._clock.call_later(self._settings.grace_period_seconds, self._grace_expired)

    def _cancel_grace_timer(self) -> None:
        if self._grace_timer is not None:
            self._grace_timer.cancel()
            self._grace_timer = None

    def _grace_expired(self) -> None:
        self._grace_timer = None
        if self._state is HubState.GRACE:
            self._end_live(LiveEndReason.GRACE_EXPIRED, EndCause.SOURCE_LOST)
        elif self._state is HubState.RESUMING and self._session is not None:
            # The newcomer never proved the same configuration in time: start over with it.
            self._replace_source(self._session)

    def _resuming_packet(self, session: _Session, packet: MediaPacket) -> None:
        if packet.config:
            session.framing.keep_configuration(packet)
            return
        if not session.framing.ready_to_compare:
            return
        if self._same_source(session):
            self._resume(session, packet)
        else:
            self._replace_source(session)
        self._accept(packet)

    def _same_source(self, session: _Session) -> bool:
        if session.container is not self._container or session.source_type is not self._source_type:
            return False
        return self._framing is not None and self._framing.same_configuration(session.framing)

    def _resume(self, session: _Session, first: MediaPacket) -> None:
        assert self._framing is not None, "resuming without a source"
        self._cancel_grace_timer()
        self._transition(HubState.LIVE)
        offset = self._framing.resume(session.framing, first)
        log.info("stream %d: publisher resumed, timestamp offset %d ms", self.stream_id, offset)
        self._emit(SourceResumed(self.stream_id, offset))

    def _replace_source(self, session: _Session) -> None:
        self._cancel_grace_timer()
        self._transition(HubState.LIVE)
        self._end_subscribers(EndCause.SOURCE_CHANGED)
        self._start_source(session)
        log.info("stream %d: source changed, subscribers restart", self.stream_id)
        self._emit(SourceChanged(self.stream_id, session.container, session.source_type))

    def _accept(self, packet: MediaPacket) -> None:
        """A packet of the current source: framed (configuration kept), cached, fanned out."""
        assert self._framing is not None, "media without a source"
        chunk = self._framing.frame(packet)
        if not packet.config:
            self._gop.add(chunk, has_video=self._framing.has_video)
        for sub in list(self._subscribers.values()):
            sub.offer(chunk)

    def _header_chunks(self) -> list[Chunk]:
        assert self._framing is not None, "a header without a source"
        return self._framing.header_chunks()
