"""Any other path under /console: the console's own 404 page, not the API's JSON."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from hub.console import web

router = APIRouter()


@router.get("/{rest:path}")
async def unknown(rest: str, request: Request) -> HTMLResponse:
    """Public: says only that there is no such page (listed in the route audit)."""
    return web.not_found(request, None)
