"""/streaming/restreams: the destinations a stream is pushed to."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from api.auth import client_id
from api.errors import ValidationFailed, json_response, not_found
from api.routes.common import paged_response, path_id, read_body, relay_of
from api.schemas import parse_body, validate_restream
from relay.engine import Relay
from relay.store.base import StoreError
from relay.store.models import RestreamRecord

routes = web.RouteTableDef()

NOT_SAME_CLIENT = "does not belong to the same client "  # Gcore's text, trailing space included


def restream_body(relay: Relay, restream: RestreamRecord) -> dict[str, Any]:
    return {
        "id": restream.id,
        "name": restream.name,
        "active": restream.active,
        "uri": restream.uri,
        "stream_id": restream.stream_id,
        "client_id": restream.client_id,
        "client_user_id": restream.client_user_id,
        "live": relay.is_live(restream.stream_id),
        "no_audio": restream.no_audio,
        "no_audio_mode": restream.no_audio_mode,
        "source": "original",
        "quality_id": None,
        "playlist_id": None,
        "tls_verify": restream.tls_verify,
        "status": relay.restream_status(restream),
    }


async def _validated(request: web.Request, *, creating: bool) -> dict[str, Any]:
    relay = relay_of(request)
    values, errors = validate_restream(parse_body(await read_body(request), "restream"), creating=creating)
    if "stream_id" in values and "stream" not in errors:
        stream = await relay.store.get_stream(values["stream_id"])
        if stream is None:
            errors["stream"] = ["must exist"]
        elif stream.client_id != client_id(request):
            errors["stream"] = [NOT_SAME_CLIENT]
    if errors:
        raise ValidationFailed(errors)
    return values


@routes.post("/streaming/restreams")
async def create_restream(request: web.Request) -> web.Response:
    relay = relay_of(request)
    values = await _validated(request, creating=True)
    try:
        restream = await relay.store.create_restream(client_id(request), values)
    except StoreError:
        raise ValidationFailed({"stream": ["must exist"]}) from None
    await relay.restream_changed(None, restream)
    return json_response(restream_body(relay, restream))


@routes.get("/streaming/restreams")
async def list_restreams(request: web.Request) -> web.Response:
    relay = relay_of(request)
    return await paged_response(request, relay.store.list_restreams, lambda item: restream_body(relay, item))


@routes.get(r"/streaming/restreams/{id}")
async def get_restream(request: web.Request) -> web.Response:
    relay = relay_of(request)
    restream = await relay.store.get_restream(path_id(request), client_id(request))
    return not_found() if restream is None else json_response(restream_body(relay, restream))


@routes.patch(r"/streaming/restreams/{id}")
async def update_restream(request: web.Request) -> web.Response:
    relay = relay_of(request)
    restream_id, owner = path_id(request), client_id(request)
    before = await relay.store.get_restream(restream_id, owner)
    if before is None:
        return not_found()
    changes = await _validated(request, creating=False)
    try:
        restream = await relay.store.update_restream(restream_id, owner, changes)
    except StoreError:
        raise ValidationFailed({"stream": ["must exist"]}) from None
    if restream is None:
        return not_found()
    await relay.restream_changed(before, restream)
    return json_response(restream_body(relay, restream))


@routes.delete(r"/streaming/restreams/{id}")
async def delete_restream(request: web.Request) -> web.Response:
    relay = relay_of(request)
    restream_id, owner = path_id(request), client_id(request)
    restream = await relay.store.get_restream(restream_id, owner)
    if restream is None or not await relay.store.delete_restream(restream_id, owner):
        return not_found()
    await relay.restream_changed(restream, None)
    return web.Response(status=204)
