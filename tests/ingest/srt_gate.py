"""The engine side of the SRT ingest tests: admission and a gate over a few streams, recording to files."""

from __future__ import annotations

import asyncio
import threading
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

from relay.ingest.gate import (
    EndReason,
    IngestSink,
    PublishRefused,
    PublishRequest,
    RefusalReason,
    StreamInfo,
)
from relay.ingest.srt_server import SrtAdmit, SrtPublisher
from relay.media.packets import MediaKind, MediaPacket
from relay.srt.streamid import InvalidStreamId, parse_streamid


@dataclass
class RecordingSink:
    """Writes every payload to a file and remembers what the ingest said."""

    path: Path
    bytes_written: int = 0
    packets: int = 0
    keyframes: int = 0
    configs: int = 0
    kinds: set[MediaKind] = field(default_factory=set)
    infos: list[StreamInfo] = field(default_factory=list)
    close_reasons: list[EndReason] = field(default_factory=list)
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    progress: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self._file = self.path.open("wb")

    def write(self, packet: MediaPacket) -> None:
        assert not self.close_reasons, "write after close"
        assert len(packet.payload) % 188 == 0 and packet.payload[0] == 0x47
        self._file.write(packet.payload)
        self.bytes_written += len(packet.payload)
        self.progress.set()
        self.packets += 1
        self.keyframes += packet.keyframe
        self.configs += packet.config

    def write_many(self, packets: list[MediaPacket]) -> None:
        for packet in packets:
            self.write(packet)
        self.kinds.add(packet.kind)

    def batch(self, merged: bool = False) -> AbstractContextManager[None]:
        return nullcontext()

    def update_info(self, info: StreamInfo) -> None:
        self.infos.append(info)

    def close(self, reason: EndReason) -> None:
        self.close_reasons.append(reason)
        self._file.close()
        self.closed.set()


@dataclass(frozen=True)
class StreamDef:
    token: str
    passphrase: str | None = None
    active: bool = True
    latency_ms: int | None = None


class FakeEngine:
    """`SrtAdmission` + `PublishGate` over a dict of streams; writes each session to a file.

    Like the real engine: unknown id, wrong token, inactive stream and a second publisher while
    the first is still sending are refused; a publisher silent for `takeover_idle_seconds` is kicked.
    """

    def __init__(self, streams: dict[int, StreamDef], out_dir: Path, takeover_idle_seconds: float = 2.0):
        self.streams = streams
        self.out_dir = out_dir
        self.takeover_idle_seconds = takeover_idle_seconds
        self._lock = threading.Lock()  # check() runs on libsrt's thread
        self.live: dict[int, SrtPublisher] = {}
        self.sinks: dict[int, list[RecordingSink]] = {}
        self.checks = 0
        self.changed = asyncio.Event()

    def _lookup(self, streamid: str) -> tuple[int, StreamDef]:
        try:
            raw_id, token = parse_streamid(streamid)
        except InvalidStreamId as exc:
            raise PublishRefused(RefusalReason.BAD_REQUEST, str(exc)) from None
        if not raw_id.isdigit() or int(raw_id) not in self.streams:
            raise PublishRefused(RefusalReason.UNKNOWN_STREAM)
        stream = self.streams[int(raw_id)]
        if token != stream.token:
            raise PublishRefused(RefusalReason.BAD_TOKEN)
        if not stream.active:
            raise PublishRefused(RefusalReason.INACTIVE)
        return int(raw_id), stream

    def check(self, streamid: str) -> SrtAdmit:
        with self._lock:
            self.checks += 1
            sid, stream = self._lookup(streamid)
            current = self.live.get(sid)
            if current is not None and current.idle_seconds() < self.takeover_idle_seconds:
                raise PublishRefused(RefusalReason.ALREADY_LIVE)
            return SrtAdmit(stream_id=sid, passphrase=stream.passphrase, latency_ms=stream.latency_ms)

    async def open_publish(self, request: PublishRequest) -> IngestSink:
        sid, _stream = self._lookup(request.stream_key)
        assert isinstance(request.publisher, SrtPublisher)
        with self._lock:
            current = self.live.get(sid)
            if current is not None:
                if current.idle_seconds() < self.takeover_idle_seconds:
                    raise PublishRefused(RefusalReason.ALREADY_LIVE)
                current.disconnect(EndReason.KICKED)
            self.live[sid] = request.publisher
        sinks = self.sinks.setdefault(sid, [])
        sink = RecordingSink(self.out_dir / f"stream{sid}-{len(sinks)}.ts")
        sinks.append(sink)
        self.changed.set()
        return _ForgetOnClose(sink, lambda: self._forget(sid, request.publisher))

    def _forget(self, sid: int, handle: object) -> None:
        with self._lock:
            if self.live.get(sid) is handle:
                del self.live[sid]

    async def wait_bytes(self, sid: int, size: int, index: int = 0, limit_seconds: float = 15.0) -> RecordingSink:
        sink = await self.wait_sink(sid, index, limit_seconds=limit_seconds)
        async with asyncio.timeout(limit_seconds):
            while sink.bytes_written < size:
                sink.progress.clear()
                await sink.progress.wait()
        return sink

    async def wait_sink(self, sid: int, index: int = 0, limit_seconds: float = 10.0) -> RecordingSink:
        async with asyncio.timeout(limit_seconds):
            while len(self.sinks.get(sid, [])) <= index:
                self.changed.clear()
                await self.changed.wait()
        return self.sinks[sid][index]


class _ForgetOnClose:
    def __init__(self, sink: RecordingSink, forget: object) -> None:
        self.sink = sink
        self._forget = forget

    def write(self, packet: MediaPacket) -> None:
        self.sink.write(packet)

    def write_many(self, packets: list[MediaPacket]) -> None:
        self.sink.write_many(packets)

    def batch(self, merged: bool = False) -> AbstractContextManager[None]:
        return self.sink.batch(merged)

    def update_info(self, info: StreamInfo) -> None:
        self.sink.update_info(info)

    def close(self, reason: EndReason) -> None:
        self.sink.close(reason)
        assert callable(self._forget)
        self._forget()


def srt_url(port: int, streamid: str, **params: str) -> str:
    query = "&".join([f"streamid={streamid}", *(f"{k}={v}" for k, v in params.items())])
    return f"srt://127.0.0.1:{port}?{query}"
