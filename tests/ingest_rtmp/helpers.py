"""A real (not mocked) PublishGate for the tests: checks `<id>?<token>` and records media to FLV."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import imageio_ffmpeg

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

IMAGEIO_FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()
SYSTEM_FFMPEG = "/usr/bin/ffmpeg" if Path("/usr/bin/ffmpeg").exists() else None
GST_LAUNCH = shutil.which("gst-launch-1.0")


@dataclass
class FileSink:
    """Writes one publishing session to an FLV file and remembers what the server told it."""

    path: Path
    publisher: PublisherHandle
    infos: list[StreamInfo] = field(default_factory=list)
    close_reasons: list[EndReason] = field(default_factory=list)
    packets: int = 0
    closed: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self._file = self.path.open("wb")
        self._file.write(flv_header())

    def write(self, packet: MediaPacket) -> None:
        assert not self.close_reasons, "write after close"
        self.packets += 1
        self._file.write(encode_tag(packet.kind, packet.timestamp_ms, packet.payload))

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


def framemd5(ffmpeg: str, path: Path, stream: str) -> list[str]:
    """Per-packet lines (dts, pts, duration, size, md5) of one stream, copied without decoding."""
    result = subprocess.run(
        [ffmpeg, "-hide_banner", "-loglevel", "error", "-i", str(path), "-map", f"0:{stream}", "-c", "copy",
         "-f", "framemd5", "-"], capture_output=True, timeout=30, check=True)
    return [line for line in result.stdout.decode().splitlines() if line and not line.startswith("#")]


def make_sample(ffmpeg: str, path: Path, seconds: float = 3.0) -> Path:
    """A short H.264 + AAC FLV test pattern (small GOP so a late joiner has keyframes to find)."""
    subprocess.run(
        [ffmpeg, "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25",
         "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100", "-t", str(seconds),
         "-c:v", "libx264", "-preset", "ultrafast", "-g", "10", "-pix_fmt", "yuv420p",
         "-c:a", "aac", "-b:a", "64k", "-f", "flv", str(path)], check=True, timeout=60, capture_output=True)
    return path


async def run_process(argv: list[str], limit_seconds: float) -> tuple[int, str]:
    """Run a publisher to completion (killed on timeout); returns its exit code and stderr tail."""
    process = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE)
    try:
        _, stderr = await asyncio.wait_for(process.communicate(), limit_seconds)
    except (TimeoutError, asyncio.CancelledError):
        process.kill()
        await process.wait()
        raise
    return process.returncode or 0, stderr.decode(errors="replace")[-2000:]


def ffmpeg_publish_argv(ffmpeg: str, sample: Path, url: str, *, realtime: bool = False) -> list[str]:
    """ffmpeg pushing the sample unchanged (-c copy) to `url`."""
    argv = [ffmpeg, "-hide_banner", "-loglevel", "error", "-nostdin"]
    if realtime:
        argv.append("-re")
    argv += ["-i", str(sample), "-c", "copy", "-f", "flv"]
    if url.startswith("rtmps:"):
        argv += ["-tls_verify", "0"]  # our test certificate is self-signed (ffmpeg 8+ verifies by default)
    return [*argv, url]


def gst_publish_argv(sample: Path, *, port: int, stream: str, tls: bool) -> list[str]:
    """GStreamer remuxing the sample's H.264/AAC into rtmp2sink (no re-encoding)."""
    assert GST_LAUNCH is not None
    sink = ["rtmp2sink", f"scheme={'rtmps' if tls else 'rtmp'}", "host=127.0.0.1", f"port={port}",
            "application=live", f"stream={stream}", "async-connect=false", "sync=false"]
    if tls:
        sink.append("tls-validation-flags=0")
    return [GST_LAUNCH, "-q", "filesrc", f"location={sample}", "!", "flvdemux", "name=d",
            "d.video", "!", "queue", "!", "h264parse", "!", "flvmux", "name=m", "streamable=true", "!", *sink,
            "d.audio", "!", "queue", "!", "aacparse", "!", "m."]
