"""API-key authentication: `Authorization: APIKey <key>`, the scheme word in any case.

Keys are looked up by hash; the client they belong to is put on the request for the handlers, which
scope every query by it. Everything under /streaming/ (the event feed included) and /metrics needs a
key; the health check, the API description and the dashboard page with its static assets (`/`,
`/dashboard/...`) are public: the page holds no data and sends the key with every request it makes.
Refusals are counted, logged and slowed down per address by `AuthFailures` (api/auth_failures.py).
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Middleware

from api.auth_failures import AuthFailureReason, AuthFailures
from api.errors import Handler, json_response
from relay.store.base import Store

CLIENT_ID = web.RequestKey("client_id", int)
API_KEY_ID = web.RequestKey("api_key_id", int)

AUTHENTICATED_PATHS = frozenset({"/metrics"})
UNAUTHORIZED_BODY = {"errors": {"auth": ["invalid api key"]}}


def presented_key(header: str | None) -> str | None:
    """The key in an Authorization header, or None. Keys may contain `$` and other punctuation."""
    if not header:
        return None
    scheme, _, key = header.strip().partition(" ")
    key = key.strip()
    if scheme.lower() != "apikey" or not key or len(key) > 512:
        return None
    return key


def auth_middleware(store: Store, failures: AuthFailures) -> Middleware:
    @web.middleware
    async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not (request.path.startswith("/streaming/") or request.path in AUTHENTICATED_PATHS):
            return await handler(request)
        header = request.headers.get("Authorization")
        key = presented_key(header)
        record = await store.find_api_key(key) if key else None
        if record is not None and record.revoked_at is None:
            request[CLIENT_ID] = record.client_id
            request[API_KEY_ID] = record.id
            return await handler(request)
        if not header:
            reason = AuthFailureReason.MISSING
        elif key is None:
            reason = AuthFailureReason.MALFORMED
        else:
            reason = AuthFailureReason.UNKNOWN if record is None else AuthFailureReason.REVOKED
        return await refuse(request, failures, reason)

    return authenticate


async def refuse(request: web.Request, failures: AuthFailures, reason: AuthFailureReason) -> web.Response:
    """The 401, counted, and held back when the address failed too often (see api/auth_failures.py)."""
    response = json_response(UNAUTHORIZED_BODY, status=401)
    delay = failures.record(request.remote, reason)
    if delay > 0 and not await failures.hold(delay):
        response.force_close()  # too many answers held already: answer now, and make it reconnect
    return response


def client_id(request: web.Request) -> int:
    """The authenticated client of a /streaming/ or /metrics request (the middleware guarantees one)."""
    return request[CLIENT_ID]


def api_key_id(request: web.Request) -> int:
    """The id of the key that authenticated the request: long-lived responses re-check it."""
    return request[API_KEY_ID]
