"""The control API application: Gcore-compatible streams and restreams, health and OpenAPI, the event
feed, Prometheus metrics and the operators' dashboard."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from aiohttp import web

from api.auth import auth_middleware
from api.auth_failures import AUTH_FAILURES, AuthFailures, AuthFailureSettings
from api.errors import error_middleware
from api.limits import ConnectionGuard
from api.loops import LoopBridge
from api.metrics import DOORS, Doors
from api.routes import dashboard, events, metrics, restreams, status, streams
from api.routes.common import MAX_BODY_BYTES, NODE, Node
from relay.doors import DoorCounts
from relay.engine import Engine
from relay.hub.clock import LoopClock
from relay.ingest.addresses import IngestAddresses
from relay.store.base import Store


def create_app(
    engine: Engine,
    store: Store,
    addresses: IngestAddresses,
    *,
    feed_settings: events.FeedSettings | None = None,
    auth_failure_settings: AuthFailureSettings | None = None,
    guard: ConnectionGuard | None = None,
    engine_loop: asyncio.AbstractEventLoop | None = None,
    ingest_doors: Sequence[Callable[[], DoorCounts]] = (),
) -> web.Application:
    """An aiohttp application serving the control API of one node (whose parts the caller starts and stops).

    With `guard` (the one its site listens through), requests are tracked for the connection limits and
    bodies must arrive in time; the guard's body check comes after authentication. With `engine_loop`
    (the engine's, when the application runs on a loop of its own), store writes and the metrics scrape
    cross to it (api/loops.py). `ingest_doors`: each ingest listener's connection counts, for /metrics.
    """
    bridge = LoopBridge(engine_loop)
    store = bridge.store(store)
    auth_failures = AuthFailures(LoopClock(), auth_failure_settings)
    middlewares = [error_middleware, auth_middleware(store, auth_failures)]
    if guard is not None:
        middlewares = [guard.middleware, *middlewares, guard.body_middleware]
    app = web.Application(middlewares=middlewares, client_max_size=MAX_BODY_BYTES)
    app[NODE] = Node(engine, store, addresses, bridge)
    app[AUTH_FAILURES] = auth_failures
    app[DOORS] = Doors(guard, ingest_doors)
    app.add_routes(status.routes)
    app.add_routes(streams.routes)
    app.add_routes(restreams.routes)
    app.add_routes(events.routes)
    app.add_routes(metrics.routes)
    app.add_routes(dashboard.routes)
    feed_context, end_feeds = events.feed_context(feed_settings)
    app.cleanup_ctx.append(feed_context)
    app.on_shutdown.append(end_feeds)
    return app
