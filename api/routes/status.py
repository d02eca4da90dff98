"""Unauthenticated endpoints: liveness and the API description."""

from __future__ import annotations

from aiohttp import web

from api.errors import json_response
from api.openapi import openapi_document
from api.routes.common import node_of

routes = web.RouteTableDef()


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok", "live_streams": node_of(request).engine.live_count()})


@routes.get("/openapi.json")
async def openapi(request: web.Request) -> web.Response:
    return json_response(openapi_document())
