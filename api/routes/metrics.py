"""GET /metrics: Prometheus exposition, authenticated with an API key and scoped to its client.

Per-stream and per-restream series cover the key's own client only (a client never sees another's
objects); process, ffmpeg, ingest-refusal, connection (refused, cut, open) and failed-authentication figures
are node-wide and carry no ids.
"""

from __future__ import annotations

from aiohttp import web

from api import metrics
from api.auth import client_id
from api.auth_failures import AUTH_FAILURES, AuthFailureCollector
from api.routes.common import node_of

routes = web.RouteTableDef()


@routes.get("/metrics")
async def prometheus_metrics(request: web.Request) -> web.Response:
    node_wide = [AuthFailureCollector(request.app[AUTH_FAILURES]), metrics.DoorCollector(request.app[metrics.DOORS])]
    node = node_of(request)
    # The scrape walks every push: on the engine's loop, where they change (api/loops.py).
    body, content_type = await node.bridge.on_engine(
        metrics.render(node, client_id(request), request.headers.get("Accept"), node_wide)
    )
    response = web.Response(body=body, headers={"Cache-Control": "no-store"})
    response.headers["Content-Type"] = content_type
    return response
