"""Unauthenticated endpoints: liveness and the API description."""

from __future__ import annotations

from aiohttp import web

from api.errors import json_response
from api.openapi import openapi_document
from api.routes.common import node_of

routes = web.RouteTableDef()


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    """200 while the node can serve; 503 while its store cannot write (disk full, I/O error): a health
    check, not an API answer, so a 5xx is what a load balancer or an orchestrator should see."""
    node = node_of(request)
    if not await node.store.check_health():
        return json_response({"status": "unavailable", "store": "failing"}, status=503)
    return json_response({"status": "ok", "live_streams": node.engine.live_count()})


@routes.get("/openapi.json")
async def openapi(request: web.Request) -> web.Response:
    return json_response(openapi_document())
