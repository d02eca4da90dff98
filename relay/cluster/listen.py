"""LISTEN on one channel until the connection is lost (the callers reconnect and catch up)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import asyncpg

from relay.store.postgres import UNAVAILABLE

log = logging.getLogger("relay.cluster")

Notified = Callable[[Any, int, str, object], None]

DATABASE_ERRORS: tuple[type[BaseException], ...] = (*UNAVAILABLE, asyncpg.PostgresError)
"""What a lost or slow database raises: what the store calls unavailable (a refused connection, a timeout,
a statement on a connection the server has just left...), and any error the server answers."""


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


async def listen_forever(
    dsn: str,
    channel: str,
    on_notify: Notified,
    *,
    timeout_seconds: float,
    pause_seconds: float,
    on_listening: Callable[[], None] | None = None,
) -> None:
    """`listen_until_lost` again and again, `pause_seconds` apart, until cancelled. Nothing else ends it:
    an error that is not the database's is logged with its traceback, and the loop goes on."""
    while True:
        try:
            await listen_until_lost(dsn, channel, on_notify, timeout_seconds=timeout_seconds, on_listening=on_listening)
        except DATABASE_ERRORS:
            pass
        except Exception:
            log.exception("listening on %s failed unexpectedly; listening again", channel)
        await asyncio.sleep(pause_seconds)
