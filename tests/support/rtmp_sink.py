"""A destination that tells connections apart: an RTMP server on one port, in the test's event loop, served by
the relay's own sans-I/O core, recording every media packet with the connection that brought it.

A `Receiver` (ffmpeg `-listen 1`) takes one connection and exits; a cluster test needs a destination that
outlives a change of owner and can say whether two nodes ever pushed to it at the same time. Each accepted
connection is a `SinkConnection` (when it opened, closed, began publishing, its media packets' arrival
times); `overlaps()` lists pairs of connections that both delivered media within one window.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from dataclasses import dataclass, field

from relay.media.packets import MediaKind
from relay.rtmp.errors import ProtocolError
from relay.rtmp.events import NEED_DATA, CloseRequested, ConnectRequested, MediaReceived, PublishRequested
from relay.rtmp.session import ServerSession, SessionConfig


@dataclass
class SinkConnection:
    """One connection to the sink; times are time.monotonic()."""

    number: int
    opened_at: float
    peer: str
    closed_at: float | None = None
    published_at: float | None = None
    media_times: list[float] = field(default_factory=list)
    """Arrival of each audio and video packet (not the sequence headers)."""
    media_stamps: list[int] = field(default_factory=list)
    """Their RTMP timestamps (ms), in the same order."""
    video_times: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def first_media(self) -> float | None:
        return self.media_times[0] if self.media_times else None

    @property
    def last_media(self) -> float | None:
        return self.media_times[-1] if self.media_times else None


DESTINATION_SESSION = SessionConfig(max_buffered_bytes=16 << 20, out_chunk_size=4096)
"""The session of a destination made of our `ServerSession` (this sink, and bench/receivers.py's receivers). It
announces 4096, nginx-rtmp's default, which a push's ffmpeg (and a publisher's) then sends in: several chunks a
frame, as most destinations ask, not the relay's own ingest's 60000 (`SessionConfig.out_chunk_size`). A
destination's chunk size is the destination's: the benches keep it fixed so that a change of the ingest's does
not change what the pushes and the direct receiver do."""


class _Protocol(asyncio.Protocol):
    def __init__(self, sink: RtmpSink) -> None:
        self._sink = sink
        self._session = ServerSession(DESTINATION_SESSION)
        self._transport: asyncio.Transport | None = None
        self.record: SinkConnection | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        peer = transport.get_extra_info("peername")
        self.record = SinkConnection(next(self._sink.numbers), time.monotonic(), f"{peer[0]}:{peer[1]}")
        self._sink.connections.append(self.record)
        self._sink.open.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        assert self.record is not None
        self.record.closed_at = time.monotonic()
        self._sink.open.discard(self)

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    def pause(self) -> None:
        """Read nothing more, as a frozen process would (the connection stays open)."""
        if self._transport is not None:
            self._transport.pause_reading()

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        record = self.record
        assert record is not None
        session = self._session
        try:
            session.receive_data(data)
            while (event := session.next_event()) is not NEED_DATA:
                if isinstance(event, MediaReceived):
                    packet = event.packet
                    if packet.kind in (MediaKind.AUDIO, MediaKind.VIDEO) and not packet.config:
                        record.media_times.append(now)
                        record.media_stamps.append(packet.timestamp_ms)
                        if packet.kind is MediaKind.VIDEO:
                            record.video_times.append(now)
                elif isinstance(event, ConnectRequested):
                    session.accept_connect()
                elif isinstance(event, PublishRequested):
                    session.accept_publish()
                    record.published_at = now
                elif isinstance(event, CloseRequested):
                    self.abort()
        except ProtocolError as exc:
            record.errors.append(str(exc))
            self.abort()
            return
        out = session.data_to_send()
        if out and self._transport is not None and not self._transport.is_closing():
            self._transport.write(out)


class RtmpSink:
    """An RTMP destination on 127.0.0.1:`port` that accepts any number of publishers, one record each."""

    def __init__(self, name: str = "dest", port: int = 0) -> None:
        self.name = name
        self.port = port
        self.connections: list[SinkConnection] = []
        self.open: set[_Protocol] = set()
        self.numbers = itertools.count(1)
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"rtmp://127.0.0.1:{self.port}/live/{self.name}"

    async def start(self) -> RtmpSink:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Protocol(self), "127.0.0.1", self.port, reuse_address=True)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def stop_listening(self) -> None:
        """Accept no more connections; those open stay."""
        server, self._server = self._server, None
        if server is not None:
            server.close()

    async def close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for connection in list(self.open):
            connection.abort()
        if server is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(server.wait_closed(), 2)

    async def __aenter__(self) -> RtmpSink:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- what a test asks ---------------------------------------------------------------------------------
    def video_since(self, since: float) -> int:
        """Video packets that arrived at or after `since`, over every connection."""
        return sum(1 for c in self.connections for t in c.video_times if t >= since)

    def first_video_since(self, since: float) -> float | None:
        times = [t for c in self.connections for t in c.video_times if t >= since]
        return min(times) if times else None

    def first_video_of_connections_since(self, since: float) -> float | None:
        """The first video packet of a connection opened at or after `since` (a new pusher's, not what an old
        one still flushes)."""
        times = [c.video_times[0] for c in self.connections if c.opened_at >= since and c.video_times]
        return min(times) if times else None

    def publishing_now(self) -> list[SinkConnection]:
        """Connections still open that have begun publishing."""
        return [c.record for c in self.open if c.record is not None and c.record.published_at is not None]

    def overlaps(self, window_seconds: float = 0.5) -> list[tuple[int, int, float]]:
        """Pairs of connections (numbers, and the time) that both delivered media within `window_seconds` of
        each other: two pushers at once. A connection left open but silent (its node frozen) is no overlap;
        its media after the next connection began would be."""
        found: list[tuple[int, int, float]] = []
        with_media = [c for c in self.connections if c.media_times]
        for a, b in itertools.combinations(with_media, 2):
            first, second = (a, b) if (a.first_media or 0) <= (b.first_media or 0) else (b, a)
            assert second.first_media is not None
            late = [t for t in first.media_times if t > second.first_media + window_seconds]
            if late:
                found.append((first.number, second.number, late[0]))
        return found

    def largest_gap_seconds(self, since: float, until: float) -> float:
        """The longest time without a video packet between `since` and `until` (all connections)."""
        times = sorted(t for c in self.connections for t in c.video_times if since <= t <= until)
        points = [since, *times, until]
        return max(b - a for a, b in itertools.pairwise(points))
