"""A sample's packets fed to a hub in real time (the receivers and the rest are in tests.support)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from relay.ingest.gate import IngestSink
from relay.media.flv import iter_tags
from relay.media.packets import MediaPacket


def flv_packets(path: Path, loops: int = 1) -> list[MediaPacket]:
    """The sample's tags; with loops > 1 the media repeats with continuing timestamps (configs once)."""
    tags = list(iter_tags(path.read_bytes()))
    config = [t for t in tags if t.config]
    media = [t for t in tags if not t.config]
    span = media[-1].timestamp_ms + 33
    out = list(config)
    for n in range(loops):
        out += [MediaPacket(t.kind, t.timestamp_ms + n * span, t.payload, t.keyframe, t.config) for t in media]
    return out


async def feed_realtime(sink: IngestSink, packets: list[MediaPacket], *, speed: float = 1.0) -> None:
    loop = asyncio.get_running_loop()
    start = loop.time()
    base = next((p.timestamp_ms for p in packets if not p.config), 0)
    for packet in packets:
        due = start + max(0, packet.timestamp_ms - base) / 1000.0 / speed
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        sink.write(packet)
