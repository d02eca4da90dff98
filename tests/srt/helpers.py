"""Test-side parts for the SRT ingest: a gate that knows a few streams, media generation, publishers."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import imageio_ffmpeg

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

IMAGEIO_FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()
SYSTEM_FFMPEG = shutil.which("ffmpeg", path="/usr/bin") or ""
SRT_LIVE_TRANSMIT = shutil.which("srt-live-transmit") or ""


def free_udp_port() -> int:
    """A UDP port free on 127.0.0.1 right now (bind to 0, read it, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_ts(path: Path, *, seconds: float = 3.0, codec: str = "libx264", size: str = "320x240") -> Path:
    """An MPEG-TS test file: testsrc2 video (GOP 30) + sine AAC audio lasting one second longer.

    The audio-only tail is on purpose: ffmpeg as an SRT caller closes without linger, so the last
    few kilobytes it writes never leave it; they must not be video, whose hashes the tests compare.
    """
    video = ["-c:v", codec, "-g", "30", "-pix_fmt", "yuv420p"]
    video += ["-preset", "ultrafast"] if codec == "libx264" else ["-x265-params", "log-level=error:keyint=30"]
    cmd = [
        IMAGEIO_FFMPEG, "-hide_banner", "-loglevel", "error", "-y",
        "-f", "lavfi", "-i", f"testsrc2=size={size}:rate=25:duration={seconds}",
        "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={seconds + 1}",
        *video, "-c:a", "aac", "-b:a", "64k", "-f", "mpegts", str(path),
    ]  # fmt: skip
    subprocess.run(cmd, check=True, timeout=60, capture_output=True)
    return path


def remux(ffmpeg: str, src: Path, dst: Path) -> Path:
    """What `ffmpeg -c copy -f mpegts` makes of `src`: the bytes an ffmpeg publisher sends."""
    cmd = [ffmpeg, "-hide_banner", "-loglevel", "error", "-y", "-i", str(src), "-c", "copy", "-f", "mpegts", str(dst)]
    subprocess.run(cmd, check=True, timeout=60, capture_output=True)
    return dst


def video_framemd5(path: Path) -> list[str]:
    """Per-packet hashes of the video stream (`-c copy`): identical iff the video bytes are."""
    cmd = [IMAGEIO_FFMPEG, "-hide_banner", "-loglevel", "error", "-i", str(path)]
    cmd += ["-map", "0:v", "-c", "copy", "-f", "framemd5", "-"]
    out = subprocess.run(cmd, check=True, timeout=60, capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if line and not line.startswith("#")]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


# --- the engine side ------------------------------------------------------------------------------


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
        self.kinds.add(packet.kind)

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

    def update_info(self, info: StreamInfo) -> None:
        self.sink.update_info(info)

    def close(self, reason: EndReason) -> None:
        self.sink.close(reason)
        assert callable(self._forget)
        self._forget()


# --- publishers -------------------------------------------------------------------------------------


@dataclass
class Finished:
    returncode: int
    output: str


async def run_process(cmd: list[str], *, stdin_data: bytes | None = None, pace_seconds: float = 0.0,
                      limit_seconds: float = 30.0) -> Finished:  # fmt: skip
    """Run a publisher to completion (killed after `limit_seconds`), feeding stdin paced if asked."""
    proc = await asyncio.create_subprocess_exec(
        *cmd,
        stdin=asyncio.subprocess.PIPE if stdin_data is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        async with asyncio.timeout(limit_seconds):
            if stdin_data is not None:
                assert proc.stdin is not None
                await _feed_paced(proc.stdin, stdin_data, pace_seconds)
            out, _ = await proc.communicate()
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return Finished(proc.returncode, out.decode(errors="replace"))


async def _feed_paced(stdin: asyncio.StreamWriter, data: bytes, seconds: float) -> None:
    chunk = 1316 * 8
    steps = max(1, len(data) // chunk)
    delay = seconds / steps
    start = time.monotonic()
    try:
        for i, off in enumerate(range(0, len(data), chunk)):
            stdin.write(data[off : off + chunk])
            await stdin.drain()
            await asyncio.sleep(max(0.0, start + (i + 1) * delay - time.monotonic()))
    except (BrokenPipeError, ConnectionResetError):
        pass  # the publisher gave up (refused): its exit status tells the test
    finally:
        stdin.close()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            await stdin.wait_closed()


class Publisher:
    """A publisher subprocess fed from the test; `stop()` interrupts it like Ctrl-C, then reaps it."""

    def __init__(self, cmd: list[str]) -> None:
        self.cmd = cmd
        self.proc: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> Publisher:
        self.proc = await asyncio.create_subprocess_exec(
            *self.cmd,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        return self

    async def feed(self, data: bytes, pace_seconds: float) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        await _feed_paced(self.proc.stdin, data, pace_seconds)

    async def stop(self, limit_seconds: float = 5.0) -> Finished:
        proc = self.proc
        assert proc is not None
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGINT)
        try:
            async with asyncio.timeout(limit_seconds):
                out, _ = await proc.communicate()
        except TimeoutError:
            proc.kill()
            out, _ = await proc.communicate()
        assert proc.returncode is not None
        return Finished(proc.returncode, out.decode(errors="replace"))

    async def __aexit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.communicate()


def srt_url(port: int, streamid: str, **params: str) -> str:
    query = "&".join([f"streamid={streamid}", *(f"{k}={v}" for k, v in params.items())])
    return f"srt://127.0.0.1:{port}?{query}"


def ffmpeg_publish_cmd(ffmpeg: str, src: Path, url: str) -> list[str]:
    return [ffmpeg, "-hide_banner", "-loglevel", "error", "-re", "-i", str(src), "-c", "copy", "-f", "mpegts", url]


@contextlib.asynccontextmanager
async def background(coro: object) -> AsyncIterator[asyncio.Task[Finished]]:
    """Run a publisher coroutine as a task that is always awaited (or cancelled) on exit."""
    task: asyncio.Task[Finished] = asyncio.ensure_future(coro)  # type: ignore[arg-type]
    try:
        yield task
    finally:
        if not task.done():
            task.cancel()
        with contextlib.suppress(BaseException):
            await task
