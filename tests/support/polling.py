"""Waiting for a condition seen from outside (over HTTP, in /proc): there is no event to wait on, so poll."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def wait_for(probe: Callable[[], Awaitable[T | bool | None]], within: float, what: str, every: float = 0.1) -> T:
    """Poll `probe` until it returns something truthy (returned), failing after `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        value = await probe()
        if value:
            return value  # type: ignore[return-value]
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached within {within} s: {what}")
        await asyncio.sleep(every)


def wait_until(check: Callable[[], bool], timeout: float = 10.0, every: float = 0.1) -> None:
    """The blocking twin of `wait_for`, for tests that drive a relay subprocess without an event loop."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(every)
    raise AssertionError("condition not reached in time")
