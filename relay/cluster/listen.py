"""LISTEN on one channel until the connection is lost (the callers reconnect and catch up)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import asyncpg

Notified = Callable[[Any, int, str, object], None]


async def listen_until_lost(
    dsn: str,
    channel: str,
    on_notify: Notified,
    *,
    timeout_seconds: float,
    on_listening: Callable[[], None] | None = None,
) -> None:
    """Connect, LISTEN on `channel`, call `on_listening` (what was missed may be read now), and return
    when the connection is gone. Database errors propagate; the connection is always closed."""
    listener = await asyncpg.connect(dsn, timeout=timeout_seconds)
    try:
        gone = asyncio.Event()
        listener.add_termination_listener(lambda connection: gone.set())
        await listener.add_listener(channel, on_notify)
        if on_listening is not None:
            on_listening()
        while not listener.is_closed():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout_seconds):
                    await gone.wait()
    finally:
        if not listener.is_closed():
            listener.terminate()
