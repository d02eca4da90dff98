"""A real (not mocked) PublishGate for the tests: checks `<id>?<token>` and records media to FLV."""

from __future__ import annotations

import asyncio
import time
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

from relay.ingest.gate import (
    EndReason,
    IngestSink,
    PublisherHandle,
    PublishRefused,
    PublishRequest,
    RefusalReason,
    StreamInfo,
)
from relay.media.flv import encode_tag, flv_header
from relay.media.packets import MediaPacket

STREAM_ID = "12"
TOKEN = "s3cr3t-t0ken"
"""The stream the `gate` fixture knows best: publish to `<STREAM_ID>?<TOKEN>`."""


@dataclass
class FileSink:
    """Writes one publishing session to an FLV file and remembers what the server told it."""

    path: Path
    publisher: PublisherHandle
    infos: list[StreamInfo] = field(default_factory=list)
    close_reasons: list[EndReason] = field(default_factory=list)
    packets: int = 0
    write_times: list[float] = field(default_factory=list)
    """When each packet reached the sink (`time.monotonic()`)."""
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    merged_batches: int = 0
    """Reads the connection handed over as merged (`IngestSink.batch(merged=True)`)."""

    def __post_init__(self) -> None:
        self._file = self.path.open("wb")
        self._file.write(flv_header())

    def write(self, packet: MediaPacket) -> None:
        assert not self.close_reasons, "write after close"
        self.packets += 1
        self.write_times.append(time.monotonic())
        self._file.write(encode_tag(packet.kind, packet.timestamp_ms, packet.payload))

    def write_many(self, packets: list[MediaPacket]) -> None:
        for packet in packets:
            self.write(packet)

    def batch(self, merged: bool = False) -> AbstractContextManager[None]:
        self.merged_batches += merged
        return nullcontext()

    def update_info(self, info: StreamInfo) -> None:
        self.infos.append(info)

    def close(self, reason: EndReason) -> None:
        self.close_reasons.append(reason)
        self._file.close()
        self.closed.set()


class RecordingGate:
    """Accepts `<id>?<token>` for known pairs; one live publisher per id with idle takeover."""

    def __init__(self, directory: Path, keys: dict[str, str], takeover_idle_seconds: float = 4.0) -> None:
        self.directory = directory
        self.keys = keys
        self.takeover_idle_seconds = takeover_idle_seconds
        self.sinks: dict[str, list[FileSink]] = {}
        self.refusals: list[RefusalReason] = []
        self.opened = asyncio.Event()

    async def open_publish(self, request: PublishRequest) -> IngestSink:
        stream_id, _, token = request.stream_key.partition("?")
        if stream_id not in self.keys:
            self._refuse(RefusalReason.UNKNOWN_STREAM)
        if self.keys[stream_id] != token:
            self._refuse(RefusalReason.BAD_TOKEN)
        sinks = self.sinks.setdefault(stream_id, [])
        live = [s for s in sinks if not s.close_reasons]
        for earlier in live:
            if earlier.publisher.idle_seconds() < self.takeover_idle_seconds:
                self._refuse(RefusalReason.ALREADY_LIVE)
            earlier.publisher.disconnect(EndReason.KICKED)
        sink = FileSink(self.directory / f"{stream_id}-{len(sinks)}.flv", request.publisher)
        sinks.append(sink)
        self.opened.set()
        return sink

    def _refuse(self, reason: RefusalReason) -> None:
        self.refusals.append(reason)
        raise PublishRefused(reason)
