"""Subprocesses a test starts: run one to completion, feed one's stdin at a pace, reap, look at children.

Everything here is bounded in time and reaps what it starts, whatever the outcome of the test.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator, Coroutine
from pathlib import Path
from typing import Any, NamedTuple


class Finished(NamedTuple):
    """How a process ended: its exit status and what it wrote (stdout and stderr together)."""

    returncode: int
    output: str


async def run_process(
    argv: list[str], *, limit_seconds: float = 30.0, stdin_data: bytes | None = None, pace_seconds: float = 0.0
) -> Finished:
    """Run a process to completion (killed after `limit_seconds`), feeding `stdin_data` paced over
    `pace_seconds` if given."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE if stdin_data is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        async with asyncio.timeout(limit_seconds):
            if stdin_data is not None:
                assert proc.stdin is not None
                await feed_paced(proc.stdin, stdin_data, pace_seconds)
            out, _ = await proc.communicate()
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return Finished(proc.returncode, out.decode(errors="replace"))


async def feed_paced(stdin: asyncio.StreamWriter, data: bytes, seconds: float) -> None:
    """Write `data` in SRT-sized pieces spread over `seconds`, then close stdin."""
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
        pass  # the process gave up (a refused publisher): its exit status tells the test
    finally:
        stdin.close()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            await stdin.wait_closed()


async def reap(proc: asyncio.subprocess.Process, grace: float) -> None:
    """SIGINT (ffmpeg then finishes its output), SIGKILL after `grace` seconds; always waited for."""
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


@contextlib.asynccontextmanager
async def background(coro: Coroutine[Any, Any, Finished]) -> AsyncIterator[asyncio.Task[Finished]]:
    """Run a process coroutine (`run_process(...)`) as a task that is always awaited (or cancelled) on exit."""
    task = asyncio.ensure_future(coro)
    try:
        yield task
    finally:
        if not task.done():
            task.cancel()
        with contextlib.suppress(BaseException):
            await task


def children_of(pid: int) -> dict[int, str]:
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


def threads_named(pid: int | str, *prefixes: str) -> list[str]:
    """The ids of process `pid`'s threads (`"self"`: this process's) whose name starts with one of `prefixes`."""
    found: list[str] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{task}/comm") as f:
                if f.read().startswith(prefixes):
                    found.append(task)
    return found


def pid_alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"
