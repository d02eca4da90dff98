"""The operators' dashboard: one static page and its two assets, public (they hold no data).

The page asks for an API key and sends it with every request; everything it shows comes from the
authenticated API and the event feed. A strict Content-Security-Policy keeps it to this origin only.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

routes = web.RouteTableDef()

DASHBOARD_DIR = Path(__file__).resolve().parent.parent / "dashboard"
ASSETS = frozenset({"app.js", "style.css"})
_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


@routes.get("/")
async def dashboard_page(request: web.Request) -> web.FileResponse:
    return web.FileResponse(DASHBOARD_DIR / "index.html", headers=_HEADERS)


@routes.get("/dashboard/{name}")
async def dashboard_asset(request: web.Request) -> web.FileResponse:
    name = request.match_info["name"]
    if name not in ASSETS:  # a fixed list: nothing else on disk is reachable
        raise web.HTTPNotFound()
    return web.FileResponse(DASHBOARD_DIR / name, headers=_HEADERS)
