"""SRT publisher session: one accepted connection, as the worker thread, the loop and the gate see it.

`SrtWire` is what the worker thread and the loop share (under its lock); `SrtPublisher` is the
`PublisherHandle` the gate and the engine see; `SrtSession` is the loop's side: the TS reader, the
sink once the gate said yes and the backlog until then.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field
from typing import Protocol

from relay.ingest.gate import EndReason, IngestSink, StreamInfo, Transport
from relay.media.mpegts import MpegTsReader, TsStreamInfo
from relay.srt.libsrt import LinkStats, format_peer
from relay.srt.listener import Connected


class ConnectionOwner(Protocol):
    """What a publisher needs of the server that accepted it (the `SrtServer`)."""

    def clock(self) -> float: ...

    def request_close(self, sock: int) -> None: ...

    def link_stats(self, sock: int) -> LinkStats | None: ...


class SrtWire:
    """What the worker thread and the loop share about one connection, under `lock`."""

    def __init__(self, now: float) -> None:
        self.lock = threading.Lock()
        self.in_flight_bytes = 0
        self.dropped_bytes = 0
        self.last_data = now


class SrtPublisher:
    """One accepted SRT publisher, as the gate sees it (`PublisherHandle`), plus its link stats."""

    def __init__(self, server: ConnectionOwner, conn: Connected, stream_id: str, wire: SrtWire) -> None:
        self._server = server
        self._conn = conn
        self._wire = wire
        self._stats: LinkStats | None = None
        self.stream_id = stream_id
        """The id part of the streamid (safe to log; the token is not kept here)."""
        self.kick_reason: EndReason | None = None

    @property
    def transport(self) -> Transport:
        return Transport.SRT

    @property
    def peer(self) -> str:
        return format_peer(self._conn.peer)

    @property
    def encrypted(self) -> bool:
        """Whether the connection negotiated a passphrase."""
        return self._conn.encrypted

    @property
    def latency_ms(self) -> int:
        """The receiver latency libsrt negotiated."""
        return self._conn.latency_ms

    @property
    def dropped_bytes(self) -> int:
        """Bytes dropped because the event loop fell behind by more than `max_pending_bytes`."""
        return self._wire.dropped_bytes

    def idle_seconds(self) -> float:
        """Seconds since the last received message (thread-safe: the admission check calls it)."""
        return max(0.0, self._server.clock() - self._wire.last_data)

    def disconnect(self, reason: EndReason) -> None:
        """Close soon; the sink is then closed with `reason` (non-blocking, idempotent)."""
        if self.kick_reason is None:
            self.kick_reason = reason
        self._server.request_close(self._conn.sock)

    def link_stats(self) -> LinkStats | None:
        """libsrt's statistics; after the link broke, the last ones read (None if never read)."""
        stats = self._server.link_stats(self._conn.sock)
        if stats is not None:
            self._stats = stats
        return self._stats


@dataclass(slots=True)
class SrtSession:
    """One publisher on the event loop: the loop's side of a connection.

    It owns the TS reader, the sink once the gate said yes, the backlog until then, how the
    connection ended, and the task that asks the gate.
    """

    handle: SrtPublisher
    wire: SrtWire
    started: float
    reader: MpegTsReader = field(default_factory=MpegTsReader)
    sink: IngestSink | None = None
    backlog: list[tuple[float, list[bytes]]] = field(default_factory=list)
    backlog_bytes: int = 0
    ended: EndReason | None = None
    task: asyncio.Task[None] | None = None

    def feed(self, received: float, messages: list[bytes]) -> None:
        """Split received messages into TS packets for the sink (which must be open)."""
        sink = self.sink
        assert sink is not None
        now_ms = max(0, round((received - self.started) * 1000))
        reader = self.reader
        with sink.batch():
            for message in messages:
                for packet in reader.feed(message, now_ms):
                    sink.write(packet)
        info = reader.take_info()
        if info is not None:
            sink.update_info(_to_stream_info(info))


def _to_stream_info(info: TsStreamInfo) -> StreamInfo:
    extra = {"video_pid": str(info.video_pid)} if info.video_pid is not None else {}
    return StreamInfo(
        video_width=info.width,
        video_height=info.height,
        frame_rate=info.frame_rate,
        video_codec=info.video_codec,
        audio_codec=info.audio_codec,
        extra=extra,
    )
