"""The live registry: who publishes each input of each stream now (main, backup), the last session of
each, and what the ingest measured.

Rebuilt from the running system, never read from disk: after a restart nothing is live until a
publisher connects again.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from relay.engine.status import IngestStatus, SrtLinkStatus, StreamState
from relay.ingest.gate import PublisherHandle, SourceType, StreamInfo, StreamInput
from relay.ingest.srt_session import SrtPublisher
from relay.stats import RateMeter


@dataclass(frozen=True, slots=True)
class LiveSession:
    """The current (or last) publishing session of one input of a stream."""

    stream_id: int
    client_id: int
    source_type: SourceType
    started_at: datetime
    publisher: PublisherHandle | None
    """None once the session ended."""
    info: StreamInfo = field(default_factory=StreamInfo)
    finished_at: datetime | None = None
    input: StreamInput = StreamInput.MAIN

    @property
    def key(self) -> tuple[int, StreamInput]:
        return self.stream_id, self.input


_INPUTS = tuple(StreamInput)


class LiveRegistry:
    """Owns the publishing sessions (one per input of a stream) and the ingest meters; loop only."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._live: dict[tuple[int, StreamInput], LiveSession] = {}
        self._last: dict[tuple[int, StreamInput], LiveSession] = {}
        self._rates: dict[tuple[int, StreamInput], RateMeter] = {}
        self._totals: Counter[int] = Counter()
        """Bytes received per stream since start-up, across publishing sessions and inputs (for counters)."""
        self._switches: Counter[int] = Counter()
        """Times another input took over feeding the destinations, per stream since start-up."""

    def current(self, stream_id: int, stream_input: StreamInput = StreamInput.MAIN) -> LiveSession | None:
        """The session publishing on that input now."""
        return self._live.get((stream_id, stream_input))

    def sessions(self, stream_id: int) -> list[LiveSession]:
        """Every session publishing to the stream now, main first (what a token change must disconnect)."""
        return [s for i in _INPUTS if (s := self._live.get((stream_id, i))) is not None]

    def publisher_of(self, stream_id: int, stream_input: StreamInput = StreamInput.MAIN) -> PublisherHandle | None:
        session = self._live.get((stream_id, stream_input))
        return session.publisher if session is not None else None

    def latest(self, stream_id: int, stream_input: StreamInput = StreamInput.MAIN) -> LiveSession | None:
        """The input's session publishing now, or else its last one since start-up (for its times and source)."""
        key = (stream_id, stream_input)
        return self._live.get(key) or self._last.get(key)

    def client_of(self, stream_id: int) -> int | None:
        for stream_input in _INPUTS:
            session = self.latest(stream_id, stream_input)
            if session is not None:
                return session.client_id
        return None

    def publishing(self) -> list[int]:
        """Streams with at least one input publishing (the keys copied first, in one call: the API reads
        this from its own thread)."""
        return list(dict.fromkeys(stream_id for stream_id, _ in list(self._live)))

    def open(self, session: LiveSession) -> None:
        """`session` publishes now on its input (a session it replaces was ended first)."""
        self._live[session.key] = session
        self._rates[session.key] = RateMeter(self._clock)

    def end(self, session: LiveSession) -> bool:
        """End `session` if it is still the current one; False when a newer one replaced it already."""
        if self._live.get(session.key) is not session:
            return False
        del self._live[session.key]
        self._rates.pop(session.key, None)
        self._last[session.key] = replace(session, publisher=None, finished_at=datetime.now(UTC))
        return True

    def update_info(self, session: LiveSession, info: StreamInfo) -> LiveSession | None:
        """The session with `info`, if it is still the current one."""
        if self._live.get(session.key) is not session:
            return None
        updated = replace(session, info=info)
        self._live[session.key] = updated
        return updated

    def count(self, stream_id: int, size: int, stream_input: StreamInput = StreamInput.MAIN, packets: int = 1) -> None:
        """`packets` media packets of `size` bytes in all arrived on `stream_input`."""
        self._totals[stream_id] += size
        meter = self._rates.get((stream_id, stream_input))
        if meter is not None:
            meter.add(size, packets)

    def count_switch(self, stream_id: int) -> None:
        self._switches[stream_id] += 1

    def switches(self, stream_id: int) -> int:
        return self._switches.get(stream_id, 0)

    def forget(self, stream_id: int) -> None:
        """The stream was deleted: drop what is kept of its past."""
        for stream_input in _INPUTS:
            self._last.pop((stream_id, stream_input), None)
        self._totals.pop(stream_id, None)
        self._switches.pop(stream_id, None)

    def ingest_status(
        self, stream_id: int, state: StreamState, stream_input: StreamInput = StreamInput.MAIN
    ) -> IngestStatus:
        """What the ingest measures of the stream's `stream_input` (the engine passes the one feeding the
        destinations); `state` is decided by the engine (it knows the hubs)."""
        session = self._live.get((stream_id, stream_input))
        meter = self._rates.get((stream_id, stream_input))
        total = self._totals.get(stream_id, 0)
        if session is None or meter is None:
            return IngestStatus(state=state, bytes_in_total=total)
        publisher = session.publisher
        return IngestStatus(
            state=StreamState.LIVE,
            transport=publisher.transport if publisher is not None else None,
            video_codec=session.info.video_codec,
            audio_codec=session.info.audio_codec,
            bitrate_kbps=meter.bitrate_kbps(),
            bytes_in=meter.total_bytes,
            bytes_in_total=total,
            uptime_seconds=round(self._clock() - meter.started_at, 1),
            srt=_srt_link(publisher),
        )


def _srt_link(publisher: PublisherHandle | None) -> SrtLinkStatus | None:
    if not isinstance(publisher, SrtPublisher):
        return None
    link = publisher.link_stats()
    if link is None:
        return None
    return SrtLinkStatus(
        rtt_ms=round(link.rtt_ms, 2),
        recv_rate_mbps=round(link.recv_rate_mbps, 3),
        latency_ms=link.latency_ms,
        packets_received=link.pkt_received_total,
        packets_lost=link.pkt_recv_loss_total,
        packets_dropped=link.pkt_recv_drop_total,
        packets_retransmitted=link.pkt_recv_retrans_total,
        encrypted=publisher.encrypted,
    )
