"""The production clock's slack timers (`LoopClock.call_later(..., slack=...)`) on a real event loop: one runs
at the first wake of the media path (`woke`) once it is due, or at the end of its slack without one, and
only once either way; a cancelled one never runs; one that fails leaves the others and the caller alone.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from relay.hub.clock import LoopClock


async def wait_until(predicate: Any, within: float = 2.0) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        assert time.monotonic() < deadline, "not within the time"
        await asyncio.sleep(0.005)


async def test_a_slack_timer_runs_at_the_first_wake_once_due_and_only_then() -> None:
    clock = LoopClock()
    ran: list[float] = []
    armed = time.monotonic()
    clock.call_later(0.05, lambda: ran.append(time.monotonic()), slack=5.0)
    clock.woke()  # a wake before it is due: nothing
    await asyncio.sleep(0.01)
    assert ran == []
    await asyncio.sleep(0.06)
    assert ran == []  # due, but no wake yet: it waits for one (its slack is 5 s)
    clock.woke()
    assert ran == []  # not from inside the caller: on the loop's next turn
    await asyncio.sleep(0)
    assert len(ran) == 1 and ran[0] - armed >= 0.05
    clock.woke()
    await asyncio.sleep(0.05)
    assert len(ran) == 1  # once


async def test_without_a_wake_a_slack_timer_runs_at_the_end_of_its_slack_once() -> None:
    clock = LoopClock()
    ran: list[float] = []
    armed = time.monotonic()
    clock.call_later(0.02, lambda: ran.append(time.monotonic()), slack=0.05)
    await wait_until(lambda: ran)
    assert ran[0] - armed >= 0.07
    clock.woke()  # a wake after it ran on its own timer does not run it again
    await asyncio.sleep(0.02)
    assert len(ran) == 1


async def test_a_cancelled_slack_timer_runs_neither_way() -> None:
    clock = LoopClock()
    ran: list[str] = []
    first = clock.call_later(0.01, lambda: ran.append("first"), slack=0.03)
    second = clock.call_later(0.01, lambda: ran.append("second"), slack=0.03)
    first.cancel()
    await asyncio.sleep(0.02)
    second.cancel()
    clock.woke()
    await asyncio.sleep(0.05)
    assert ran == []


async def test_due_slack_timers_run_in_due_order_at_one_wake_and_a_failing_one_spares_the_others() -> None:
    clock = LoopClock()
    ran: list[str] = []
    errors: list[dict[str, Any]] = []
    asyncio.get_running_loop().set_exception_handler(lambda loop, context: errors.append(context))

    def fail() -> None:
        ran.append("fails")
        raise RuntimeError("the callback's own fault")

    clock.call_later(0.03, lambda: ran.append("later"), slack=5.0)
    clock.call_later(0.01, fail, slack=5.0)
    clock.call_later(0.02, lambda: ran.append("second"), slack=5.0)
    clock.call_later(1.0, lambda: ran.append("not due"), slack=5.0)
    await asyncio.sleep(0.05)
    clock.woke()  # the caller (a hub ending a read's write) is not reached by the failure
    await asyncio.sleep(0)
    assert ran == ["fails", "second", "later"]
    assert len(errors) == 1 and isinstance(errors[0]["exception"], RuntimeError)


async def test_without_slack_it_is_the_loops_own_timer() -> None:
    clock = LoopClock()
    ran: list[str] = []
    handle = clock.call_later(0.01, lambda: ran.append("plain"))
    assert isinstance(handle, asyncio.TimerHandle)
    await wait_until(lambda: ran)


@pytest.mark.parametrize("ticks", [50])
async def test_a_tick_rearmed_without_wakes_keeps_nothing_behind(ticks: int) -> None:
    """A supervisor's tick on a node where no media flows: each runs on its own timer and arms the next;
    what the clock holds stays one timer, not one more each tick."""
    clock = LoopClock()
    count = [0]

    def tick() -> None:
        count[0] += 1
        if count[0] < ticks:
            clock.call_later(0.0, tick, slack=0.001)

    clock.call_later(0.0, tick, slack=0.001)
    await wait_until(lambda: count[0] == ticks)
    assert len(clock._riders.heap) <= 1  # the heap of slack timers


async def test_the_slack_timers_are_the_loops_a_wake_of_any_clock_runs_them() -> None:
    """A push's progress poll arms its timer on a clock of its own; the hub's read wakes through another."""
    ran: list[str] = []
    LoopClock().call_later(0.0, lambda: ran.append("the push's"), slack=5.0)
    await asyncio.sleep(0.005)
    LoopClock().woke()
    await asyncio.sleep(0)
    assert ran == ["the push's"]
