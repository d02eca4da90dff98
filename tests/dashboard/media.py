"""Shared by the dashboard and metrics suites: an in-process relay with a short publisher grace, and
real ffmpeg publishers and receivers as asyncio subprocesses (the relay shares the test's loop, so
nothing here may block it), each reaped when its context ends."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import imageio_ffmpeg
import pytest

from api.server import Server
from tests.conftest import service_settings

FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()
GRACE_SECONDS = 1.0


@pytest.fixture
async def quick_service(tmp_path: Path) -> AsyncIterator[Server]:
    """The relay and its API in this test's loop; a dropped publisher ends the stream after 1 s."""
    relay_service = Server(service_settings(tmp_path, publisher_grace_seconds=GRACE_SECONDS))
    await relay_service.start()
    try:
        yield relay_service
    finally:
        await relay_service.close()


async def _reap(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
    await process.wait()


@contextlib.asynccontextmanager
async def publisher(url: str, seconds: float = 30) -> AsyncIterator[asyncio.subprocess.Process]:
    """An encoder publishing a 320x240 25 fps test pattern with a tone to `url` (RTMP) in real time."""
    process = await asyncio.create_subprocess_exec(
        FFMPEG, "-hide_banner", "-loglevel", "error", "-re", "-f", "lavfi",
        "-i", "testsrc2=size=320x240:rate=25", "-f", "lavfi", "-i", "sine=frequency=440",
        "-c:v", "libx264", "-preset", "ultrafast", "-g", "25", "-b:v", "600k", "-c:a", "aac",
        "-t", str(seconds), "-f", "flv", url,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        yield process
    finally:
        await _reap(process)


@contextlib.asynccontextmanager
async def rtmp_receiver(port: int, seconds: float = 60) -> AsyncIterator[asyncio.subprocess.Process]:
    """A local RTMP destination: ffmpeg listening on 127.0.0.1:`port`, discarding what it receives."""
    process = await asyncio.create_subprocess_exec(
        FFMPEG, "-hide_banner", "-loglevel", "error", "-listen", "1", "-timeout", str(int(seconds)),
        "-i", f"rtmp://127.0.0.1:{port}/live/test", "-c", "copy", "-f", "null", "-",
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        yield process
    finally:
        await _reap(process)


async def poll_until(check: Callable[[], Awaitable[bool]], seconds: float = 10.0) -> None:
    """Await until the async predicate `check()` holds; fail after `seconds`.

    For figures read over HTTP (metrics, the API): there is no event to wait on from outside.
    """
    async with asyncio.timeout(seconds):
        while not await check():  # noqa: ASYNC110
            await asyncio.sleep(0.1)
