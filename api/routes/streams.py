"""/streaming/streams: the sources clients publish to."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from api.auth import client_id
from api.errors import json_response, not_found
from api.routes.common import paged_response, path_id, read_body, relay_of
from api.schemas import iso, parse_body, validate_stream
from relay.engine import Relay
from relay.store.models import StreamRecord

routes = web.RouteTableDef()


def stream_body(relay: Relay, stream: StreamRecord) -> dict[str, Any]:
    session = relay.live_session(stream.id)
    live = relay.is_live(stream.id)
    info = session.info if session is not None and live else None
    return {
        "id": stream.id,
        "name": stream.name,
        "active": stream.active,
        "client_id": stream.client_id,
        "client_user_id": stream.client_user_id,
        "token": stream.token,
        **relay.push_urls(stream),
        "srt_passphrase": stream.srt_passphrase,
        "srt_latency_ms": stream.srt_latency_ms,
        "live": live,
        "backup_live": False,
        "stream_source_type": session.source_type.value if session is not None and live else None,
        "started_at_primary": iso(session.started_at) if session is not None else None,
        "finished_at_primary": iso(session.finished_at) if session is not None else None,
        "video_width": info.video_width if info else None,
        "video_height": info.video_height if info else None,
        "frame_rate": info.frame_rate if info else None,
        "quality_set_id": None,
        "transcoded_qualities": [],
        "created_at": iso(stream.created_at),
        "status": relay.stream_status(stream.id),
    }


@routes.post("/streaming/streams")
async def create_stream(request: web.Request) -> web.Response:
    relay = relay_of(request)
    fields = validate_stream(parse_body(await read_body(request), "stream"), creating=True)
    stream = await relay.store.create_stream(client_id(request), fields)
    return json_response(stream_body(relay, stream))


@routes.get("/streaming/streams")
async def list_streams(request: web.Request) -> web.Response:
    relay = relay_of(request)
    return await paged_response(request, relay.store.list_streams, lambda stream: stream_body(relay, stream))


@routes.get(r"/streaming/streams/{id}")
async def get_stream(request: web.Request) -> web.Response:
    relay = relay_of(request)
    stream = await relay.store.get_stream(path_id(request), client_id(request))
    return not_found() if stream is None else json_response(stream_body(relay, stream))


@routes.patch(r"/streaming/streams/{id}")
async def update_stream(request: web.Request) -> web.Response:
    relay = relay_of(request)
    stream_id, owner = path_id(request), client_id(request)
    if await relay.store.get_stream(stream_id, owner) is None:
        return not_found()
    changes = validate_stream(parse_body(await read_body(request), "stream"), creating=False)
    stream = await relay.store.update_stream(stream_id, owner, changes)
    if stream is None:
        return not_found()
    await relay.stream_changed(stream)
    return json_response(stream_body(relay, stream))


@routes.delete(r"/streaming/streams/{id}")
async def delete_stream(request: web.Request) -> web.Response:
    relay = relay_of(request)
    stream_id = path_id(request)
    if not await relay.store.delete_stream(stream_id, client_id(request)):
        return not_found()
    await relay.stream_deleted(stream_id)
    return web.Response(status=204)
