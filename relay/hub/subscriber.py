"""One reader of a hub: a bounded queue of container bytes, with drop-to-keyframe on overflow.

The hub offers every chunk to every subscriber without waiting; a subscriber whose reader (an ffmpeg
stdin) cannot keep up loses data, never the hub or the other subscribers. Losing data is done so that
the reader's decoder can recover: the queue is flushed and refilled from the next keyframe, keeping the
codec configuration. A subscriber that overflows again and again is ended with `EndCause.OVERFLOW` so
that its owner restarts the push instead of sending a broken stream forever.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from relay.hub.clock import Clock


class EndCause(StrEnum):
    """Why a subscriber's stream ended; the push uses it to decide between finishing and restarting."""

    UNPUBLISHED = "unpublished"
    """The publisher ended the stream (or was kicked): finish cleanly, do not restart."""
    SOURCE_LOST = "source_lost"
    """The publisher dropped and did not come back within the grace period."""
    SOURCE_CHANGED = "source_changed"
    """A publisher came back with another codec configuration: restart on the new source."""
    OVERFLOW = "overflow"
    """The reader fell behind too often: restart it."""
    UNSUBSCRIBED = "unsubscribed"
    """The reader itself closed the subscription."""
    HUB_CLOSED = "hub_closed"


@dataclass(frozen=True, slots=True)
class SubscriberLimits:
    """Bounds of one subscriber's queue; both bounds hold at all times after the first burst."""

    max_bytes: int = 24 * 1024 * 1024
    max_seconds: float = 10.0
    """Media time between the oldest and newest queued chunk."""
    overflow_restart_count: int = 3
    overflow_restart_window_seconds: float = 30.0
    read_max_bytes: int = 256 * 1024
    """Most bytes one `read()` returns (many small FLV tags are joined to save pipe writes)."""


@dataclass(frozen=True, slots=True)
class Chunk:
    """Media already encoded in the stream's container (FLV tags, or TS packets): a configuration packet
    alone, or a run of media packets that one publisher read brought, cut before each keyframe
    (relay.hub.hub `Hub._end_run`)."""

    data: bytes
    timestamp_ms: int
    """The timestamp of its first packet (a run spans at most the media of one publisher read)."""
    sync: bool
    """It starts at a point a decoder can start from: a video keyframe, or any audio packet of an audio-only
    stream."""
    config: bool
    """Codec configuration or container header: never dropped by an overflow flush."""


class Subscriber:
    """Owns one reader's bounded queue, its overflow accounting and its end-of-stream state.

    Only the hub calls `offer`/`end`; the reader calls `read` and `close`.
    """

    def __init__(
        self,
        subscriber_id: int,
        limits: SubscriberLimits,
        clock: Clock,
        on_close: Callable[[Subscriber], None],
        may_deliver: Callable[[], bool] | None,
        arm_write: Callable[[Subscriber], None],
    ) -> None:
        self.subscriber_id = subscriber_id
        self._arm_write = arm_write
        """Asked to call `write_pending` soon: the hub writes all its subscribers' together, when the publisher's
        read ends or on the loop's next turn."""
        self._may_deliver = may_deliver
        """Asked right before bytes leave for the reader; False: the node may not send this stream any more
        (a lease it can no longer prove), and the subscriber ends as if its hub closed with a discard."""
        self._limits = limits
        self._clock = clock
        self._on_close = on_close
        self._queue: deque[Chunk] = deque()
        self._queued_bytes = 0
        self._skipping = False
        # Only the last `overflow_restart_count` overflow times matter: a bounded deque.
        self._overflow_times: deque[float] = deque(maxlen=max(1, limits.overflow_restart_count))
        self._waiter: asyncio.Future[None] | None = None
        """The reader's pending wait for data, if it waits (cheaper than an asyncio.Event per chunk)."""
        self._write_through: Callable[[bytes], bool] | None = None
        self._pending: list[Chunk] = []
        """Chunks for `_write_through`, written together once the loop gets round to it (everything one
        socket read of the publisher produced, in one write)."""
        self._write_armed = False
        self._end_cause: EndCause | None = None
        self._discarded = False
        self.overflows = 0
        self.dropped_chunks = 0
        self.offered_bytes = 0
        self.read_bytes = 0
        self.last_offer_at: float | None = None
        """Clock time the hub last offered data, kept or not: "input is flowing" for stall detection."""

    # -- reader side ---------------------------------------------------------------------------------

    @property
    def end_cause(self) -> EndCause | None:
        return self._end_cause

    @property
    def discarded(self) -> bool:
        """The stream ended with what was queued thrown away (`end(..., discard=True)`)."""
        return self._discarded

    @property
    def queued_bytes(self) -> int:
        return self._queued_bytes

    @property
    def queued_seconds(self) -> float:
        first = self._first_media_timestamp()
        if first is None or not self._queue:
            return 0.0
        return max(0, self._queue[-1].timestamp_ms - first) / 1000.0

    async def read(self) -> bytes:
        """The next bytes to send; `b""` once the stream has ended and the queue is drained."""
        while not self._queue:
            if self._end_cause is not None:
                return b""
            waiter = self._waiter = asyncio.get_running_loop().create_future()
            try:
                await waiter
            finally:
                self._waiter = None
        if self._fenced():
            return b""
        parts: list[bytes] = []
        size = 0
        while self._queue and (not parts or size + len(self._queue[0].data) <= self._limits.read_max_bytes):
            chunk = self._queue.popleft()
            parts.append(chunk.data)
            size += len(chunk.data)
        self._queued_bytes -= size
        self.read_bytes += size
        return b"".join(parts)

    def write_through(self, writer: Callable[[bytes], bool] | None) -> None:
        """Hand live chunks straight to `writer` while nothing is queued (None: stop).

        The reader sets this when it writes to something that takes bytes without waiting (a pipe's
        transport): chunks offered with an empty queue are then written by a callback on the loop's next
        turn, all those of one turn together, with no wake-up of the reader's task (that wake-up, for
        every destination and every socket read of the publisher, was most of the fan-out's cost).
        `writer` returns False when it cannot take them now (its own buffer is not empty): they are
        queued as usual, the reader wakes and writes them after what came before, and the queue's bounds
        and drop-to-keyframe apply from there. The late-joiner burst is always queued.
        """
        self._write_through = writer
        if writer is None and self._pending:
            self.write_pending()

    def close(self) -> None:
        """Stop receiving (idempotent); the hub forgets this subscriber."""
        self.end(EndCause.UNSUBSCRIBED, discard=True)

    # -- hub side ------------------------------------------------------------------------------------

    def offer_initial(self, chunks: list[Chunk]) -> None:
        """The late-joiner burst (header + GOP); bounded by the GOP cache, not by the queue limits."""
        for chunk in chunks:
            self._push(chunk)

    def offer(self, chunk: Chunk) -> None:
        """Queue a live chunk without blocking; on overflow flush and skip ahead to the next sync point."""
        if self._end_cause is not None:
            return
        size = len(chunk.data)
        self.offered_bytes += size
        self.last_offer_at = self._clock.now()
        if self._skipping and not chunk.config:
            if not chunk.sync:
                self.dropped_chunks += 1
                return
            self._skipping = False
        # What is held for the write-through is not queued: with nothing queued only the chunk's size counts.
        if self._queued_bytes + size > self._limits.max_bytes or (self._queue and self._too_far_behind(chunk)):
            self._overflow()
            if self._end_cause is not None:
                return
            if not (chunk.sync or chunk.config):
                self.dropped_chunks += 1
                return
            self._skipping = False
        if self._write_through is not None and not self._queue:
            self._pending.append(chunk)
            if not self._write_armed:
                self._write_armed = True
                self._arm_write(self)
            return
        self._push(chunk)

    def skip_to_keyframe(self) -> None:
        """Drop what is queued and carry on from the next sync point, as an overflow does, counted in
        `overflows` but not towards the restart rule: the push's owner asks it when its destination is too
        far behind live (relay/supervisor, policy `skip`), and chose to keep that destination going."""
        if self._end_cause is None:
            self.overflows += 1
            self._flush()

    def end(self, cause: EndCause, *, discard: bool = False) -> None:
        """End the stream: the reader drains what is queued (unless `discard`) and then reads b""."""
        if self._end_cause is not None:
            return
        self._end_cause = cause
        if discard:
            self._discard()
        elif self._pending:
            self.write_pending()  # before the reader can see the end
        self._wake()
        self._on_close(self)

    # -- internals -----------------------------------------------------------------------------------

    def _push(self, chunk: Chunk) -> None:
        self._queue.append(chunk)
        self._queued_bytes += len(chunk.data)
        self._wake()

    def write_pending(self) -> None:
        """Write what `offer` held for the write-through (nothing if already written)."""
        self._write_armed = False
        pending, self._pending = self._pending, []
        if not pending or self._fenced():
            return
        data = pending[0].data if len(pending) == 1 else b"".join(c.data for c in pending)
        writer = self._write_through
        if writer is not None and not self._queue and writer(data):
            self.read_bytes += len(data)
            return
        for chunk in pending:
            self._push(chunk)

    def _fenced(self) -> bool:
        """`may_deliver` says no: nothing held here may reach the reader. Checked where bytes leave, not
        only where they arrive: a node frozen (SIGSTOP) past its lease's deadline resumes with callbacks
        that were already due (a write armed for the loop's next turn, a reader woken up) and they run
        before the loop's timers can notice the lease is gone."""
        if self._may_deliver is None or self._may_deliver():
            return False
        if self._end_cause is None:
            self.end(EndCause.HUB_CLOSED, discard=True)
        else:  # ending already, with a tail to deliver: it goes nowhere either, and the reader is told why
            self._end_cause = EndCause.HUB_CLOSED
            self._discard()
        return True

    def _discard(self) -> None:
        """Throw away everything held for the reader (`discarded` from now on)."""
        self._discarded = True
        self._queue.clear()
        self._queued_bytes = 0
        self._pending.clear()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _too_far_behind(self, chunk: Chunk) -> bool:
        """`chunk` is further ahead of the oldest media queued than the queue may hold (`max_seconds`)."""
        first = self._first_media_timestamp()
        return first is not None and not chunk.config and chunk.timestamp_ms - first > self._limits.max_seconds * 1000.0

    def _first_media_timestamp(self) -> int | None:
        # Configuration chunks carry old timestamps (often 0): only media measures the backlog.
        for queued in self._queue:
            if not queued.config:
                return queued.timestamp_ms
        return None

    def _overflow(self) -> None:
        now = self._clock.now()
        self.overflows += 1
        self._overflow_times.append(now)
        window = self._limits.overflow_restart_window_seconds
        if len(self._overflow_times) >= self._limits.overflow_restart_count and now - self._overflow_times[0] <= window:
            self.end(EndCause.OVERFLOW, discard=True)
            return
        self._flush()

    def _flush(self) -> None:
        # Keep configuration (headers, sequence headers) so the decoder can carry on after the gap.
        kept = [c for c in self._queue if c.config]
        self.dropped_chunks += len(self._queue) - len(kept)
        self._queue = deque(kept)
        self._queued_bytes = sum(len(c.data) for c in kept)
        self._skipping = True
