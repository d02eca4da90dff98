"""The live registry: who publishes each stream now, the last session of each, and what the ingest measured.

Rebuilt from the running system, never read from disk: after a restart nothing is live until a
publisher connects again.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from relay.engine.status import IngestStatus, SrtLinkStatus, StreamState
from relay.ingest.gate import PublisherHandle, SourceType, StreamInfo
from relay.ingest.srt_session import SrtPublisher
from relay.stats import RateMeter


@dataclass(frozen=True, slots=True)
class LiveSession:
    """The current (or last) publishing session of one stream."""

    stream_id: int
    client_id: int
    source_type: SourceType
    started_at: datetime
    publisher: PublisherHandle | None
    """None once the session ended."""
    info: StreamInfo = field(default_factory=StreamInfo)
    finished_at: datetime | None = None


class LiveRegistry:
    """Owns the publishing sessions and the ingest meters of every stream; loop only."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._live: dict[int, LiveSession] = {}
        self._last: dict[int, LiveSession] = {}
        self._rates: dict[int, RateMeter] = {}
        self._totals: Counter[int] = Counter()
        """Bytes received per stream since start-up, across publishing sessions (for counters)."""

    def current(self, stream_id: int) -> LiveSession | None:
        """The session publishing now."""
        return self._live.get(stream_id)

    def sessions_of(self, stream_id: int) -> list[LiveSession]:
        """Every session publishing the stream now, one per input (what a token reset must end)."""
        session = self._live.get(stream_id)
        return [session] if session is not None else []

    def publisher_of(self, stream_id: int) -> PublisherHandle | None:
        session = self._live.get(stream_id)
        return session.publisher if session is not None else None

    def latest(self, stream_id: int) -> LiveSession | None:
        """The session publishing now, or else the last one since start-up (for its times and source)."""
        return self._live.get(stream_id) or self._last.get(stream_id)

    def client_of(self, stream_id: int) -> int | None:
        session = self.latest(stream_id)
        return session.client_id if session is not None else None

    def publishing(self) -> list[int]:
        return list(self._live)

    def open(self, session: LiveSession) -> None:
        """`session` publishes now (a session it replaces was ended first)."""
        self._live[session.stream_id] = session
        self._rates[session.stream_id] = RateMeter(self._clock)

    def end(self, session: LiveSession) -> bool:
        """End `session` if it is still the current one; False when a newer one replaced it already."""
        if self._live.get(session.stream_id) is not session:
            return False
        del self._live[session.stream_id]
        self._rates.pop(session.stream_id, None)
        self._last[session.stream_id] = replace(session, publisher=None, finished_at=datetime.now(UTC))
        return True

    def update_info(self, session: LiveSession, info: StreamInfo) -> LiveSession | None:
        """The session with `info`, if it is still the current one."""
        if self._live.get(session.stream_id) is not session:
            return None
        updated = replace(session, info=info)
        self._live[session.stream_id] = updated
        return updated

    def count(self, stream_id: int, size: int) -> None:
        self._totals[stream_id] += size
        meter = self._rates.get(stream_id)
        if meter is not None:
            meter.add(size)

    def forget(self, stream_id: int) -> None:
        """The stream was deleted: drop what is kept of its past."""
        self._last.pop(stream_id, None)
        self._totals.pop(stream_id, None)

    def ingest_status(self, stream_id: int, state: StreamState) -> IngestStatus:
        """What the ingest measures of the stream; `state` is decided by the engine (it knows the hubs)."""
        session = self._live.get(stream_id)
        meter = self._rates.get(stream_id)
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
