"""The hub of one live stream: publisher sessions in (a main and a backup input), subscribers out.

State of the source, as one table (`TRANSITIONS`):

    IDLE ──open──▶ LIVE ──feeding input ends, none left (DROP)──▶ GRACE ──open──▶ RESUMING
      ▲             │  ▲                                             │              │
      │             │  └──────── an input's first keyframe ──────────┼──────────────┘
      │             │  (same config: rebased, pushes kept; changed: subscribers end, restart)
      │             └── feeding input ends, another still open ──▶ RESUMING
      └────── close(UNPUBLISH, KICKED) with no input left; grace expired ◀──┘

One input feeds the subscribers at a time (`input`); the other, when it publishes too, is a standby:
its configuration is kept and its packets since its last keyframe held (bounded), never sent. The
feeding input changes without a state change (still LIVE) when:

- it is silent (no media for `input_silence_seconds`) and the standby has a keyframe that arrived
  after the last packet fed (held already, or its next one): reason `silent`;
- the preferred input (main) sends a keyframe while the other feeds: reason `preferred`;
and through RESUMING when it ends while the other is open (reason `dropped`): the other takes over at
its held keyframe if that came after the last packet fed, else at its next one.

A switch between inputs keeps every subscriber when the codecs are the same (FLV timestamps rebased
to continue, sequence headers that differ sent again inline); otherwise (another codec, MPEG-TS vs
FLV, other PAT/PMT) the subscribers end with SOURCE_CHANGED and the pushes restart. A publisher
returning on the same input keeps the older, stricter rule: the same configuration, or a restart.
A second publisher on the same input takes over: the old session is treated as dropped.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

from relay.hub.clock import Clock, TimerHandle
from relay.hub.events import (
    HubEvent,
    HubSettings,
    HubState,
    InputSwitched,
    LiveEnded,
    LiveEndReason,
    LiveStarted,
    PublisherDropped,
    SourceChanged,
    SourceResumed,
    SwitchReason,
)
from relay.hub.framing import Framing, framing_for
from relay.hub.gop_cache import GopCache
from relay.hub.inputs import InputSession
from relay.hub.subscriber import Chunk, EndCause, Subscriber
from relay.ingest.gate import EndReason, IngestSink, SourceType, StreamInfo, StreamInput, Transport
from relay.media.packets import ContainerFormat, MediaKind, MediaPacket
from relay.transitions import check_transition

log = logging.getLogger("relay.hub")

_MERGE_EARLY_SECONDS = 0.002
"""A merged write this close to its due time goes at once, not on a timer of its own."""


TRANSITIONS: dict[HubState, frozenset[HubState]] = {
    HubState.IDLE: frozenset({HubState.LIVE}),
    HubState.LIVE: frozenset({HubState.IDLE, HubState.GRACE, HubState.RESUMING}),
    # LIVE -> RESUMING: the feeding input ended while the other publishes (it takes over at a keyframe).
    HubState.GRACE: frozenset({HubState.IDLE, HubState.RESUMING}),
    HubState.RESUMING: frozenset({HubState.IDLE, HubState.LIVE, HubState.GRACE, HubState.RESUMING}),
}
"""The only legal changes of `Hub.state` (the diagram above); any other raises `IllegalTransition`."""


class WriteBatch:
    """A publisher's read as one batch for the fan-out (`IngestSink.batch`): the chunks its packets give
    each subscriber are written when the outermost batch ends, in one write per subscriber, instead of on
    the loop's next turn. That turn was a whole extra loop turn (an `epoll_wait` and a timer) for every
    read: 150 -> 105 `epoll_wait` a second in the relay's main thread at 16 destinations (`strace -c`).
    Reentrant; the write happens even when the batch ends by an exception."""

    __slots__ = ("_depth", "_on_end", "merged_read")

    def __init__(self, on_end: Callable[[], None]) -> None:
        self._depth = 0
        self._on_end = on_end
        self.merged_read = False
        """The batch is a read of a reader that waits the merge interval itself (`IngestSink.batch(merged=True)`)."""

    @property
    def open(self) -> bool:
        return self._depth > 0

    def merged(self) -> WriteBatch:
        """This batch, as a merged read (until its outermost end)."""
        self.merged_read = True
        return self

    def __enter__(self) -> None:
        self._depth += 1

    def __exit__(self, *exc: object) -> None:
        if self._depth > 1:
            self._depth -= 1
            return
        try:
            self._on_end()  # still open: what its end offers is written by it, not armed for the loop's next turn
        finally:
            self._depth = 0
            self.merged_read = False


class Hub:
    """Owns one stream's live state: the publisher session of each input, which one feeds, the source's
    framing (its codec configuration and timestamps, relay.hub.framing), the GOP cache, the grace timer
    and the subscribers.

    `on_event` is called synchronously with each `HubEvent`; it must not call back into the hub's
    session methods (subscribing from it is fine).
    """

    def __init__(
        self,
        stream_id: int,
        settings: HubSettings,
        clock: Clock,
        on_event: Callable[[HubEvent], None],
        *,
        may_deliver: Callable[[], bool] | None = None,
    ) -> None:
        self.stream_id = stream_id
        self._may_deliver = may_deliver
        """Given to every subscriber (`Subscriber.may_deliver`): None, always."""
        self._settings = settings
        self._clock = clock
        self._on_event = on_event
        self._state = HubState.IDLE
        self._sessions: dict[StreamInput, InputSession] = {}
        """The open session of each input."""
        self._feeding: InputSession | None = None
        """The session whose media the subscribers get; set exactly while LIVE."""
        self._input: StreamInput | None = None
        """The input feeding now, or that fed last (kept through GRACE and RESUMING); None while idle."""
        self._preferred = StreamInput.MAIN
        self._last_fed_at = 0.0
        """Clock time of the last media packet fed to the subscribers."""
        self._feeding_lost_live = False
        """In RESUMING: True when the feeding input ended while another was open (a switch), False after GRACE."""
        self._container: ContainerFormat | None = None
        self._source_type: SourceType | None = None
        self._info = StreamInfo()
        self._framing: Framing | None = None
        """The framing of the current source; None while idle."""
        self._gop = GopCache(settings.gop_cache_max_bytes)
        self._subscribers: dict[int, Subscriber] = {}
        self._to_write: list[Subscriber] = []
        """Subscribers holding chunks for their write-through, written together at the end of the publisher's
        read (`WriteBatch`) or, for media offered outside one, on the loop's next turn."""
        self._write_armed = False
        self._batch = WriteBatch(self._end_batch)
        self._hold_write = False
        """The batch's last packet is an FLV video frame that came right after an audio packet: its write
        may wait for the next packet (`_end_batch`)."""
        self._holding = False
        """A batch's end held its writes back: the next batch that brings a packet writes them, whatever it
        ends with."""
        self._brought = 0
        """Packets accepted since the last batch's end or write."""
        self._run: list[bytes] = []
        """The framed media of the run being built, in parts (`_end_run`): since the read's first packet, its last
        keyframe or configuration packet."""
        self._run_ts = 0
        """The timestamp of the run's first packet."""
        self._run_sync = False
        """The run starts at a sync point."""
        self._last_media_kind: MediaKind | None = None
        self._next_subscriber_id = 1
        self._grace_timer: TimerHandle | None = None
        self._merge_timer: TimerHandle | None = None
        """With `merge_interval_seconds`: a write armed sooner than that after the last one waits for it."""
        self._written_at = -math.inf
        """When the subscribers were last written (`_write_subscribers`)."""

    # -- public -------------------------------------------------------------------------------------

    @property
    def state(self) -> HubState:
        return self._state

    @property
    def live(self) -> bool:
        """True from the first publisher until the stream ends (a dropped publisher's grace included)."""
        return self._state is not HubState.IDLE

    @property
    def input(self) -> StreamInput | None:
        """The input feeding the subscribers (or that fed them last, while none does); None while idle."""
        return self._input

    @property
    def inputs(self) -> frozenset[StreamInput]:
        """The inputs with an open publisher session."""
        return frozenset(self._sessions)

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
        stream_input: StreamInput = StreamInput.MAIN,
    ) -> IngestSink:
        """A publisher connection was accepted on `stream_input`: return the sink for its media."""
        framing = framing_for(container, resume_gap_ms=self._settings.resume_gap_ms)
        session = InputSession(
            container,
            source_type,
            transport,
            framing,
            stream_input,
            self._clock.now(),
            on_packet=self._on_packet,
            on_packets=self._on_packets,
            on_info=self._on_info,
            on_closed=self._on_session_closed,
            batch=self._batch,
        )
        old = self._sessions.get(stream_input)
        if old is not None and not old.closed:
            # A newcomer took over (the gate disconnects the old one): treat the old as dropped.
            old.closed = True
            self._on_session_closed(old, EndReason.DROP)
        self._sessions[stream_input] = session
        if self._state is HubState.IDLE:
            self._start_live(session)
        elif self._state is HubState.GRACE:
            self._transition(HubState.RESUMING)
        # LIVE: a standby until a switch; RESUMING: one more candidate to take over.
        return session

    def subscribe(self) -> Subscriber:
        """A new reader: it gets the container header, the codec configuration and the GOP at once."""
        sid = self._next_subscriber_id
        self._next_subscriber_id += 1
        sub = Subscriber(
            sid, self._settings.subscriber, self._clock, self._forget_subscriber, self._may_deliver, self._arm_write
        )
        self._subscribers[sid] = sub
        if self._state is not HubState.IDLE:
            sub.offer_initial(self._header_chunks() + self._gop.chunks())
        else:
            sub.end(EndCause.SOURCE_LOST)
        return sub

    def close(self, *, discard: bool = False) -> None:
        """Shut the hub down (engine shutdown): the sessions are detached, subscribers end. `discard`:
        what subscribers still hold is dropped, not delivered (a node that lost the stream's lease must
        not push another byte of it)."""
        for session in self._sessions.values():
            session.closed = True
        self._sessions.clear()
        self._feeding = None
        if self._state is not HubState.IDLE:
            self._end_live(LiveEndReason.HUB_CLOSED, EndCause.HUB_CLOSED, discard=discard)

    # -- session callbacks ----------------------------------------------------------------------------

    def _on_packet(self, session: InputSession, packet: MediaPacket) -> None:
        if self._sessions.get(session.input) is not session:
            return
        now = self._clock.now()
        if not packet.config:
            session.last_media_at = now
        if session is self._feeding:
            if not packet.config:
                self._last_fed_at = now
            self._accept(packet)
            return
        sync = self._is_sync(packet)
        session.hold(packet, now, sync=sync, max_bytes=self._settings.gop_cache_max_bytes)
        if packet.config or not session.held or not session.framing.ready_to_compare:
            return
        if self._state is HubState.RESUMING:
            if sync:
                self._take_over(session, SwitchReason.DROPPED if self._feeding_lost_live else SwitchReason.RETURNED)
        elif self._state is HubState.LIVE:
            reason = self._switch_reason(session, now, fresh_sync=sync)
            if reason is not None:
                self._take_over(session, reason)

    def _on_packets(self, session: InputSession, packets: list[MediaPacket]) -> None:
        """`_on_packet` of each: the feeding input's in one loop (a read's media), a standby's one by one (any
        of them may make it the feeding one)."""
        if session is not self._feeding:
            for packet in packets:
                self._on_packet(session, packet)
            return
        if self._sessions.get(session.input) is not session:
            return
        accept = self._accept
        media = False
        for packet in packets:
            media = media or not packet.config
            accept(packet)
        if media:
            session.last_media_at = self._last_fed_at = self._clock.now()

    def _on_info(self, session: InputSession, info: StreamInfo) -> None:
        if session is self._feeding or (self._feeding is None and self._sessions.get(session.input) is session):
            self._info = info

    def _on_session_closed(self, session: InputSession, reason: EndReason) -> None:
        if self._sessions.get(session.input) is not session:
            return
        del self._sessions[session.input]
        if self._state is HubState.IDLE:
            return
        if session is self._feeding:
            self._feeding = None
            if self._sessions:
                # Another input publishes: it takes over at a keyframe; the grace timer bounds the wait.
                self._transition(HubState.RESUMING)
                self._feeding_lost_live = True
                self._arm_grace_timer()
                log.info("stream %d: %s input ended (%s), switching", self.stream_id, session.input.value, reason.value)
                self._take_over_held(SwitchReason.DROPPED)
                return
        elif self._sessions or self._state is HubState.LIVE:
            return  # a standby went away, or a candidate while another may still take over
        if reason is EndReason.DROP:
            if self._state in (HubState.LIVE, HubState.RESUMING):
                self._transition(HubState.GRACE)
                self._feeding_lost_live = False
                self._arm_grace_timer()
                log.info(
                    "stream %d: publisher dropped, grace %.1fs", self.stream_id, self._settings.grace_period_seconds
                )
                self._emit(PublisherDropped(self.stream_id, self._settings.grace_period_seconds))
            return
        cause = LiveEndReason.KICKED if reason is EndReason.KICKED else LiveEndReason.UNPUBLISHED
        self._end_live(cause, EndCause.UNPUBLISHED)

    # -- the selector ---------------------------------------------------------------------------------

    def _is_sync(self, packet: MediaPacket) -> bool:
        """A point the subscribers' decoders can continue from: a video keyframe, or any audio packet of a
        source without video."""
        has_video = self._framing is not None and self._framing.has_video
        return packet.keyframe or (not has_video and packet.kind is MediaKind.AUDIO)

    def _switch_reason(self, standby: InputSession, now: float, *, fresh_sync: bool) -> SwitchReason | None:
        """While LIVE, whether `standby` (holding packets from a sync point on) takes over from the feeding
        input now: the feeding one is silent and the held sync point is newer than its last packet (no
        old picture is replayed), or the standby is the preferred input and its sync point just arrived."""
        feeding = self._feeding
        assert feeding is not None, "LIVE without a feeding input"
        held_at = standby.held_sync_at
        silent = now - feeding.last_media_at >= self._settings.input_silence_seconds
        if silent and held_at is not None and held_at > feeding.last_media_at:
            return SwitchReason.SILENT
        if fresh_sync and standby.input is self._preferred and feeding.input is not self._preferred:
            return SwitchReason.PREFERRED
        return None

    def _take_over_held(self, reason: SwitchReason) -> None:
        """On losing the feeding input: an open input whose held sync point arrived after the last packet
        fed takes over at once (the preferred one first); otherwise the first sync point to come decides."""
        for stream_input in sorted(self._sessions, key=lambda i: i is not self._preferred):
            session = self._sessions[stream_input]
            if (
                session.held_sync_at is not None
                and session.held_sync_at > self._last_fed_at
                and session.framing.ready_to_compare
            ):
                self._take_over(session, reason)
                return

    def _take_over(self, session: InputSession, reason: SwitchReason) -> None:
        """`session` feeds the subscribers from its held packets on (they start at a sync point)."""
        self._end_run()  # the last input's media, before anything of the new one's
        packets, first = session.held, session.held[0]
        session.drop_held()
        previous = self._input
        switching = session.input is not previous
        self._cancel_grace_timer()
        if self._continues(session, switching):
            if self._state is not HubState.LIVE:
                self._transition(HubState.LIVE)
            assert self._framing is not None, "a source without its framing"
            offset = self._framing.resume(session.framing, first)
            changes = self._framing.configuration_changes(session.framing) if switching else []
            self._feed_from(session)
            for packet in changes:
                self._accept(packet)
            if switching:
                log.info(
                    "stream %d: %s input feeds (%s), timestamp offset %d ms",
                    self.stream_id,
                    session.input.value,
                    reason.value,
                    offset,
                )
                self._emit(InputSwitched(self.stream_id, session.input, reason, offset))
            else:
                log.info("stream %d: publisher resumed, timestamp offset %d ms", self.stream_id, offset)
                self._emit(SourceResumed(self.stream_id, offset))
        else:
            self._replace_source(session)
            if switching:
                self._emit(InputSwitched(self.stream_id, session.input, reason, 0, restarted=True))
        for packet in packets:
            self._last_fed_at = self._clock.now()
            self._accept(packet)

    def _continues(self, session: InputSession, switching: bool) -> bool:
        """The subscribers may go on with `session`'s media: another input needs the same codecs (its
        differing sequence headers are sent inline); a returning one on the same input the same configuration."""
        if session.container is not self._container or self._framing is None:
            return False
        if switching:
            return self._framing.compatible(session.framing)
        return session.source_type is self._source_type and self._framing.same_configuration(session.framing)

    def _feed_from(self, session: InputSession) -> None:
        self._feeding = session
        self._input = session.input
        self._source_type = session.source_type
        self._gop.clear()  # a joiner starts on the new input's keyframe, never on the old input's GOP

    # -- internals ----------------------------------------------------------------------------------

    def _transition(self, new: HubState) -> None:
        check_transition(TRANSITIONS, f"hub {self.stream_id}", self._state, new)
        log.debug("stream %d: %s -> %s", self.stream_id, self._state.value, new.value)
        self._state = new

    def _emit(self, event: HubEvent) -> None:
        self._on_event(event)

    def _start_live(self, session: InputSession) -> None:
        self._transition(HubState.LIVE)
        self._start_source(session)
        self._last_fed_at = self._clock.now()
        log.info(
            "stream %d: live (%s over %s, %s input)",
            self.stream_id,
            session.container.value,
            session.source_type.value,
            session.input.value,
        )
        self._emit(LiveStarted(self.stream_id, session.container, session.source_type, session.transport))

    def _start_source(self, session: InputSession) -> None:
        """The session's media becomes the source, with the configuration its framing kept so far."""
        self._container = session.container
        self._framing = session.framing
        self._feed_from(session)

    def _end_live(self, reason: LiveEndReason, cause: EndCause, *, discard: bool = False) -> None:
        self._cancel_grace_timer()
        self._transition(HubState.IDLE)
        self._end_subscribers(cause, discard=discard)  # each writes what it holds first (unless `discard`)
        self._write_subscribers()  # nothing left to write: it only disarms (and cancels a merge's timer)
        self._framing = None
        self._feeding = None
        self._input = None
        self._gop.clear()  # a later session must never replay a stale GOP
        log.info("stream %d: live ended (%s)", self.stream_id, reason.value)
        self._emit(LiveEnded(self.stream_id, reason))

    def _end_subscribers(self, cause: EndCause, *, discard: bool = False) -> None:
        self._end_run()  # what they were given so far goes first
        for sub in list(self._subscribers.values()):
            sub.end(cause, discard=discard)
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
        elif self._state is HubState.RESUMING and self._sessions:
            # No input proved itself in time (no sync point, no configuration): start over with one.
            session = self._sessions.get(self._preferred) or next(iter(self._sessions.values()))
            session.drop_held()
            switching = session.input is not self._input
            self._replace_source(session)
            if switching:
                self._emit(InputSwitched(self.stream_id, session.input, SwitchReason.DROPPED, 0, restarted=True))

    def _replace_source(self, session: InputSession) -> None:
        self._cancel_grace_timer()
        if self._state is not HubState.LIVE:  # LIVE already: a switch to an input of other codecs
            self._transition(HubState.LIVE)
        self._end_subscribers(EndCause.SOURCE_CHANGED)
        self._start_source(session)
        log.info("stream %d: source changed, subscribers restart", self.stream_id)
        self._emit(SourceChanged(self.stream_id, session.container, session.source_type))

    def _accept(self, packet: MediaPacket) -> None:
        """A packet of the current source: framed (configuration kept), then cached and fanned out as part of
        the run its read brought (`_end_run`)."""
        framing = self._framing
        assert framing is not None, "media without a source"
        self._brought += 1
        if packet.config:
            self._hold_write = False
            self._end_run()  # configuration goes alone: an overflow's flush keeps it, and the GOP never holds it
            parts: list[bytes] = []
            ts = framing.frame(packet, parts)
            self._offer(Chunk(b"".join(parts), ts, sync=False, config=True))
            return
        kind = packet.kind
        if packet.keyframe or not self._run:
            self._end_run()
            ts = framing.frame(packet, self._run)
            # A joiner starts on a keyframe; a stream without video can start on any audio packet.
            self._run_sync = packet.keyframe or (kind is MediaKind.AUDIO and not framing.has_video)
            self._run_ts = ts
        else:
            framing.frame(packet, self._run)
        self._hold_write = (
            kind is MediaKind.VIDEO
            and self._last_media_kind is MediaKind.AUDIO
            and self._container is ContainerFormat.FLV
        )
        self._last_media_kind = kind
        if not self._batch.open:
            self._end_run()  # media outside a publisher's read (a switch's held packets): a run of its own

    def _end_run(self) -> None:
        """The media accepted since the last keyframe, configuration packet or end of a read, as one chunk: cached
        and offered to each subscriber once. A merged read of a 1080p30 publisher brings ~5 packets; each was
        its own chunk, cached and offered to every subscriber alone (`python -m bench.read_path`, warm: 101-122
        -> 90-92 µs a read at one subscriber, 333-391 -> 276-301 at 16). A run never holds a keyframe but at
        its start, so a subscriber that skips to a keyframe, and the GOP cache that restarts at one, still
        find each."""
        run = self._run
        if not run:
            return
        self._run = []
        # One copy of the run's media: its tags' headers, bodies and trailers joined at once.
        chunk = Chunk(run[0] if len(run) == 1 else b"".join(run), self._run_ts, sync=self._run_sync, config=False)
        assert self._framing is not None, "media without a source"
        self._gop.add(chunk, has_video=self._framing.has_video)
        self._offer(chunk)

    def _offer(self, chunk: Chunk) -> None:
        for sub in list(self._subscribers.values()):
            sub.offer(chunk)

    def _arm_write(self, sub: Subscriber) -> None:
        """`sub` holds chunks for its write-through: written with every other subscriber's when the
        publisher's read ends (`WriteBatch`), or else on the loop's next turn, by one callback of the hub's
        (a timer per subscriber and per publisher read was, at 16 destinations, 16 asyncio timers pushed
        on and popped off the loop's heap for every read)."""
        self._to_write.append(sub)
        if not self._write_armed:
            self._write_armed = True
            if not self._batch.open:  # the loop's next turn, once every subscriber has the chunk
                merging = self._settings.merge_interval_seconds > 0
                self._clock.call_later(0.0, self._merge_write if merging else self._write_subscribers)

    def _merge_write(self) -> None:
        """With `merge_interval_seconds` (`RELAY_MERGE_INTERVAL_MS`): write now if the last write is that old,
        or else when it will be. An RTMP publisher is read that often too (`RtmpConnection._merge_reads`), so
        each of its reads normally brings that much media and is written at its end; other sources (RTMPS,
        SRT, pulls), read as their data comes, are written that often by the timer."""
        if self._merge_timer is not None or not self._write_armed:
            return
        due = self._written_at + self._settings.merge_interval_seconds
        wait = due - self._clock.now()
        if wait <= _MERGE_EARLY_SECONDS:
            self._write_subscribers()
        else:
            self._merge_timer = self._clock.call_later(wait, self._merge_due)

    def _merge_due(self) -> None:
        self._merge_timer = None
        self._write_subscribers()

    def _end_batch(self) -> None:
        """A publisher's read ended: write what it gave the subscribers, unless its last packet is a video
        frame that followed an audio packet (`_hold_write`). That frame then waits for the next read that
        brings a packet, audio or video, and goes in its write. A push's ffmpeg (FLV in, FLV or MPEG-TS
        out) sends a packet only once it has the next one (its muxer's interleaving, with
        `-max_interleave_delta 1` too), so the frame leaves the push when it would have, and the audio
        packet before it leaves with the frame instead of when the frame arrived: one pipe write a
        destination saved for each frame held, in the relay and in each push (at 30 fps with AAC audio,
        a publisher that sends each message in a read of its own: ~60 -> ~30 writes a second).

        Never two held in a row: a frame that follows a frame is written (the first leaves the push when
        the second arrives), and the read after a held one is written whatever it ends with (an encoder
        whose every read is an audio packet and a frame has every other read written). Media offered
        outside a batch is never held: its write is the loop's next turn."""
        self._end_run()
        self._clock.woke()  # every source's read ends a batch: the housekeeping due rides it (relay.hub.clock)
        brought, self._brought = self._brought, 0
        if self._settings.merge_interval_seconds > 0:
            if self._batch.merged_read:
                # Its reader merged it: written now. Held for the hub's interval too, a read that came early (a
                # full buffer's next read, a keyframe's rest) armed a timer whose write the reads after it could
                # then trail: in one run 125 of 539 reads in 36 s at N=1, held 2-65 ms each (none in another).
                self._write_subscribers()
            else:
                self._merge_write()
            return
        if self._holding:
            if not brought:
                return  # a read with no whole packet (part of a message): the frame's next packet is to come
        elif self._hold_write and brought:
            self._holding = True
            return  # still armed: the next batch that brings a packet writes it
        self._write_subscribers()

    def _write_subscribers(self) -> None:
        self._holding = False
        self._brought = 0
        if self._merge_timer is not None:  # written before it was due (a hub ending)
            self._merge_timer.cancel()
            self._merge_timer = None
        if not self._write_armed:
            return  # nothing armed, or written already (a batch ended before the timer fired)
        self._write_armed = False
        self._written_at = self._clock.now()
        subs, self._to_write = self._to_write, []
        for sub in subs:
            sub.write_pending()

    def _header_chunks(self) -> list[Chunk]:
        assert self._framing is not None, "a header without a source"
        return self._framing.header_chunks()
