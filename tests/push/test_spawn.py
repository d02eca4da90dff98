"""`relay.spawn`: a child's pipes, exit status and cleanup are the same on asyncio's loop (its own
subprocess support) and on uvloop's (Popen, the pipes handed to the loop, the exit seen through a pidfd)."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import warnings
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import pytest

from api.loops import loop_factory
from relay.spawn import PopenChild, spawn

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]

LOOPS = ["asyncio", "uvloop"]

T = TypeVar("T")

ECHO = "read line; echo out $line; echo err >&2; exit 3"


def run_on(loop_name: str, coro_fn: Callable[[], Coroutine[Any, Any, T]]) -> T:
    loop = loop_factory(loop_name)()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", ResourceWarning)
            return loop.run_until_complete(coro_fn())
    finally:
        loop.close()


def open_fds() -> set[int]:
    return {int(name) for name in os.listdir("/proc/self/fd")}


@pytest.mark.parametrize("loop_name", LOOPS)
def test_a_child_s_pipes_and_exit_status_on_either_loop(loop_name: str) -> None:
    """Eight children at once: what goes in on stdin comes back on stdout, stderr apart, the exit status as
    asyncio gives it; on uvloop the child is started by Popen (vfork), not by libuv's fork."""

    async def scenario() -> list[tuple[bytes, bytes, int]]:
        children = [await spawn(["/bin/sh", "-c", ECHO], stdin=asyncio.subprocess.PIPE, env={}) for _ in range(8)]
        assert all(isinstance(c, PopenChild) == (loop_name == "uvloop") for c in children)
        results = []
        for index, child in enumerate(children):
            assert child.stdin is not None and child.stdout is not None and child.stderr is not None
            child.stdin.write(f"{index}\n".encode())
            await child.stdin.drain()
            child.stdin.close()
            await child.stdin.wait_closed()
            results.append((await child.stdout.read(), await child.stderr.read(), await child.wait()))
            assert child.returncode == 3
        return results

    results = run_on(loop_name, scenario)
    assert results == [(f"out {i}\n".encode(), b"err\n", 3) for i in range(8)]


@pytest.mark.parametrize("loop_name", LOOPS)
def test_a_killed_child_reports_its_signal_and_leaves_nothing_open(loop_name: str) -> None:
    """A child killed by a signal exits with minus its number; once it is reaped and its pipes read to their
    end, no descriptor of it stays open in the relay (and no transport is left to the garbage collector:
    ResourceWarnings are errors here)."""

    async def scenario() -> int:
        warm_up = await spawn(["true"], stdin=asyncio.subprocess.DEVNULL, env={"PATH": os.environ["PATH"]})
        await warm_up.wait()  # what a loop opens once, for its first child, is not the child's
        del warm_up
        gc.collect()
        await asyncio.sleep(0.05)
        before = open_fds()
        child = await spawn(["sleep", "30"], stdin=asyncio.subprocess.DEVNULL, env={"PATH": os.environ["PATH"]})
        assert child.stdin is None
        os.killpg(child.pid, signal.SIGKILL)  # in a session of its own: its group is its pid
        returncode = await asyncio.wait_for(child.wait(), 10)
        assert child.stdout is not None and child.stderr is not None
        assert await child.stdout.read() == b"" and await child.stderr.read() == b""
        del child
        gc.collect()
        await asyncio.sleep(0.05)  # transports close on the loop's next turns
        assert open_fds() <= before
        return returncode

    assert run_on(loop_name, scenario) == -signal.SIGKILL


@pytest.mark.parametrize("loop_name", LOOPS)
def test_a_program_that_cannot_start_raises_oserror(loop_name: str) -> None:
    async def scenario() -> None:
        with pytest.raises(OSError):
            await spawn(["/nonexistent/ffmpeg"], stdin=asyncio.subprocess.PIPE, env={})

    run_on(loop_name, scenario)
