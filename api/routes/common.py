"""Helpers shared by the resource routes: the node's parts, paging, ids from the path."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiohttp import web

from api.auth import client_id
from api.errors import ValidationFailed, json_response
from api.loops import LoopBridge
from relay.engine import Engine
from relay.ingest.addresses import IngestAddresses
from relay.store.base import Store
from relay.store.models import Page

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Node:
    """What the API serves: the store it writes definitions to, the engine it reads live state from,
    and the ingest addresses written into push URLs."""

    engine: Engine
    store: Store
    """Writes (and reads, unless the store allows otherwise) run on the engine's loop: see api/loops.py."""
    addresses: IngestAddresses
    bridge: LoopBridge = field(default_factory=LoopBridge)
    """How the API's loop reaches the engine's (the same loop unless the server runs the API on its own)."""


NODE = web.AppKey("node", Node)
PAGE_SIZE = 25
MAX_BODY_BYTES = 64 * 1024
_MAX_ID = 2**63 - 1


def node_of(request: web.Request) -> Node:
    return request.app[NODE]


def path_id(request: web.Request) -> int:
    """The numeric id in the path; a malformed or impossible id is simply not found."""
    raw = request.match_info["id"]
    if not raw.isdigit() or len(raw) > 19 or int(raw) > _MAX_ID:
        raise web.HTTPNotFound()
    return int(raw)


def page_number(request: web.Request) -> int:
    raw = request.query.get("page", "1")
    if not raw.isdigit() or len(raw) > 9 or int(raw) < 1:
        raise ValidationFailed({"page": ["must be a positive integer"]})
    return int(raw)


def page_headers(request: web.Request, page: int, total: int) -> dict[str, str]:
    headers = {"X-Total-Count": str(total)}
    if page * PAGE_SIZE < total:
        # Only `page` is carried over: echoing other query values into a header would let a client
        # inject control characters (and nothing else in the query means anything to a listing).
        headers["Link"] = f'<{request.path}?page={page + 1}>; rel="next"'
    return headers


async def paged_response(
    request: web.Request,
    fetch: Callable[[int, int, int], Awaitable[Page[T]]],
    render: Callable[[T], dict[str, Any]],
) -> web.Response:
    """A listing as Gcore serves it: `?page=N`, 25 a page, a bare JSON array, X-Total-Count and Link."""
    page = page_number(request)
    found = await fetch(client_id(request), (page - 1) * PAGE_SIZE, PAGE_SIZE)
    return json_response([render(item) for item in found.items], headers=page_headers(request, page, found.total))


async def read_body(request: web.Request) -> bytes:
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise web.HTTPRequestEntityTooLarge(max_size=MAX_BODY_BYTES, actual_size=request.content_length)
    return await request.read()
