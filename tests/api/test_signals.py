"""A stop signal reaches the node's loop even when the loop's self-pipe is full (api/signals.py).

Real signals to this process, a real event loop, a real thread flooding `call_soon_threadsafe` as
libsrt's threads do while the loop is stuck in one callback."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
import time
from typing import Any

from api.loops import loop_factory
from api.signals import add_stop_handler, remove_stop_handler


def stuck_in_a_callback_while(signum: int) -> None:
    """The loop's thread busy for 0.5 s (nothing drains the self-pipe), `signum` arriving meanwhile."""
    time.sleep(0.5)
    os.kill(os.getpid(), signum)
    time.sleep(0.05)


async def test_a_sigterm_while_the_loops_self_pipe_is_full_still_stops_it() -> None:
    loop = asyncio.get_running_loop()
    stopped = asyncio.Event()
    stops: list[float] = []
    lost: list[str] = []
    hook = sys.unraisablehook

    def note(unraisable: Any) -> None:
        lost.append(repr(unraisable.exc_value))

    def on_stop() -> None:
        stops.append(time.monotonic())
        stopped.set()

    add_stop_handler(loop, on_stop)
    flooding = True

    def flood() -> None:
        while flooding:
            loop.call_soon_threadsafe(lambda: None)

    thread = threading.Thread(target=flood)
    sys.unraisablehook = note
    try:
        thread.start()
        await asyncio.sleep(0.05)
        stuck_in_a_callback_while(signal.SIGTERM)
        flooding = False
        thread.join()
        assert any("BlockingIOError" in why for why in lost), "the signal's byte was not lost: no test"
        await asyncio.wait_for(stopped.wait(), 5)  # TimeoutError: the SIGTERM was lost with its byte
        await asyncio.sleep(0.1)
        assert len(stops) == 1
    finally:
        flooding = False
        sys.unraisablehook = hook
        remove_stop_handler(loop)


async def test_each_signal_is_told_once_and_the_defaults_come_back() -> None:
    loop = asyncio.get_running_loop()
    seen: list[int] = []
    add_stop_handler(loop, lambda: seen.append(1))
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            os.kill(os.getpid(), sig)
            await asyncio.sleep(0.1)
        assert seen == [1, 1]
    finally:
        remove_stop_handler(loop)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


def test_on_uvloop_a_sigterm_reaches_the_stop_handler() -> None:
    """RELAY_EVENT_LOOP=uvloop: its loop takes signals through a wakeup fd of its own; the stop still comes."""
    loop = loop_factory("uvloop")()
    assert type(loop).__module__.startswith("uvloop")
    stops: list[int] = []

    async def main() -> None:
        stopped = asyncio.Event()

        def on_stop() -> None:
            stops.append(1)
            stopped.set()

        add_stop_handler(loop, on_stop)
        try:
            loop.call_later(0.05, os.kill, os.getpid(), signal.SIGTERM)
            await asyncio.wait_for(stopped.wait(), 5)
            await asyncio.sleep(0.1)
        finally:
            remove_stop_handler(loop)

    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
    assert stops == [1]
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
