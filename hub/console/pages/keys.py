"""API keys (admins): create (the key is shown once, on the page that made it), list with last use, revoke.

Keys are made by ``hub.keys.add_key`` (what ``hub keys create`` uses) in the same transaction as their
audit entry; only a hash is stored, so the list can show the prefix and never the key again. A key of an
office outside the admin's subtree answers the same 404 page as one that does not exist.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import select

from hub import keys
from hub.console import audit, sessions, web
from hub.console.auth import Role, Staff, need
from hub.store.models import ApiKey, Office

router = APIRouter()
ADMIN = need(Role.ADMIN)
NAME_MAX = 100
NOTICES = ("revoked",)


async def _listing(request: Request, staff: Staff) -> tuple[list[ApiKey], list[tuple[str, str]]]:
    async with sessions.hub_of(request).db.session() as session:
        rows = list(
            (
                await session.execute(
                    select(ApiKey)
                    .where(ApiKey.office_id.in_(sorted(staff.offices)))
                    .order_by(ApiKey.revoked, ApiKey.office_id, ApiKey.created_at.desc(), ApiKey.id.desc())
                )
            ).scalars()
        )
        offices = (
            await session.execute(
                select(Office.id, Office.name).where(Office.id.in_(sorted(staff.offices))).order_by(Office.id)
            )
        ).all()
    return rows, [(office_id, name) for office_id, name in offices]


async def _page(
    request: Request, staff: Staff, values: dict[str, str], errors: dict[str, str], status_code: int = 200
) -> HTMLResponse:
    rows, offices = await _listing(request, staff)
    notice = request.query_params.get("ok", "")
    return web.page(
        request,
        "keys/list.html.j2",
        staff,
        status_code=status_code,
        rows=rows,
        offices=offices,
        roles=keys.ROLES,
        values=values,
        errors=errors,
        notice=notice if notice in NOTICES else "",
    )


@router.get("/kunci")
async def key_list(request: Request, staff: Staff = Depends(ADMIN)) -> HTMLResponse:
    return await _page(request, staff, {"name": "", "role": "staff", "office": staff.office_id}, {})


@router.post("/kunci")
async def create(request: Request, staff: Staff = Depends(ADMIN)) -> Response:
    posted = await web.form(request)
    values = {name: web.field(posted, name) for name in ("name", "role", "office")}
    errors: dict[str, str] = {}
    if not values["name"]:
        errors["name"] = "keys.name_missing"
    elif len(values["name"]) > NAME_MAX:
        errors["name"] = "keys.name_long"
    if values["role"] not in keys.ROLES:
        errors["role"] = "keys.role_bad"
    if values["office"] not in staff.offices:
        errors["office"] = "keys.office_bad"
    if errors:
        return await _page(request, staff, values, errors, 400)
    hub = sessions.hub_of(request)
    async with hub.db.transaction() as session:
        row, key = await keys.add_key(session, hub.secret, values["office"], values["role"], values["name"])
        await audit.record(
            session,
            staff,
            "key.create",
            f"key:{row.id}",
            {"prefix": row.prefix, "role": row.role, "office": row.office_id},
        )
    return web.page(request, "keys/created.html.j2", staff, row=row, key=key)


@router.post("/kunci/{key_id}/cabut")
async def revoke(key_id: str, request: Request, staff: Staff = Depends(ADMIN)) -> Response:
    await web.form(request)
    if not key_id.isascii() or not key_id.isdigit() or len(key_id) > 18:
        return web.not_found(request, staff)
    async with sessions.hub_of(request).db.transaction() as session:
        row = await session.get(ApiKey, int(key_id))
        if row is None or row.office_id not in staff.offices:
            return web.not_found(request, staff)
        if not row.revoked:
            row.revoked = True
            await audit.record(session, staff, "key.revoke", f"key:{row.id}", {"prefix": row.prefix})
    return web.redirect(request, "/console/kunci?ok=revoked")
