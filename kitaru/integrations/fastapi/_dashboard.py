"""The dashboard: one HTML page, one script and one stylesheet, served as they are.

The page holds no run data: the script reads everything from the API (with
the bearer token, when the server has one, which the page asks for once and
keeps in the tab's session storage), so these three files are served without
the token. They carry a strict Content-Security-Policy: scripts and styles
only from this server, no inline code, no framing.
"""

from __future__ import annotations

import html
from importlib import resources

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

__all__ = ("dashboard_router",)

_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)
_HEADERS = {
    "Content-Security-Policy": _CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
_ASSETS = {"app.js": "text/javascript", "app.css": "text/css"}


def _read(name: str) -> str:
    return resources.files(__package__).joinpath("static", name).read_text(encoding="utf-8")


def dashboard_router(*, api_prefix: str = "/api") -> APIRouter:
    """Routes serving the dashboard at ``/`` of wherever it is mounted.

    Args:
        api_prefix: the absolute path the API router is mounted at.
    """
    dashboard = APIRouter(include_in_schema=False)
    page = _read("index.html")
    assets = {name: _read(name) for name in _ASSETS}

    @dashboard.get("/", response_class=HTMLResponse, name="kitaru_dashboard")
    async def index(request: Request) -> Response:
        root = request.scope.get("root_path", "").rstrip("/")
        here = request.url.path.rstrip("/")
        text = page.replace("{{api}}", html.escape(root + api_prefix, quote=True))
        text = text.replace("{{static}}", html.escape(f"{here}/static", quote=True))
        return HTMLResponse(text, headers=_HEADERS)

    @dashboard.get("/static/{name}", name="kitaru_dashboard_asset")
    async def asset(name: str) -> Response:
        media = _ASSETS.get(name)
        if media is None:
            return Response(status_code=404)
        return Response(assets[name], media_type=f"{media}; charset=utf-8", headers=_HEADERS)

    return dashboard
