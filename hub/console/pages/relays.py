"""Kelurahan relays (admins): one-time registration codes, and the registered groups (masked).

A code is made by ``hub.bot.relay.relay_code`` (what ``hub relays code`` uses) and sent in the group as
``/kelurahan KODE``; the page shows it once. A registered group is an endpoint with ``relay_office_id``:
pausing deactivates it (fan-out skips inactive endpoints) and only a pause is undone here, never a
deactivation by the channel (a blocked bot, a left group). Removing ends its subscriptions to the office's
topics and its relay mark. Another office's group answers the same 404 page as an unknown one.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import func, select

from hub.bot.relay import relay_code
from hub.console import audit, sessions, web
from hub.console.auth import Role, Staff, need
from hub.errors import InvalidInput, NotFound
from hub.privacy import mask
from hub.relays import manage
from hub.relays.manage import PAUSED
from hub.store.models import Endpoint, KeyValue, Office

router = APIRouter()
ADMIN = need(Role.ADMIN)
NOTICES = ("paused", "resumed", "removed")


async def _page(
    request: Request, staff: Staff, errors: dict[str, str], status_code: int = 200
) -> HTMLResponse:
    hub = sessions.hub_of(request)
    offices = sorted(staff.offices)
    async with hub.db.session() as session:
        rows = (
            await session.execute(
                select(Endpoint)
                .where(Endpoint.relay_office_id.in_(offices))
                .order_by(Endpoint.relay_office_id, Endpoint.id)
            )
        ).scalars()
        groups = [
            (
                row.id,
                row.relay_office_id,
                row.channel,
                mask(row.address, hub.channels.get(row.channel)),
                row.active,
                row.deactivated_reason,
                row.created_at,
            )
            for row in rows
        ]
        pending = dict(
            (
                await session.execute(
                    select(KeyValue.value, func.count())
                    .where(KeyValue.key.like("relay:%"), KeyValue.value.in_(offices))
                    .group_by(KeyValue.value)
                )
            ).all()
        )
        names = (
            await session.execute(
                select(Office.id, Office.name).where(Office.id.in_(offices)).order_by(Office.id)
            )
        ).all()
    notice = request.query_params.get("ok", "")
    return web.page(
        request,
        "relays/list.html.j2",
        staff,
        status_code=status_code,
        groups=groups,
        pending=pending,
        offices=[(office_id, name) for office_id, name in names],
        errors=errors,
        paused=PAUSED,
        notice=notice if notice in NOTICES else "",
    )


@router.get("/relay")
async def relays(request: Request, staff: Staff = Depends(ADMIN)) -> HTMLResponse:
    return await _page(request, staff, {})


@router.post("/relay/kode")
async def new_code(request: Request, staff: Staff = Depends(ADMIN)) -> Response:
    posted = await web.form(request)
    office_id = web.field(posted, "office")
    if office_id not in staff.offices:
        return await _page(request, staff, {"office": "relays.office_bad"}, 400)
    hub = sessions.hub_of(request)
    code = await relay_code(hub, office_id)
    async with hub.db.transaction() as session:  # relay_code commits on its own: the record follows it
        await audit.record(session, staff, "relay.code", f"office:{office_id}", {"code": code[:3] + "***"})
    return web.page(request, "relays/code.html.j2", staff, code=code, office_id=office_id)


@router.post("/relay/{endpoint_id}/{action}")
async def change(endpoint_id: str, action: str, request: Request, staff: Staff = Depends(ADMIN)) -> Response:
    await web.form(request)
    what = {"jeda": "pause", "lanjut": "resume", "hapus": "remove"}.get(action)
    if what is None or not endpoint_id.isascii() or not endpoint_id.isdigit() or len(endpoint_id) > 18:
        return web.not_found(request, staff)
    hub = sessions.hub_of(request)
    async with hub.db.transaction() as session:
        try:
            relay = await manage.change_in(session, hub, int(endpoint_id), what, staff.offices)
        except NotFound:  # another office's group answers as an unknown one
            return web.not_found(request, staff)
        except InvalidInput:  # resuming a group its channel deactivated: only a pause is undone here
            return web.redirect(request, "/console/relay")
        await audit.record(session, staff, f"relay.{what}", f"endpoint:{relay.id}", {"office": relay.office})
    done = {"pause": "paused", "resume": "resumed", "remove": "removed"}[what]
    return web.redirect(request, f"/console/relay?ok={done}")


async def relay_section(hub: Any, announcement_id: int) -> dict[str, Any] | None:
    """The "Kelurahan" section of an announcement's page: who confirmed, who did not; None if it
    reached no relay (the page then shows no section)."""
    shown = await manage.acks_of(hub, announcement_id)
    return shown if shown["total"] else None
