"""One publisher connection of a hub (one input, main or backup): what it has sent and what it holds.

The hub (relay/hub/hub.py) decides which input feeds the subscribers; a session only forwards what its
publisher sends, and keeps what a switch to it would need.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING

from relay.hub.framing import Framing
from relay.ingest.gate import EndReason, SourceType, StreamInfo, StreamInput, Transport
from relay.media.packets import ContainerFormat, MediaPacket

if TYPE_CHECKING:
    from relay.hub.hub import WriteBatch


class InputSession:
    """The IngestSink of one publisher connection (one input); forwards to its hub while it is open.

    Its `framing` carries the stream when this session starts (or replaces) the source; a session that
    resumes the source, or waits as a standby, only keeps its configuration there, to be compared with
    the source's. A standby also holds its packets since its last sync point (`held`, bounded), so that
    a switch can start at a keyframe that already arrived.
    """

    def __init__(
        self,
        container: ContainerFormat,
        source_type: SourceType,
        transport: Transport | None,
        framing: Framing,
        stream_input: StreamInput,
        opened_at: float,
        *,
        on_packet: Callable[[InputSession, MediaPacket], None],
        on_packets: Callable[[InputSession, list[MediaPacket]], None],
        on_info: Callable[[InputSession, StreamInfo], None],
        on_closed: Callable[[InputSession, EndReason], None],
        batch: WriteBatch,
    ) -> None:
        self._batch = batch
        self._on_packet = on_packet
        self._on_packets = on_packets
        self._on_info = on_info
        self._on_closed = on_closed
        self.container = container
        self.source_type = source_type
        self.transport = transport
        self.framing = framing
        self.input = stream_input
        self.closed = False
        self.last_media_at = opened_at
        """Clock time of its last media packet (its opening until one arrives): silence is measured from it."""
        self.held: list[MediaPacket] = []
        self.held_bytes = 0
        self.held_sync_at: float | None = None
        """Clock time the first held packet (a sync point) arrived; None while nothing is held."""

    def hold(self, packet: MediaPacket, now: float, *, sync: bool, max_bytes: int) -> None:
        """Keep a standby's packet: configuration in its framing, media from its last sync point on."""
        if packet.config:
            self.framing.keep_configuration(packet)
            return
        if sync:
            self.drop_held()
            self.held_sync_at = now
        elif self.held_sync_at is None:
            return  # nothing before a sync point is of use to a switch
        self.held.append(packet)
        self.held_bytes += len(packet.payload)
        if self.held_bytes > max_bytes:
            self.drop_held()  # a GOP larger than the bound: a switch waits for the next keyframe

    def drop_held(self) -> None:
        self.held = []
        self.held_bytes = 0
        self.held_sync_at = None

    def write(self, packet: MediaPacket) -> None:
        if not self.closed:
            self._on_packet(self, packet)

    def write_many(self, packets: list[MediaPacket]) -> None:
        if not self.closed:
            self._on_packets(self, packets)

    def batch(self, merged: bool = False) -> AbstractContextManager[None]:
        return self._batch.merged() if merged else self._batch

    def update_info(self, info: StreamInfo) -> None:
        if not self.closed:
            self._on_info(self, info)

    def close(self, reason: EndReason) -> None:
        if not self.closed:
            self.closed = True
            self._on_closed(self, reason)
