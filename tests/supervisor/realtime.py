"""Real-ffmpeg helpers: receivers on 127.0.0.1 and a paced feeder of a sample's packets."""

from __future__ import annotations

import asyncio
from pathlib import Path

from relay.ingest.gate import IngestSink
from relay.media.flv import iter_tags
from relay.media.packets import MediaPacket
from tests.support import wait_listening


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


class Receiver:
    """An ffmpeg listener writing what it receives to a file; always reaped by `close`."""

    def __init__(self, ffmpeg: str, url: str, out: Path, fmt: str) -> None:
        self.url, self.out = url, out
        self._argv = [ffmpeg, "-hide_banner", "-loglevel", "error", "-y"]
        if url.startswith("rtmp"):
            self._argv += ["-listen", "1", "-timeout", "60"]
        self._argv += ["-i", url, "-c", "copy", "-f", fmt, str(out)]
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self, port: int, udp: bool = False) -> Receiver:
        self.proc = await asyncio.create_subprocess_exec(
            *self._argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            start_new_session=True,
        )
        await wait_listening(port, udp)
        return self

    async def finished(self, within: float) -> bool:
        assert self.proc is not None
        try:
            await asyncio.wait_for(self.proc.wait(), within)
        except TimeoutError:
            return False
        return True

    async def close(self) -> None:
        if self.proc is None or self.proc.returncode is not None:
            return
        self.proc.send_signal(2)
        if not await self.finished(3):
            self.proc.kill()
            await self.proc.wait()
