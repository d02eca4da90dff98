"""GET /streaming/events: a Server-Sent Events feed of one client's streams and restreams.

The engine calls its listeners synchronously in the event loop; `EventFeed` hands each event to the
subscriptions of the event's client without ever waiting (a slow reader only loses stats snapshots,
never stalls the engine), and every `stats_interval_seconds` it offers each subscribed client a
snapshot of its streams' and restreams' figures.

A feed lasts as long as the key it was opened with: within `key_check_interval_seconds` of the key's
revocation the response ends. The request must accept `text/event-stream` explicitly (406 otherwise).
Wire format (UTF-8, `\\n` line ends, one JSON object per `data:` line)::

    event: hello                 once, first: {"client_id", "stats_interval_seconds", "heartbeat_seconds"}
    event: stream.live           engine events, as the engine sends them: {"client_id", "stream_id", ...}
    event: stream.info
    event: stream.input          another input (main, backup) feeds the destinations
    event: restream.status
    event: stats                 periodic: {"client_id", "time", "streams": [...], "restreams": [...]}
    event: resync                this subscriber lost events (it read too slowly): reload everything
    : heartbeat                  a comment every `heartbeat_seconds` while nothing else was sent
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import Counter, deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from api.auth import api_key_id, client_id
from api.bodies import LIVE_FIELDS, event_body, restream_view, stream_view
from api.errors import generic_error
from api.metrics import load_definitions
from api.routes.common import NODE, Node
from relay.engine.events import EngineEvent

log = logging.getLogger("relay.api.events")

routes = web.RouteTableDef()

STATS = "stats"
RESYNC = "resync"


@dataclass(frozen=True, slots=True)
class FeedSettings:
    """Bounds and rhythm of the feed."""

    stats_interval_seconds: float = 2.0
    heartbeat_seconds: float = 15.0
    max_queued_events: int = 256
    """Per subscription; stats snapshots are dropped first, then the whole queue is replaced by `resync`."""
    max_subscriptions: int = 128
    """Feeds beyond each client's reserved ones, shared by all clients: the node holds at most this many
    plus the reserved ones of the clients with feeds open (each feed is also an open connection)."""
    max_subscriptions_per_client: int = 32
    key_check_interval_seconds: float = 2.0
    """How often the API keys of open feeds are checked again. Keys are revoked by `restream-relay keys
    revoke`, another process, so a feed cannot be told: one query for all open feeds finds out."""
    reserved_subscriptions_per_client: int = 4
    """Feeds every client may open even when other clients have taken the whole shared pool."""


class Subscription:
    """One reader's bounded mailbox: events in order, and at most one (the latest) stats snapshot."""

    def __init__(self, client_id: int, max_queued_events: int, key_id: int | None = None) -> None:
        self.client_id = client_id
        self.key_id = key_id
        """The API key the reader authenticated with; its revocation ends this subscription."""
        self._max = max(2, max_queued_events)
        self._queue: deque[tuple[str, dict[str, Any]]] = deque()
        self._wake = asyncio.Event()
        self.closed = False
        self.resyncs = 0
        """How often this reader fell so far behind that its queue was replaced by a `resync`."""

    def offer(self, kind: str, payload: dict[str, Any]) -> None:
        """Queue an event; never blocks, never grows past the bound."""
        if self.closed:
            return
        if kind == STATS:
            self._drop_stats()  # only the newest snapshot matters
        resync = len(self._queue) >= self._max and not self._drop_stats()
        if resync:
            # State changes cannot be dropped one by one without the reader showing a wrong state,
            # so it is told to reload instead.
            self._queue.clear()
            self.resyncs += 1
            self._queue.append((RESYNC, {"client_id": self.client_id, "reason": "slow reader"}))
        if kind == STATS or not resync:  # a state change that overflowed is covered by the reload
            self._queue.append((kind, payload))
        self._wake.set()

    def _drop_stats(self) -> bool:
        for index, (kind, _) in enumerate(self._queue):
            if kind == STATS:
                del self._queue[index]
                return True
        return False

    def close(self) -> None:
        self.closed = True
        self._wake.set()

    def __len__(self) -> int:
        return len(self._queue)

    async def next_batch(self, wait_seconds: float) -> list[tuple[str, dict[str, Any]]] | None:
        """What is queued (waiting up to `wait_seconds` for something); [] if nothing came, None once closed."""
        if not self._queue and not self.closed:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait_seconds):
                    await self._wake.wait()
        self._wake.clear()
        if self.closed:
            return None
        batch = list(self._queue)
        self._queue.clear()
        return batch


class FeedFull(Exception):
    """Too many open feeds (for the node or for this client)."""


class EventFeed:
    """Owns the subscriptions, the engine listener, the stats task and the key check; `start()`, then
    `close()`."""

    def __init__(self, node: Node, settings: FeedSettings | None = None) -> None:
        self.node = node
        self.settings = settings or FeedSettings()
        self._subscriptions: set[Subscription] = set()
        self._per_client: Counter[int] = Counter()
        self._shared_taken = 0
        """Feeds open beyond their clients' reserved ones (what `max_subscriptions` bounds)."""
        self._unsubscribe: Callable[[], None] | None = None
        self._stats_task: asyncio.Task[None] | None = None
        self._key_task: asyncio.Task[None] | None = None
        self._closed = False

    def start(self) -> None:
        self._unsubscribe = self.node.engine.subscribe(self.node.bridge.listener(self._on_event))
        self._stats_task = asyncio.create_task(self._stats_loop(), name="event-feed-stats")
        self._key_task = asyncio.create_task(self._key_loop(), name="event-feed-keys")

    async def close(self) -> None:
        """End every open feed (their handlers return at once) and stop listening. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for subscription in list(self._subscriptions):
            subscription.close()
        self._subscriptions.clear()
        self._per_client.clear()
        self._shared_taken = 0
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        for task in (self._stats_task, self._key_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._stats_task = self._key_task = None

    def subscribe(self, client: int, key_id: int | None = None) -> Subscription:
        """A new feed for `client`: one of its reserved ones, else one from the shared pool (FeedFull if none)."""
        if self._closed:
            raise FeedFull("shutting down")
        settings = self.settings
        own = self._per_client[client]
        if own >= settings.max_subscriptions_per_client:
            raise FeedFull("too many open event feeds for this client")
        shared = own >= settings.reserved_subscriptions_per_client
        if shared and self._shared_taken >= settings.max_subscriptions:
            raise FeedFull("too many open event feeds")
        subscription = Subscription(client, settings.max_queued_events, key_id)
        self._subscriptions.add(subscription)
        self._per_client[client] = own + 1
        self._shared_taken += int(shared)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        subscription.close()
        if subscription not in self._subscriptions:
            return
        self._subscriptions.discard(subscription)
        client = subscription.client_id
        own = self._per_client[client] - 1
        if own:
            self._per_client[client] = own
        else:
            del self._per_client[client]
        # Whichever feed of the client ends, the one that leaves is counted as its newest: a shared one if
        # it had any beyond its reserve.
        self._shared_taken -= int(own >= self.settings.reserved_subscriptions_per_client)

    @property
    def subscriptions(self) -> int:
        return len(self._subscriptions)

    def _on_event(self, event: EngineEvent) -> None:
        owner = event.client_id
        if not any(s.client_id == owner for s in self._subscriptions):
            return  # nobody of that client listens: no JSON to make
        kind, payload = event_body(event, self.node.engine.ownership.node_id)
        for subscription in list(self._subscriptions):
            if subscription.client_id == owner:
                subscription.offer(kind, payload)

    async def _stats_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.stats_interval_seconds)
            for client in sorted({s.client_id for s in self._subscriptions}):
                try:
                    snapshot = await client_stats(self.node, client)
                except Exception:  # a failing store must not end the feed; the next round retries
                    log.exception("stats for the event feed failed")
                    continue
                for subscription in list(self._subscriptions):
                    if subscription.client_id == client:
                        subscription.offer(STATS, snapshot)

    async def _key_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.key_check_interval_seconds)
            await self.end_revoked()

    async def end_revoked(self) -> int:
        """End the subscriptions whose API key is no longer active; returns how many ended."""
        watched = {s.key_id for s in self._subscriptions if s.key_id is not None}
        if not watched:
            return 0
        try:
            active = await self.node.store.active_api_key_ids(watched)
        except Exception:  # a failing store must not end the feeds; the next round retries
            log.exception("checking the API keys of open event feeds failed")
            return 0
        ended = [s for s in self._subscriptions if s.key_id is not None and s.key_id not in active]
        for subscription in ended:
            self.unsubscribe(subscription)  # its handler sees the close and ends the response
        if ended:
            keys = ", ".join(str(key_id) for key_id in sorted({s.key_id for s in ended if s.key_id is not None}))
            log.info("ended %d event feed(s): API key %s revoked", len(ended), keys)
        return len(ended)


async def client_stats(node: Node, client: int) -> dict[str, Any]:
    """A snapshot of one client's live figures (no tokens, no destination URIs)."""
    definitions = await load_definitions(node.store, client)
    engine = node.engine
    streams = [
        {
            "id": stream.id,
            "name": stream.name,
            "active": stream.active,
            **{key: view[key] for key in (*LIVE_FIELDS, "node_id")},
        }
        for stream in definitions.streams
        for view in (stream_view(engine, stream.id),)
    ]
    restreams = [
        {
            "id": restream.id,
            "stream_id": restream.stream_id,
            "name": restream.name,
            "active": restream.active,
            "live": live,
            "status": status,
            "node_id": node_id,
        }
        for restream in definitions.restreams
        for live, status, node_id in (restream_view(engine, restream),)
    ]
    return {
        "client_id": client,
        "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "streams": streams,
        "restreams": restreams,
    }


def encode_event(kind: str, payload: dict[str, Any]) -> bytes:
    data = json.dumps(payload, separators=(",", ":"), default=str)  # json never emits a raw newline
    return f"event: {kind}\ndata: {data}\n\n".encode()


HEARTBEAT = b": heartbeat\n\n"
EVENT_FEED = web.AppKey("event_feed", EventFeed)


AppHook = Callable[[web.Application], Awaitable[None]]
AppContext = Callable[[web.Application], AsyncIterator[None]]


def feed_context(settings: FeedSettings | None = None) -> tuple[AppContext, AppHook]:
    """The app's cleanup_ctx entry that owns the feed, and an on_shutdown hook that ends open feeds.

    aiohttp waits for running handlers *before* cleanup_ctx teardown, so the open SSE responses are
    ended from on_shutdown, which runs first; otherwise every stop would wait the full grace period.
    """

    async def context(app: web.Application) -> AsyncIterator[None]:
        feed = EventFeed(app[NODE], settings)
        app[EVENT_FEED] = feed
        feed.start()
        yield
        await feed.close()

    async def on_shutdown(app: web.Application) -> None:
        await app[EVENT_FEED].close()

    return context, on_shutdown


@routes.get("/streaming/events")
async def events(request: web.Request) -> web.StreamResponse:
    if "text/event-stream" not in request.headers.get("Accept", "").lower():
        # An endless response only for those who ask for one (EventSource and SSE libraries do).
        return generic_error(406, "this feed is text/event-stream: send 'Accept: text/event-stream'")
    feed = request.app[EVENT_FEED]
    owner = client_id(request)
    try:
        subscription = feed.subscribe(owner, api_key_id(request))
    except FeedFull as exc:
        return generic_error(503, str(exc))
    try:
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream; charset=utf-8",
                "Cache-Control": "no-store",
                "X-Accel-Buffering": "no",  # a buffering reverse proxy would hold events back
            }
        )
        await response.prepare(request)
        settings = feed.settings
        await response.write(
            encode_event(
                "hello",
                {
                    "client_id": owner,
                    "stats_interval_seconds": settings.stats_interval_seconds,
                    "heartbeat_seconds": settings.heartbeat_seconds,
                },
            )
        )
        while True:
            batch = await subscription.next_batch(settings.heartbeat_seconds)
            if batch is None:
                break
            await response.write(b"".join(encode_event(k, p) for k, p in batch) if batch else HEARTBEAT)
    except ConnectionResetError:
        pass  # the reader went away
    finally:
        feed.unsubscribe(subscription)
    return response
