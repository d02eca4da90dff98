"""/streaming/restreams: the destinations a stream is pushed to."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from api.auth import client_id
from api.bodies import restream_body
from api.errors import ValidationFailed, json_response, not_found
from api.routes.common import node_of, paged_response, path_id, read_body
from api.schemas import parse_body, validate_restream
from relay.store.base import StoreError

routes = web.RouteTableDef()

NOT_SAME_CLIENT = "does not belong to the same client "  # Gcore's text, trailing space included


async def _validated(request: web.Request, *, current_stream_id: int | None = None) -> dict[str, Any]:
    """The restream fields of the body, checked; `current_stream_id` is the stream of the restream being
    updated (None when creating)."""
    node = node_of(request)
    creating = current_stream_id is None
    body = parse_body(await read_body(request), "restream")
    policy = node.engine.destination_policy
    values, errors = validate_restream(body, creating=creating, policy=policy, client_id=client_id(request))
    if "stream_id" in values and "stream" not in errors:
        stream = await node.store.get_stream(values["stream_id"])
        if stream is None:
            errors["stream"] = ["must exist"]
        elif stream.client_id != client_id(request):
            errors["stream"] = [NOT_SAME_CLIENT]
        elif stream.id != current_stream_id:  # one more restream on that stream
            limit = node.engine.limits.of(stream.client_id).restreams_per_stream
            if await node.store.restream_count(stream.id) >= limit:
                errors["restreams"] = [f"limit reached: a stream may have at most {limit} restreams"]
    if errors:
        raise ValidationFailed(errors)
    return values


@routes.post("/streaming/restreams")
async def create_restream(request: web.Request) -> web.Response:
    node = node_of(request)
    values = await _validated(request)
    try:
        restream = await node.store.create_restream(client_id(request), values)
    except StoreError:
        raise ValidationFailed({"stream": ["must exist"]}) from None
    return json_response(restream_body(node.engine, restream))


@routes.get("/streaming/restreams")
async def list_restreams(request: web.Request) -> web.Response:
    node = node_of(request)
    return await paged_response(request, node.store.list_restreams, lambda item: restream_body(node.engine, item))


@routes.get(r"/streaming/restreams/{id}")
async def get_restream(request: web.Request) -> web.Response:
    node = node_of(request)
    restream = await node.store.get_restream(path_id(request), client_id(request))
    return not_found() if restream is None else json_response(restream_body(node.engine, restream))


@routes.patch(r"/streaming/restreams/{id}")
async def update_restream(request: web.Request) -> web.Response:
    node = node_of(request)
    restream_id, owner = path_id(request), client_id(request)
    current = await node.store.get_restream(restream_id, owner)
    if current is None:
        return not_found()
    changes = await _validated(request, current_stream_id=current.stream_id)
    try:
        restream = await node.store.update_restream(restream_id, owner, changes)
    except StoreError:
        raise ValidationFailed({"stream": ["must exist"]}) from None
    if restream is None:
        return not_found()
    return json_response(restream_body(node.engine, restream))


@routes.delete(r"/streaming/restreams/{id}")
async def delete_restream(request: web.Request) -> web.Response:
    node = node_of(request)
    restream_id, owner = path_id(request), client_id(request)
    if not await node.store.delete_restream(restream_id, owner):
        return not_found()
    return web.Response(status=204)
