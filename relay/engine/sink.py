"""The sink one publishing connection writes into: it counts, then hands media to the stream's hub."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager

from relay.engine.registry import LiveRegistry, LiveSession
from relay.ingest.gate import EndReason, IngestSink, StreamInfo
from relay.media.packets import MediaPacket


class SessionSink:
    """An `IngestSink` for one session: meters in the registry, media to the hub, the end to the engine."""

    def __init__(
        self,
        session: LiveSession,
        hub_sink: IngestSink,
        registry: LiveRegistry,
        on_info: Callable[[LiveSession, StreamInfo], None],
        on_end: Callable[[LiveSession, EndReason], None],
        may_write: Callable[[int], bool] | None = None,
    ) -> None:
        self._session = session
        self._hub_sink = hub_sink
        self._registry = registry
        self._on_info = on_info
        self._on_end = on_end
        self._may_write = may_write
        """Asked before each packet (the stream's lease still provable); False: the packet is dropped. None:
        nothing to ask (one node, no lease)."""
        self._closed = False

    def write(self, packet: MediaPacket) -> None:
        if self._closed or (self._may_write is not None and not self._may_write(self._session.stream_id)):
            return
        self._registry.count(self._session.stream_id, len(packet.payload), self._session.input)
        self._hub_sink.write(packet)

    def write_many(self, packets: list[MediaPacket]) -> None:
        if self._closed or (self._may_write is not None and not self._may_write(self._session.stream_id)):
            return
        size = sum([len(packet.payload) for packet in packets])
        self._registry.count(self._session.stream_id, size, self._session.input, len(packets))
        self._hub_sink.write_many(packets)

    def batch(self, merged: bool = False) -> AbstractContextManager[None]:
        return self._hub_sink.batch(merged)

    def update_info(self, info: StreamInfo) -> None:
        updated = self._registry.update_info(self._session, info)
        if updated is not None:
            self._session = updated
            self._on_info(updated, info)
        self._hub_sink.update_info(info)

    def close(self, reason: EndReason) -> None:
        if self._closed:
            return
        self._closed = True
        self._hub_sink.close(reason)
        self._on_end(self._session, reason)
