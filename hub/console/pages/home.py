"""A placeholder dashboard, used only while hub.console.pages.announcements (the real one) is missing."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse

from hub.console import web
from hub.console.auth import Role, Staff, need

router = APIRouter()


@router.get("/")
async def dashboard(request: Request, staff: Staff = Depends(need(Role.VIEWER))) -> HTMLResponse:
    return web.page(request, "home.html.j2", staff)
