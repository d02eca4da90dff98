"""Receivers: destinations the relay pushes to, as real ffmpeg listeners recording what arrives to a file."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import time
from pathlib import Path
from types import TracebackType

from tests.support.binaries import FFMPEG
from tests.support.media import md5s
from tests.support.net import free_port, wait_listening
from tests.support.netns import Netns, listening
from tests.support.polling import wait_for
from tests.support.processes import reap


def listener_argv(listen_url: str, out: Path, container: str, *, input_options: tuple[str, ...] = ()) -> list[str]:
    """ffmpeg listening on `listen_url` (RTMP `-listen 1` for up to 60 s, or an SRT `mode=listener` URL) and
    writing every stream it receives unchanged to `out` as `container`."""
    argv = [FFMPEG, "-hide_banner", "-loglevel", "error", "-nostdin", "-y"]
    if listen_url.startswith("rtmp"):
        argv += ["-listen", "1", "-timeout", "60"]
    return [*argv, *input_options, "-i", listen_url, "-map", "0", "-c", "copy", "-f", container, str(out)]


class Receiver:
    """A destination: an ffmpeg listener (RTMP `-listen 1`, or SRT `mode=listener`) recording to a file.

    With `watch_frames`, it also writes one framemd5 line per video packet to its stdout as it arrives,
    so a test can time the first frame (`first_frame`).
    """

    def __init__(
        self,
        out: Path,
        *,
        srt: bool = False,
        port: int | None = None,
        key: str = "dest-key",
        watch_frames: bool = False,
        host: str = "127.0.0.1",
        netns: Netns | None = None,
        srt_latency_ms: int = 120,
    ) -> None:
        self.srt = srt
        self.netns = netns
        """Listen inside this namespace, on its address (tests/support/netns.py), instead of `host`."""
        self.host = netns.address if netns else host
        """The address it listens on: loopback, the host's side of a container bridge (tests/containers), or
        a namespace's address."""
        self.srt_latency_us = srt_latency_ms * 1000
        self.port = port or free_port(socket.SOCK_DGRAM if srt else socket.SOCK_STREAM)
        self.key = key
        self.out = out
        self.watch_frames = watch_frames
        self.proc: asyncio.subprocess.Process | None = None
        self.frame_times: list[float] = []
        self._reader: asyncio.Task[None] | None = None
        self._first = asyncio.Event()

    @property
    def listen_url(self) -> str:
        if self.srt:
            return f"srt://{self.host}:{self.port}?mode=listener&latency={self.srt_latency_us}&passphrase={self.key}"
        return f"rtmp://{self.host}:{self.port}/live/{self.key}"

    def uri(self, scheme: str | None = None, port: int | None = None, host: str | None = None) -> str:
        """What the relay pushes to (`rtmps` through a TLS proxy on `port`; through any proxy on `host`)."""
        host = host or self.host
        if self.srt:  # the passphrase is the SRT destination's secret: the relay must never log it
            return f"srt://{host}:{port or self.port}?mode=caller&latency={self.srt_latency_us}&passphrase={self.key}"
        return f"{scheme or 'rtmp'}://{host}:{port or self.port}/live/{self.key}"

    async def start(self) -> Receiver:
        probe = ("-probesize", "100000", "-analyzeduration", "200000") if self.watch_frames else ()
        argv = listener_argv(self.listen_url, self.out, "mpegts" if self.srt else "flv", input_options=probe)
        if self.watch_frames:
            argv += ["-map", "0:v", "-c", "copy", "-flush_packets", "1", "-f", "framemd5", "pipe:1"]
        if self.netns is not None:
            argv = self.netns.argv(argv)
        with self.log_path.open("ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE if self.watch_frames else asyncio.subprocess.DEVNULL,
                stderr=log,
                start_new_session=True,
            )
        if self.watch_frames:
            self._reader = asyncio.create_task(self._read_frames())
        if self.netns is None:
            await wait_listening(self.port, self.srt)
        else:
            pid = self.proc.pid  # `ip netns exec` execs ffmpeg: the same process, in the namespace

            async def bound() -> bool:
                return listening(pid, self.port, udp=self.srt)

            await wait_for(bound, 10.0, f"receiver listening on {self.host}:{self.port}")
        return self

    async def __aenter__(self) -> Receiver:
        return await self.start()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def _read_frames(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        async for line in self.proc.stdout:
            if line and not line.startswith(b"#"):
                self.frame_times.append(time.monotonic())
                self._first.set()

    async def first_frame(self, within: float) -> float:
        """Monotonic time the first video packet reached the receiver."""
        await asyncio.wait_for(self._first.wait(), within)
        return self.frame_times[0]

    @property
    def log_path(self) -> Path:
        return self.out.with_suffix(self.out.suffix + ".log")

    def log(self) -> str:
        """What the receiver's ffmpeg said (errors only)."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def finished(self, within: float) -> int | None:
        """Exit code once it ends by itself within `within` seconds, else None (still running)."""
        assert self.proc is not None
        try:
            return await asyncio.wait_for(asyncio.shield(self.proc.wait()), within)
        except TimeoutError:
            return None

    async def ends_cleanly(self, within: float | None = None) -> None:
        """It ends by itself within `within` seconds with exit code 0 (a complete recording). An
        encrypted SRT listener sees its caller go only at its peer idle timeout (5 s) after the close."""
        code = await self.finished(within or (12.0 if self.srt else 8.0))
        state = "is still running" if code is None else f"exited with {code}"
        assert code == 0, f"{self.out.name}: the receiver {state}: {self.log()[-600:]}"

    def kill(self) -> None:
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)

    async def close(self) -> None:
        if self.proc is not None:
            await reap(self.proc, 3.0)
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)

    def frames(self) -> list[str]:
        return md5s(self.out) if self.out.exists() and self.out.stat().st_size else []
