"""/streaming/streams: the sources clients publish to."""

from __future__ import annotations

from aiohttp import web

from api.auth import client_id
from api.bodies import stream_body
from api.errors import ValidationFailed, json_response, not_found
from api.routes.common import node_of, paged_response, path_id, read_body
from api.schemas import PULL_NEEDS_URI, parse_body, validate_stream

routes = web.RouteTableDef()


@routes.post("/streaming/streams")
async def create_stream(request: web.Request) -> web.Response:
    node = node_of(request)
    owner = client_id(request)
    policy = node.engine.destination_policy
    fields = validate_stream(
        parse_body(await read_body(request), "stream"), creating=True, policy=policy, client_id=owner
    )
    limit = node.engine.limits.of(owner).streams
    if (await node.store.list_streams(owner, 0, 0)).total >= limit:
        raise ValidationFailed({"streams": [f"limit reached: this client may have at most {limit} streams"]})
    stream = await node.store.create_stream(owner, fields)
    return json_response(stream_body(node.engine, node.addresses, stream))


@routes.get("/streaming/streams")
async def list_streams(request: web.Request) -> web.Response:
    node = node_of(request)
    return await paged_response(
        request, node.store.list_streams, lambda stream: stream_body(node.engine, node.addresses, stream)
    )


@routes.get(r"/streaming/streams/{id}")
async def get_stream(request: web.Request) -> web.Response:
    node = node_of(request)
    stream = await node.store.get_stream(path_id(request), client_id(request))
    return not_found() if stream is None else json_response(stream_body(node.engine, node.addresses, stream))


@routes.patch(r"/streaming/streams/{id}")
async def update_stream(request: web.Request) -> web.Response:
    node = node_of(request)
    stream_id, owner = path_id(request), client_id(request)
    current = await node.store.get_stream(stream_id, owner)
    if current is None:
        return not_found()
    policy = node.engine.destination_policy
    body = parse_body(await read_body(request), "stream")
    changes = validate_stream(body, creating=False, policy=policy, client_id=owner)
    if changes.get("pull", current.pull) and changes.get("uri", current.uri) is None:
        raise ValidationFailed({"uri": [PULL_NEEDS_URI]})
    stream = await node.store.update_stream(stream_id, owner, changes)  # the engine hears of it from the store
    if stream is None:
        return not_found()
    return json_response(stream_body(node.engine, node.addresses, stream))


@routes.post(r"/streaming/streams/{id}/reset_push_token")
async def reset_push_token(request: web.Request) -> web.Response:
    """Gcore's token reset: a new token, the stream as GET shows it. The store announces the change, so
    that when this answers every publisher on the old token is gone and the old token admits nobody."""
    node = node_of(request)
    stream = await node.store.reset_stream_token(path_id(request), client_id(request))
    return not_found() if stream is None else json_response(stream_body(node.engine, node.addresses, stream))


@routes.delete(r"/streaming/streams/{id}")
async def delete_stream(request: web.Request) -> web.Response:
    node = node_of(request)
    if not await node.store.delete_stream(path_id(request), client_id(request)):
        return not_found()
    return web.Response(status=204)
