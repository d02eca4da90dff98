"""Live state of streams: who is publishing, since when, what the source looks like.

Rebuilt from the running system, never read from disk: after a restart nothing is live until a
publisher connects again.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime

from relay.ingest.gate import PublisherHandle, SourceType, StreamInfo


@dataclass(frozen=True, slots=True)
class LiveSession:
    """The current (or last) publishing session of one stream."""

    stream_id: int
    client_id: int
    source_type: SourceType
    started_at: datetime
    publisher: PublisherHandle | None
    info: StreamInfo = field(default_factory=StreamInfo)
    finished_at: datetime | None = None

    def with_info(self, info: StreamInfo) -> LiveSession:
        return replace(self, info=info)
