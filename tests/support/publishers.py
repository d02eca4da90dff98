"""Publishers: the command lines of real encoders (ffmpeg, GStreamer) and one process wrapper for all of them.

A `Publisher` runs in its own session (a SIGKILL takes whatever it started with it), collects stdout and
stderr together, and is always reaped by `close()` (or leaving its `async with`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path
from types import TracebackType

from tests.support.binaries import FFMPEG, GST_LAUNCH
from tests.support.processes import Finished, feed_paced


def ffmpeg_publish_argv(
    source: Path, url: str, *, ffmpeg: str = FFMPEG, realtime: bool = True, pes_lengths: bool = False
) -> list[str]:
    """ffmpeg sending a file unchanged (`-c copy`) to `url`: FLV for rtmp(s)://, MPEG-TS for srt://.

    `pes_lengths` writes the length of every MPEG-TS video PES (`-omit_video_pes_length 0`): a demuxer then
    emits the last video packet as soon as it is complete instead of at EOF, so it is not among the last
    bytes an ffmpeg SRT caller loses when it closes."""
    argv = [ffmpeg, "-hide_banner", "-loglevel", "error", "-nostdin"]
    if realtime:
        argv.append("-re")
    argv += ["-i", str(source), "-c", "copy"]
    if url.startswith("rtmps:"):
        argv += ["-tls_verify", "0"]  # our test certificates are self-signed (ffmpeg 8+ verifies by default)
    if url.startswith("srt:"):
        if pes_lengths:
            argv += ["-omit_video_pes_length", "0"]
        return [*argv, "-f", "mpegts", url]
    return [*argv, "-f", "flv", url]


def looped_publish_argv(source: Path, url: str) -> list[str]:
    """`ffmpeg_publish_argv` replaying `source` over and over (`-stream_loop -1`) until stopped."""
    argv = ffmpeg_publish_argv(source, url, pes_lengths=True)
    at = argv.index("-i")
    return [*argv[:at], "-stream_loop", "-1", *argv[at:]]


def pattern_publish_argv(url: str, seconds: float, *, size: str = "320x240", rate: int = 25) -> list[str]:
    """A live encoder: a `size` test pattern at `rate` fps (GOP of one second) with a tone, encoded in real
    time and published as FLV to `url` (RTMP or RTMPS) for `seconds`."""
    argv = [
        FFMPEG,
        "-hide_banner",
        "-loglevel",
        "error",
        "-nostdin",
        "-re",
        "-f",
        "lavfi",
        "-i",
        f"testsrc2=size={size}:rate={rate}",
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-g",
        str(rate),
        "-b:v",
        "600k",
        "-c:a",
        "aac",
        "-t",
        str(seconds),
    ]
    if url.startswith("rtmps:"):
        argv += ["-tls_verify", "0"]
    return [*argv, "-f", "flv", url]


def pattern_publisher(url: str, seconds: float) -> subprocess.Popen[bytes]:
    """`pattern_publish_argv` started without an event loop (for tests driving a relay subprocess); the
    caller reaps it. Its stderr is a pipe, for the error of a refused publish."""
    return subprocess.Popen(
        pattern_publish_argv(url, seconds), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )


def gst_publish_argv(sample: Path, *, port: int, stream: str, tls: bool) -> list[str]:
    """GStreamer remuxing an FLV file's H.264/AAC into rtmp2sink (no re-encoding)."""
    assert GST_LAUNCH is not None
    sink = [
        "rtmp2sink",
        f"scheme={'rtmps' if tls else 'rtmp'}",
        "host=127.0.0.1",
        f"port={port}",
        "application=live",
        f"stream={stream}",
        "async-connect=false",
        "sync=false",
    ]
    if tls:
        sink.append("tls-validation-flags=0")
    return [
        GST_LAUNCH,
        "-q",
        "filesrc",
        f"location={sample}",
        "!",
        "flvdemux",
        "name=d",
        "d.video",
        "!",
        "queue",
        "!",
        "h264parse",
        "!",
        "flvmux",
        "name=m",
        "streamable=true",
        "!",
        *sink,
        "d.audio",
        "!",
        "queue",
        "!",
        "aacparse",
        "!",
        "m.",
    ]


class Publisher:
    """A publisher process (an encoder, a file replayed in real time, srt-live-transmit fed by the test)."""

    def __init__(self, argv: list[str], *, stdin: bool = False) -> None:
        self.argv = argv
        self.stdin = stdin
        """True: the test writes the media to its stdin (`feed`)."""
        self.proc: asyncio.subprocess.Process | None = None
        self.started_at = 0.0

    @classmethod
    def replaying(cls, source: Path, url: str) -> Publisher:
        """ffmpeg replaying `source` to `url` in real time, as an encoder would send it live."""
        return cls(ffmpeg_publish_argv(source, url, pes_lengths=True))

    async def start(self) -> Publisher:
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv,
            stdin=asyncio.subprocess.PIPE if self.stdin else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
        self.started_at = time.monotonic()
        return self

    async def __aenter__(self) -> Publisher:
        return await self.start()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def feed(self, data: bytes, pace_seconds: float) -> None:
        """Write `data` to its stdin over `pace_seconds`, then close stdin."""
        assert self.proc is not None and self.proc.stdin is not None
        await feed_paced(self.proc.stdin, data, pace_seconds)

    async def wait(self, within: float) -> Finished:
        """Exit status and output of a publisher that ends by itself within `within` seconds."""
        assert self.proc is not None
        out, _ = await asyncio.wait_for(self.proc.communicate(), within)
        assert self.proc.returncode is not None
        return Finished(self.proc.returncode, out.decode(errors="replace"))

    async def stop(self, limit_seconds: float = 5.0) -> Finished:
        """Interrupt it like Ctrl-C (SIGINT), SIGKILL after `limit_seconds`; its exit status and output."""
        proc = self.proc
        assert proc is not None
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGINT)
        try:
            async with asyncio.timeout(limit_seconds):
                out, _ = await proc.communicate()
        except TimeoutError:
            self.sigkill()
            out, _ = await proc.communicate()
        assert proc.returncode is not None
        return Finished(proc.returncode, out.decode(errors="replace"))

    def sigkill(self) -> None:
        """A drop: the publisher vanishes without an unpublish."""
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)

    async def close(self) -> None:
        if self.proc is not None:
            if self.proc.returncode is None:
                self.sigkill()
            await self.proc.communicate()


class ReconnectingPublisher:
    """An encoder that reconnects, as OBS and hardware encoders do: ffmpeg replays `source` in a loop
    (`-stream_loop -1 -re -c copy`) to `url`; whenever it exits (the node died, refused it, the balancer
    closed it), it starts again after `retry_seconds`. `attempts` records each run (start, end, exit code).
    Use it in `async with`; leaving stops it and reaps the last run."""

    def __init__(self, source: Path, url: str, *, retry_seconds: float = 0.3) -> None:
        self.argv = looped_publish_argv(source, url)
        self.retry_seconds = retry_seconds
        self.attempts: list[tuple[float, float | None, int | None]] = []
        self.output: list[str] = []
        """The last lines each run said (errors only: -loglevel error), for a failure message."""
        self._current: Publisher | None = None
        self._task: asyncio.Task[None] | None = None

    async def _loop(self) -> None:
        while True:
            publisher = self._current = await Publisher(self.argv).start()
            started = time.monotonic()
            self.attempts.append((started, None, None))
            assert publisher.proc is not None
            out, _ = await publisher.proc.communicate()
            self.attempts[-1] = (started, time.monotonic(), publisher.proc.returncode)
            self.output = [*self.output, *out.decode(errors="replace").splitlines()[-3:]][-30:]
            await asyncio.sleep(self.retry_seconds)

    async def __aenter__(self) -> ReconnectingPublisher:
        self._task = asyncio.create_task(self._loop())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        if self._current is not None:
            await self._current.close()

    def runs_since(self, since: float) -> int:
        return sum(1 for started, _, _ in self.attempts if started >= since)
