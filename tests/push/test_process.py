"""FfmpegProcess itself, on real child processes: the fake-ffmpeg script and small stand-ins that ignore
what ffmpeg would not. What it reports here (PushExit) is what the supervisor classifies
(tests/supervisor/test_exits.py)."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from api.loops import loop_factory
from relay.hub import Hub, HubSettings, Subscriber
from relay.ingest.gate import SourceType
from relay.media.packets import ContainerFormat
from relay.push.masking import secrets_of
from relay.push.process import FfmpegProcess, widen_pipe
from relay.push.progress import Progress
from tests.fakes.clock import FakeClock
from tests.hub.helpers import config_packets, video

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]

FAKE_FFMPEG = str(Path(__file__).parent.parent / "fakes" / "fake_ffmpeg.py")
URI = "rtmp://127.0.0.1:1/live/sekrit-key"

# Stays after EOF on stdin; "sigint" ends with 255 on SIGINT as ffmpeg does, "hang" ignores SIGINT too.
STUBBORN = """
import signal, sys, threading, time
if sys.argv[1] == "hang":
    signal.signal(signal.SIGINT, signal.SIG_IGN)
else:
    signal.signal(signal.SIGINT, lambda *_: sys.exit(255))
def drain():
    while sys.stdin.buffer.read1(65536):
        pass
threading.Thread(target=drain, daemon=True).start()
while True:
    time.sleep(0.05)
"""


@pytest.fixture
def subscriber() -> Iterator[Subscriber]:
    # Filled before any loop runs: the hub reads its clock on every packet (an input's silence).
    hub = Hub(1, HubSettings(), FakeClock(), lambda event: None)
    sink = hub.open_session(ContainerFormat.FLV, SourceType.RTMP)
    for packet in config_packets():
        sink.write(packet)
    sink.write(video(0, key=True, size=2000))
    sub = hub.subscribe()
    yield sub
    sub.close()


def process(
    argv: list[str], subscriber: Subscriber, on_progress: Callable[[Progress], None] = lambda progress: None
) -> FfmpegProcess:
    return FfmpegProcess(
        argv,
        subscriber,
        secrets_of(URI),
        on_progress=on_progress,
        on_input_end=lambda cause: None,
        log_prefix="restream test",
    )


def fake(mode: str) -> list[str]:
    return [sys.executable, FAKE_FFMPEG, f"{URI}?fake={mode}"]


async def test_runs_reports_progress_and_stops_cleanly_at_eof(subscriber: Subscriber) -> None:
    progress: list[Progress] = []
    reported = asyncio.Event()

    def on_progress(update: Progress) -> None:
        progress.append(update)
        reported.set()

    ffmpeg = process(fake("run"), subscriber, on_progress)
    await ffmpeg.start()
    await asyncio.wait_for(reported.wait(), 5)
    assert progress[-1].total_size_bytes > 0 and ffmpeg.bytes_in > 0
    result = await ffmpeg.stop(2.0)
    assert (result.returncode, result.stopped, result.killed, result.refused) == (0, True, False, False)
    assert result.input_end is None  # the stream did not end: we did


async def test_refusal_is_reported_and_masked(subscriber: Subscriber) -> None:
    ffmpeg = process(fake("refuse"), subscriber)
    await ffmpeg.start()
    result = await ffmpeg.wait()
    assert (result.returncode, result.refused, result.stopped) == (1, True, False)
    assert result.last_error is not None and "BadName" in result.last_error
    assert len(ffmpeg.recent_lines) == 2 and not any("sekrit" in line for line in ffmpeg.recent_lines)


async def test_broken_output_is_killed_at_once_not_left_in_cleanup(subscriber: Subscriber) -> None:
    ffmpeg = process(fake("trailer"), subscriber)
    await ffmpeg.start()
    started = time.monotonic()
    result = await asyncio.wait_for(ffmpeg.wait(), 5.0)  # the fake would hang 30 s in its "cleanup"
    assert time.monotonic() - started < 5.0
    assert result.killed and result.returncode == -9 and not result.stopped
    assert result.last_error is not None and "Error writing trailer" in result.last_error


async def test_stop_sends_sigint_when_eof_is_not_enough(subscriber: Subscriber) -> None:
    ffmpeg = process([sys.executable, "-c", STUBBORN, "sigint"], subscriber)
    await ffmpeg.start()
    result = await ffmpeg.stop(3.0)
    assert (result.returncode, result.stopped, result.killed) == (255, True, False)


async def test_stop_kills_at_the_timeout(subscriber: Subscriber) -> None:
    ffmpeg = process([sys.executable, "-c", STUBBORN, "hang"], subscriber)
    await ffmpeg.start()
    started = time.monotonic()
    result = await ffmpeg.stop(1.5)
    assert 1.0 < time.monotonic() - started < 4.0
    assert (result.returncode, result.stopped, result.killed) == (-9, True, True)


async def test_missing_binary_cannot_start(subscriber: Subscriber) -> None:
    ffmpeg = process(["/nonexistent/ffmpeg", "-i", "pipe:0", URI], subscriber)
    with pytest.raises(OSError):
        await ffmpeg.start()


async def test_the_child_gets_no_relay_environment_and_no_core_dump(
    subscriber: Subscriber, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RELAY_API_KEY", "1$must-not-reach-ffmpeg")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "nor-this")
    ffmpeg = process([sys.executable, "-c", STUBBORN, "sigint"], subscriber)
    await ffmpeg.start()
    try:
        assert ffmpeg.pid is not None
        environ, limits = _environ_and_limits(ffmpeg.pid)
    finally:
        await ffmpeg.stop(3.0)
    assert not [name for name in environ if name.startswith(b"RELAY_")] and b"AWS_SECRET_ACCESS_KEY" not in environ
    assert environ[b"LC_ALL"] == b"C" and b"PATH" in environ
    core = next(line for line in limits.splitlines() if line.startswith("Max core file size"))
    assert core.split()[4:6] == ["0", "0"], core


def _environ_and_limits(pid: int) -> tuple[dict[bytes, bytes], str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    environ = dict(item.split(b"=", 1) for item in raw.split(b"\0") if item)
    return environ, Path(f"/proc/{pid}/limits").read_text()


KEYFRAME_BYTES = 240_000
"""A large 1080p keyframe: more than Linux's default pipe (64 KiB) and unix socket buffer (208 KiB) hold."""


@pytest.mark.parametrize("loop_name", ["asyncio", "uvloop"])
def test_a_keyframe_fits_into_a_push_s_stdin_at_once_on_either_loop(loop_name: str) -> None:
    """`widen_pipe` on asyncio's loop (the child's stdin is a pipe) and on uvloop's (a socket pair): a
    keyframe written to a child that reads nothing yet is all in the kernel at once, none left queued."""
    loop = loop_factory(loop_name)()

    async def left_queued() -> int:
        proc = await asyncio.create_subprocess_exec(
            "sleep", "10", stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL
        )
        try:
            widen_pipe(proc)
            assert proc.stdin is not None
            proc.stdin.write(b"\0" * KEYFRAME_BYTES)
            await asyncio.sleep(0.05)
            return proc.stdin.transport.get_write_buffer_size()
        finally:
            proc.kill()
            await proc.wait()

    try:
        assert loop.run_until_complete(left_queued()) == 0
    finally:
        loop.close()


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


async def test_progress_is_read_without_the_loop_watching_its_pipe_and_to_its_end_by_wait(
    subscriber: Subscriber,
) -> None:
    """The progress pipe is read on a timer (relay.push.process.PROGRESS_POLL_SECONDS), not when ffmpeg
    writes: what the fake writes every 50 ms arrives in batches, every block in order, the last one (ffmpeg's
    `progress=end` at its exit) by the time `wait` returns, and nothing of the pipe is left open."""
    before = open_fds()
    got: list[Progress] = []
    ffmpeg = process(fake("run"), subscriber, got.append)
    await ffmpeg.start()
    await asyncio.sleep(1.2)
    polled = len(got)
    assert polled > 3  # blocks arrived, without a reader on the loop
    result = await ffmpeg.stop(2.0)
    assert result.returncode == 0
    assert got[-1].ended and len(got) > polled  # the last block, read once ffmpeg had exited
    assert [p.out_time_us for p in got] == sorted(p.out_time_us for p in got)
    assert open_fds() <= before


async def test_a_progress_consumer_that_fails_does_not_stop_the_reading(subscriber: Subscriber) -> None:
    """An error in what takes the progress is the loop's to report; the pipe is still read (a full one would
    block ffmpeg)."""
    got: list[Progress] = []
    errors: list[dict[str, object]] = []
    asyncio.get_running_loop().set_exception_handler(lambda loop, context: errors.append(context))

    def on_progress(update: Progress) -> None:
        got.append(update)
        if len(got) == 1:
            raise RuntimeError("the consumer's own fault")

    ffmpeg = process(fake("run"), subscriber, on_progress)
    await ffmpeg.start()
    await asyncio.sleep(1.5)
    await ffmpeg.stop(2.0)
    assert errors and len(got) > 3 and got[-1].ended
