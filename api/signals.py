"""SIGINT and SIGTERM for the node's event loop, delivered even to an overloaded loop.

asyncio's `loop.add_signal_handler` learns of a signal only from the byte that the C-level handler
writes into the loop's self-pipe. `call_soon_threadsafe` writes a byte there too (libsrt's threads hand
every batch of an SRT publisher's data to the loop that way), so a loop stuck long enough for that pipe
to fill loses every signal that comes meanwhile: Python says "Exception ignored when trying to write to
the signal wakeup fd: BlockingIOError", and a SIGTERM never stops the node (found in an overloaded soak).

So the signal is taken by a Python-level handler as well, which the interpreter runs in the main
thread whatever became of the byte, and which hands the callback to the loop. The loop keeps its wakeup
fd (an asyncio handler that does nothing): a signal that another thread received still wakes an idle
loop, and with a full pipe the loop is awake anyway.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from types import FrameType

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def add_stop_handler(loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> None:
    """Call `callback` on `loop` once per SIGINT or SIGTERM (from the main thread, before the loop runs)."""

    def on_signal(signum: int, frame: FrameType | None) -> None:
        loop.call_soon_threadsafe(callback)

    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, _wake_only)
        signal.signal(sig, on_signal)


def remove_stop_handler(loop: asyncio.AbstractEventLoop) -> None:
    """The default handlers back (`remove_signal_handler` restores them)."""
    for sig in STOP_SIGNALS:
        loop.remove_signal_handler(sig)


def _wake_only() -> None:
    """asyncio's handler: the byte it is called for has woken the loop, which is all it is for."""
