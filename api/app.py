"""The control API application: Gcore-compatible streams and restreams, health and OpenAPI, the event
feed, Prometheus metrics and the operators' dashboard."""

from __future__ import annotations

from aiohttp import web

from api.auth import auth_middleware
from api.errors import error_middleware
from api.limits import ConnectionGuard
from api.routes import dashboard, events, metrics, restreams, status, streams
from api.routes.common import MAX_BODY_BYTES, NODE, Node
from relay.engine import Engine
from relay.ingest.addresses import IngestAddresses
from relay.store.base import Store


def create_app(
    engine: Engine,
    store: Store,
    addresses: IngestAddresses,
    *,
    feed_settings: events.FeedSettings | None = None,
    guard: ConnectionGuard | None = None,
) -> web.Application:
    """An aiohttp application serving the control API of one node (whose parts the caller starts and stops).

    With `guard` (the one its site listens through), requests are tracked for the connection limits and
    bodies must arrive in time; the guard's body check comes after authentication.
    """
    middlewares = [error_middleware, auth_middleware(store)]
    if guard is not None:
        middlewares = [guard.middleware, *middlewares, guard.body_middleware]
    app = web.Application(middlewares=middlewares, client_max_size=MAX_BODY_BYTES)
    app[NODE] = Node(engine, store, addresses)
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
