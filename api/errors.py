"""Error shapes of the Gcore Streaming API and the middleware that produces them.

Validation: 422 `{"errors": {"<field>": ["<message>"]}}`. Missing objects: Gcore's 404 body. Bad JSON and
other HTTP errors: `{"status": N, "error": "<reason>"}`. Nothing a client submitted is echoed back.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence

from aiohttp import web

from relay.store.base import StoreUnavailable

log = logging.getLogger("relay.api")

NOT_FOUND_MESSAGE = "Not Found. Entity you are looking for was not found, please check the initial parameters"


class ValidationFailed(Exception):
    """A request body or parameter broke a rule; `errors` maps field names to messages."""

    def __init__(self, errors: Mapping[str, Sequence[str]]) -> None:
        super().__init__("validation failed")
        self.errors = {name: list(messages) for name, messages in errors.items()}


class BadRequest(Exception):
    """The request cannot be read at all (not JSON, not an object)."""


def json_response(body: object, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(
        text=json.dumps(body, separators=(",", ":")),
        status=status,
        content_type="application/json",
        headers=headers,
    )


def not_found() -> web.Response:
    return json_response({"status": 404, "error": NOT_FOUND_MESSAGE}, status=404)


def generic_error(status: int, reason: str) -> web.Response:
    return json_response({"status": status, "error": reason}, status=status)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ValidationFailed as exc:
        return json_response({"errors": exc.errors}, status=422)
    except BadRequest as exc:
        return generic_error(400, str(exc))
    except StoreUnavailable:
        # The disk, not the request (full, I/O error): nothing was kept, and asking again later may work.
        return generic_error(503, "storage unavailable, try again later")
    except web.HTTPException as exc:
        if exc.status == 404:
            return not_found()
        if exc.status < 400:
            raise
        if exc.status == 413:
            return generic_error(413, "request body too large")
        return generic_error(exc.status, exc.reason)
    except Exception:
        # Log the path template, not the raw URL: query strings are the client's and may carry anything.
        route = request.match_info.route.resource.canonical if request.match_info.route.resource else "?"
        log.exception("unhandled error in %s %s", request.method, route)
        return generic_error(500, "Internal Server Error")
