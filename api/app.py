"""The control API application: Gcore-compatible streams and restreams, health and OpenAPI."""

from __future__ import annotations

from aiohttp import web

from api.auth import auth_middleware
from api.errors import error_middleware
from api.routes import restreams, status, streams
from api.routes.common import MAX_BODY_BYTES, RELAY
from relay.engine import Relay


def create_app(relay: Relay) -> web.Application:
    """An aiohttp application serving the control API of `relay` (which the caller starts and stops)."""
    app = web.Application(
        middlewares=[error_middleware, auth_middleware(relay)],
        client_max_size=MAX_BODY_BYTES,
    )
    app[RELAY] = relay
    app.add_routes(status.routes)
    app.add_routes(streams.routes)
    app.add_routes(restreams.routes)
    return app
