"""The read ticker on a real event loop: one timer for every connection waiting for its next merged read."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest

from relay.ingest.read_ticker import ReadTicker

pytestmark = pytest.mark.timeout(10)


async def test_a_waiter_is_called_once_at_the_next_tick_and_not_before() -> None:
    loop = asyncio.get_running_loop()
    ticker = ReadTicker(0.1)
    calls: list[float] = []
    started = loop.time()
    ticker.wait("a", lambda: calls.append(loop.time()))
    await asyncio.sleep(0.05)
    assert calls == [] and ticker.waiting == 1
    await asyncio.sleep(0.2)
    assert len(calls) == 1 and calls[0] - started >= 0.09
    assert ticker.waiting == 0


async def test_every_waiter_is_called_in_the_same_tick_in_the_order_they_started_waiting() -> None:
    loop = asyncio.get_running_loop()
    ticker = ReadTicker(0.1)
    calls: list[str] = []

    def first() -> None:
        calls.append("a")
        loop.call_soon(calls.append, "the loop's next turn")

    ticker.wait("a", first)
    await asyncio.sleep(0.04)
    ticker.wait("b", lambda: calls.append("b"))  # joins the tick already armed: read early, never late
    ticker.wait("c", lambda: calls.append("c"))
    await asyncio.sleep(0.2)
    # One wake-up of the loop for all three: none of them waited for another turn.
    assert calls == ["a", "b", "c", "the loop's next turn"]


async def test_waiting_again_from_the_callback_is_the_next_tick_one_interval_on() -> None:
    loop = asyncio.get_running_loop()
    ticker = ReadTicker(0.05)
    calls: list[float] = []

    def read() -> None:
        calls.append(loop.time())
        if len(calls) < 4:
            ticker.wait("a", read)

    ticker.wait("a", read)
    await asyncio.sleep(0.5)
    assert len(calls) == 4
    gaps = [b - a for a, b in itertools.pairwise(calls)]
    assert all(0.045 <= gap < 0.2 for gap in gaps), gaps
    assert ticker.waiting == 0


async def test_waiting_twice_before_a_tick_is_one_call_of_the_last_callback() -> None:
    ticker = ReadTicker(0.05)
    calls: list[str] = []
    ticker.wait("a", lambda: calls.append("first"))
    ticker.wait("a", lambda: calls.append("second"))
    assert ticker.waiting == 1
    await asyncio.sleep(0.15)
    assert calls == ["second"]


async def test_a_cancelled_waiter_is_not_called_and_the_others_are() -> None:
    ticker = ReadTicker(0.05)
    calls: list[str] = []
    ticker.wait("a", lambda: calls.append("a"))
    ticker.wait("b", lambda: calls.append("b"))
    ticker.cancel("a")
    ticker.cancel("never waited")  # no error
    await asyncio.sleep(0.15)
    assert calls == ["b"]


async def test_a_failing_callback_is_reported_and_the_others_are_still_called() -> None:
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    try:
        ticker = ReadTicker(0.05)
        calls: list[str] = []

        def fail() -> None:
            raise RuntimeError("boom")

        ticker.wait("a", fail)
        ticker.wait("b", lambda: calls.append("b"))
        await asyncio.sleep(0.15)
    finally:
        loop.set_exception_handler(None)
    assert calls == ["b"]
    assert len(reported) == 1 and isinstance(reported[0]["exception"], RuntimeError)


async def test_close_calls_nobody_and_the_ticker_can_be_waited_on_again() -> None:
    ticker = ReadTicker(0.05)
    calls: list[str] = []
    ticker.wait("a", lambda: calls.append("a"))
    ticker.close()
    await asyncio.sleep(0.15)
    assert calls == [] and ticker.waiting == 0
    ticker.wait("b", lambda: calls.append("b"))
    await asyncio.sleep(0.15)
    assert calls == ["b"]
