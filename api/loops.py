"""The HTTP API on an event loop of its own, so that the control plane answers while the media path is busy.

Measured (bench/capacity.py, py-spy on the relay at 8 streams x 4 destinations on 2 busy cores): half of
the main thread's samples were in the pushes' pipe writes (each wakes an ffmpeg, and the writer is then
often preempted), and a request waited behind every media callback ready in the same loop iteration,
several times per request (accept, read, the store's worker, write): /healthz p99 0.5 s, a list of
restreams 0.95 s, while the handlers themselves cost ~1 % of the samples. On a loop of its own in its
own thread, a request needs the GIL (which a busy thread yields every 5 ms, and at every syscall), not
the media loop's turn.

What crosses between the two loops, and how (`LoopBridge`):
- store writes run on the engine's loop: the store's change feed awaits its subscribers (the engine,
  the secrets registry) on the writer's loop, and those act on hubs and pushes that live there;
- store reads run on the API's loop when the store says its reads may come from any loop
  (`Store.reads_from_any_loop`: SQLite reads go through the store's own worker thread), else they too
  run on the engine's loop;
- engine reads (a restream's status, whether a stream is live) are plain attribute and dictionary reads,
  made from the API's thread: a status may be a moment old, never torn into an error (what they iterate
  is copied in one C call first);
- the metrics scrape, which walks every push, runs on the engine's loop as a whole;
- engine events reach the event feed through `call_soon_threadsafe` on the API's loop.
Without a separate loop (tests, `create_app` alone) the bridge runs everything where it is called.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar, cast

from relay.store.base import Store

log = logging.getLogger("relay.api")
T = TypeVar("T")

STORE_WRITES = frozenset(
    {
        "create_stream",
        "update_stream",
        "reset_stream_token",
        "delete_stream",
        "create_restream",
        "update_restream",
        "delete_restream",
        "create_api_key",
        "revoke_api_key",
        "close",
    }
)
"""The store's methods that change something (and announce it on the change feed)."""


class LoopBridge:
    """Runs work on the engine's loop from the API's (or in place when they are the same loop)."""

    def __init__(self, engine_loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.engine_loop = engine_loop

    def separate(self) -> bool:
        """True when called from a loop other than the engine's."""
        if self.engine_loop is None:
            return False
        try:
            return asyncio.get_running_loop() is not self.engine_loop
        except RuntimeError:
            return True

    async def on_engine(self, work: Coroutine[Any, Any, T]) -> T:
        """`work` run to its end on the engine's loop; cancelling the caller cancels it there too."""
        if not self.separate():
            return await work
        assert self.engine_loop is not None
        future = asyncio.run_coroutine_threadsafe(work, self.engine_loop)
        return await asyncio.wrap_future(future)

    def listener(self, callback: Callable[[T], None]) -> Callable[[T], None]:
        """`callback` as an engine listener: called on the loop that asked for it, whatever loop emits."""
        if not self.separate():
            return callback
        loop = asyncio.get_running_loop()

        def hand_over(value: T) -> None:
            with contextlib.suppress(RuntimeError):  # the API's loop is already closed: nobody listens
                loop.call_soon_threadsafe(callback, value)

        return hand_over

    def store(self, store: Store) -> Store:
        """The store as the API sees it: writes (and, unless the store allows otherwise, reads) on the
        engine's loop."""
        if self.engine_loop is None:
            return store
        return cast(Store, _BridgedStore(store, self))


class _BridgedStore:
    def __init__(self, store: Store, bridge: LoopBridge) -> None:
        self._store = store
        self._bridge = bridge
        self._reads_here = bool(getattr(store, "reads_from_any_loop", False))

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._store, name)
        if not asyncio.iscoroutinefunction(attr) or (self._reads_here and name not in STORE_WRITES):
            return attr
        bridge = self._bridge

        async def on_engine(*args: Any, **kwargs: Any) -> Any:
            return await bridge.on_engine(attr(*args, **kwargs))

        return on_engine


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop]:
    """What makes the node's event loops for RELAY_EVENT_LOOP: "asyncio" (Python's own) or "uvloop" (libuv's,
    imported only when asked for; the settings checked that it is installed)."""
    if name == "uvloop":
        import uvloop

        return uvloop.new_event_loop
    return asyncio.new_event_loop


class ApiLoop:
    """An event loop running in a thread of its own ("relay-api"): `start()`, `run(coro)`, `close()`."""

    def __init__(self, new_loop: Callable[[], asyncio.AbstractEventLoop] = asyncio.new_event_loop) -> None:
        self.loop = new_loop()
        self._thread = threading.Thread(target=self._serve, name="relay-api", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
        finally:
            with contextlib.suppress(Exception):
                self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.close()

    async def run(self, work: Coroutine[Any, Any, T]) -> T:
        """`work` run on the API's loop, awaited from the caller's."""
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(work, self.loop))

    async def close(self) -> None:
        """Cancel what is left on the API's loop, stop it and join its thread."""
        if not self._thread.is_alive():
            return

        async def cancel_rest() -> None:
            current = asyncio.current_task()
            tasks = [t for t in asyncio.all_tasks() if t is not current]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        with contextlib.suppress(Exception):
            await self.run(cancel_rest())
        self.loop.call_soon_threadsafe(self.loop.stop)
        await asyncio.to_thread(self._thread.join, 10)
        if self._thread.is_alive():
            log.warning("the API's event loop did not stop within 10 s")
