"""End-to-end parts: test media, publishers and receivers as real ffmpeg processes, the relay over HTTP.

Everything here is bounded in time and reaps what it starts. The relay runs as a `RelayProcess`
subprocess; its blocking HTTP helper is called through `asyncio.to_thread` so that the proxies of
`tests.supervisor.realtime` (which run on the test's event loop) never stall while a test polls the API.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import imageio_ffmpeg

from tests.supervisor.realtime import free_port, is_contiguous_run, self_signed_context, tcp_proxy, wait_listening
from tests.support import RelayProcess

FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()
GOP = 30
"""Frames per GOP of the test media (and the most a legitimately late receiver may miss)."""

SRT_TAIL_FRAMES = 3
"""Video packets an SRT leg may lose at a clean end (see Media.make): the last TS video packet completes only
at the end of input and races ffmpeg's close of its SRT socket (tests/system/test_srt_destination_end.py)."""

T = TypeVar("T")

__all__ = ["free_port", "is_contiguous_run", "self_signed_context", "tcp_proxy"]  # re-exported for the tests


# --- media ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VideoFrame:
    """One video packet as `-f framemd5` reports it."""

    dts: int
    pts: int
    size: int
    md5: str


def _run(argv: list[str], timeout: float = 60.0) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True, timeout=timeout).stdout


def video_frames(path: Path, *, bsf: str | None = None) -> list[VideoFrame]:
    """The video packets of a file (`-c copy`): equal md5 lists mean equal video bytes."""
    argv = [FFMPEG, "-hide_banner", "-loglevel", "error", "-i", str(path), "-map", "0:v", "-c", "copy"]
    if bsf:
        argv += ["-bsf:v", bsf]
    out = _run([*argv, "-f", "framemd5", "-"])
    frames = []
    for line in out.splitlines():
        if not line or line.startswith("#"):
            continue
        parts = [p.strip() for p in line.split(",")]
        frames.append(VideoFrame(int(parts[1]), int(parts[2]), int(parts[4]), parts[5]))
    return frames


def md5s(path: Path) -> list[str]:
    return [f.md5 for f in video_frames(path)]


def stream_kinds(path: Path) -> list[str]:
    """"codec,type" of each stream of a file, in index order (ffprobe of the system's ffmpeg)."""
    out = _run(["ffprobe", "-v", "error", "-show_entries", "stream=index,codec_name,codec_type", "-of", "csv=p=0",
                str(path)])
    by_index: dict[int, str] = {}  # MPEG-TS lists each stream twice (also under its program)
    for line in out.splitlines():
        if line.strip():
            index, kind = line.strip().split(",", 1)
            by_index[int(index)] = kind
    return [by_index[i] for i in sorted(by_index)]


@dataclass(frozen=True)
class Media:
    """One test clip in both ingest containers, and the video each kind of destination must receive."""

    flv: Path
    ts: Path
    seconds: float
    ref_flv: list[str]
    """FLV source -> FLV destination (RTMP, RTMPS): the very packets of the FLV."""
    ref_flv_to_ts: list[str]
    """FLV source -> MPEG-TS destination (SRT): the packets after `-c copy -f mpegts` (Annex B)."""
    ref_ts: list[str]
    """MPEG-TS source -> MPEG-TS destination: the packets of the TS."""
    ref_ts_to_flv: list[str]
    """MPEG-TS source -> FLV destination: the packets after `-c copy -f flv` (length-prefixed)."""

    def reference(self, ingest: str, destination: str) -> list[str]:
        ts_in = ingest == "srt"
        ts_out = destination == "srt"
        if ts_in:
            return self.ref_ts if ts_out else self.ref_ts_to_flv
        return self.ref_flv_to_ts if ts_out else self.ref_flv

    @classmethod
    def make(cls, directory: Path, seconds: float, name: str = "clip") -> Media:
        """testsrc2 640x360@30 + sine, H.264 (GOP 30, no B-frames) + AAC.

        An ffmpeg SRT caller loses the last kilobytes it writes when it closes: about 50 KB without
        `-linger` (the publisher), about 10 KB even with the relay's `-linger 2` (reproduced with plain
        ffmpeg into srt-live-transmit, no relay involved). So the audio runs one second past the video,
        and MPEG-TS video PES packets carry their length (`-omit_video_pes_length 0`, also on the SRT
        publisher): a demuxer then emits the last video packet as soon as it is complete instead of at
        EOF, so it is not among the last bytes sent, and the lost tail is mostly audio."""
        directory.mkdir(parents=True, exist_ok=True)
        flv, ts, back = directory / f"{name}.flv", directory / f"{name}.ts", directory / f"{name}-ts.flv"
        _run([FFMPEG, "-hide_banner", "-loglevel", "error", "-y",
              "-f", "lavfi", "-i", f"testsrc2=size=640x360:rate=30:duration={seconds}",
              "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=44100:duration={seconds + 1.0}",
              "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-g", str(GOP),
              "-keyint_min", str(GOP), "-sc_threshold", "0", "-bf", "0", "-pix_fmt", "yuv420p",
              "-b:v", "1M", "-c:a", "aac", "-b:a", "96k", "-f", "flv", str(flv)])  # fmt: skip
        _run([FFMPEG, "-hide_banner", "-loglevel", "error", "-y", "-i", str(flv), "-c", "copy",
              "-omit_video_pes_length", "0", "-f", "mpegts", str(ts)])
        _run([FFMPEG, "-hide_banner", "-loglevel", "error", "-y", "-i", str(ts), "-c", "copy", "-f", "flv",
              str(back)])
        return cls(flv, ts, seconds, md5s(flv), md5s(ts), md5s(ts), md5s(back))


# --- processes ------------------------------------------------------------------------------------


async def _reap(proc: asyncio.subprocess.Process, grace: float) -> None:
    if proc.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGINT)
    try:
        await asyncio.wait_for(proc.wait(), grace)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()


class Publisher:
    """`ffmpeg -re -i <file> -c copy -f <fmt> <url>`: an encoder replaying a clip in real time."""

    def __init__(self, source: Path, url: str, *, tls: bool = False) -> None:
        fmt = "mpegts" if url.startswith("srt://") else "flv"
        self.argv = [FFMPEG, "-hide_banner", "-loglevel", "error", "-nostdin", "-re", "-i", str(source),
                     "-c", "copy"]
        if tls:
            self.argv += ["-tls_verify", "0"]
        if fmt == "mpegts":
            self.argv += ["-omit_video_pes_length", "0"]  # see Media.make
        self.argv += ["-f", fmt, url]
        self.proc: asyncio.subprocess.Process | None = None
        self.started_at = 0.0

    async def start(self) -> Publisher:
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE, start_new_session=True,
        )
        self.started_at = time.monotonic()
        return self

    async def wait(self, within: float) -> tuple[int, str]:
        """Exit code and stderr of a publisher that ends by itself."""
        assert self.proc is not None
        _, err = await asyncio.wait_for(self.proc.communicate(), within)
        assert self.proc.returncode is not None
        return self.proc.returncode, err.decode(errors="replace")

    def sigkill(self) -> None:
        """A drop: the encoder vanishes without an unpublish."""
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)

    async def close(self) -> None:
        if self.proc is not None:
            if self.proc.returncode is None:
                self.sigkill()
            await self.proc.wait()


class Receiver:
    """A destination: an ffmpeg listener (RTMP `-listen 1`, or SRT `mode=listener`) recording to a file.

    With `watch_frames`, it also writes one framemd5 line per video packet to its stdout as it arrives,
    so a test can time the first frame (`first_frame`).
    """

    def __init__(self, out: Path, *, srt: bool = False, port: int | None = None, key: str = "dest-key",
                 watch_frames: bool = False) -> None:
        self.srt = srt
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
            return f"srt://127.0.0.1:{self.port}?mode=listener&latency=120000&passphrase={self.key}"
        return f"rtmp://127.0.0.1:{self.port}/live/{self.key}"

    def uri(self, scheme: str | None = None, port: int | None = None) -> str:
        """What the relay pushes to (`rtmps` through a TLS proxy on `port`)."""
        if self.srt:  # the passphrase is the SRT destination's secret: the relay must never log it
            return f"srt://127.0.0.1:{self.port}?mode=caller&latency=120000&passphrase={self.key}"
        return f"{scheme or 'rtmp'}://127.0.0.1:{port or self.port}/live/{self.key}"

    async def start(self) -> Receiver:
        argv = [FFMPEG, "-hide_banner", "-loglevel", "error", "-nostdin", "-y"]
        if not self.srt:
            argv += ["-listen", "1", "-timeout", "60"]
        if self.watch_frames:
            argv += ["-probesize", "100000", "-analyzeduration", "200000"]
        argv += ["-i", self.listen_url, "-map", "0", "-c", "copy", "-f", "mpegts" if self.srt else "flv",
                 str(self.out)]
        if self.watch_frames:
            argv += ["-map", "0:v", "-c", "copy", "-flush_packets", "1", "-f", "framemd5", "pipe:1"]
        with self.log_path.open("ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE if self.watch_frames else asyncio.subprocess.DEVNULL,
                stderr=log, start_new_session=True,
            )
        if self.watch_frames:
            self._reader = asyncio.create_task(self._read_frames())
        await wait_listening(self.port, self.srt)
        return self

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
            await _reap(self.proc, 3.0)
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)

    def frames(self) -> list[str]:
        return md5s(self.out) if self.out.exists() and self.out.stat().st_size else []


# --- the relay ------------------------------------------------------------------------------------


@dataclass
class RelayApi:
    """The relay subprocess and the secrets it must never log (tokens, destination keys)."""

    relay: RelayProcess
    secrets: set[str] = field(default_factory=set)

    @property
    def pid(self) -> int:
        assert self.relay.process is not None
        return self.relay.process.pid

    async def call(self, method: str, path: str, body: Any = None, expect: int = 200) -> Any:
        result = await asyncio.to_thread(self.relay.api, method, path, body)
        assert result.status == expect, f"{method} {path}: {result.status} {result.body}"
        return result.body

    async def stream(self, name: str = "show") -> dict[str, Any]:
        stream: dict[str, Any] = await self.call("POST", "/streaming/streams", {"name": name})
        self.secrets.add(stream["token"])
        return stream

    async def add_restream(self, stream_id: int, uri: str, key: str | None = None, **fields: Any) -> dict[str, Any]:
        if key:
            self.secrets.add(key)
        body = {"restream": {"stream_id": stream_id, "uri": uri, "tls_verify": False, **fields}}
        restream: dict[str, Any] = await self.call("POST", "/streaming/restreams", body)
        return restream

    async def patch_restream(self, restream_id: int, **fields: Any) -> dict[str, Any]:
        restream: dict[str, Any] = await self.call("PATCH", f"/streaming/restreams/{restream_id}",
                                                   {"restream": fields})
        return restream

    async def status(self, restream_id: int) -> dict[str, Any]:
        restream = await self.call("GET", f"/streaming/restreams/{restream_id}")
        status: dict[str, Any] = restream["status"]
        return status

    async def wait_state(self, restream_id: int, *states: str, within: float = 15.0,
                         check: Callable[[dict[str, Any]], bool] | None = None) -> dict[str, Any]:
        async def reached() -> dict[str, Any] | None:
            status = await self.status(restream_id)
            return status if status["state"] in states and (check is None or check(status)) else None

        return await wait_for(reached, within, f"restream {restream_id} in {states}")

    async def wait_live(self, stream_id: int, live: bool = True, within: float = 15.0) -> None:
        async def reached() -> bool:
            return bool((await self.call("GET", f"/streaming/streams/{stream_id}"))["live"]) is live

        await wait_for(reached, within, f"stream {stream_id} live={live}")

    def log(self) -> str:
        return self.relay.log()

    def assert_no_secrets(self) -> None:
        text = self.log()
        leaked = sorted(s for s in self.secrets if s and s in text)
        assert not leaked, f"secrets in the relay's log: {leaked}"


async def wait_for(probe: Callable[[], Awaitable[T | bool | None]], within: float, what: str,
                   every: float = 0.1) -> T:
    """Poll `probe` until it returns something truthy (returned), failing after `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        value = await probe()
        if value:
            return value  # type: ignore[return-value]
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached within {within} s: {what}")
        await asyncio.sleep(every)


def relay_children(pid: int) -> dict[int, str]:
    """Direct children of a process (pid -> command line), from /proc."""
    kids: dict[int, str] = {}
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError):
                for child in Path(f"/proc/{pid}/task/{task}/children").read_text().split():
                    with contextlib.suppress(OSError):
                        raw = Path(f"/proc/{child}/cmdline").read_bytes()
                        kids[int(child)] = raw.replace(b"\0", b" ").decode(errors="replace")
    return kids


def push_pids(relay_pid: int, port: int) -> list[int]:
    """The relay's ffmpeg child(ren) pushing to 127.0.0.1:`port`."""
    needle = re.compile(rf"127\.0\.0\.1:{port}\b")
    return [pid for pid, cmd in relay_children(relay_pid).items() if "pipe:0" in cmd and needle.search(cmd)]


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def pid_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def srt_tail_ok(got: list[str], want: list[str], tail: int = SRT_TAIL_FRAMES) -> bool:
    """`got` is `want` from the first packet on, except for a lost tail of at most `tail` packets, the
    last one received possibly cut short: what an SRT leg delivers on a clean end (see Media.make)."""
    if not len(want) - tail <= len(got) <= len(want):
        return False
    return got[:-1] == want[:len(got) - 1]


def split_as_two_plays(got: list[str], source: list[str]) -> tuple[int, int] | None:
    """(k, m) if `got` is source[:k] + source[:m]: a play cut short, then a second play from the start."""
    for k in range(len(got), 0, -1):
        if got[:k] == source[:k] and got[k:] == source[:len(got) - k]:
            return k, len(got) - k
    return None
