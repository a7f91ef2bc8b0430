"""The team page (admins): users of the admin's subtree; create, change role, reset password, deactivate.

A user id outside the admin's subtree answers the same 404 page as one that does not exist. One-time
passwords are shown once, on the page that made them, and never stored in clear. Every change is in the
audit log in the same transaction as the change.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import select

from hub.clock import utcnow
from hub.console import accounts, audit, sessions, web
from hub.console.auth import Role, Staff, need
from hub.store.models import Office, StaffUser

router = APIRouter()
ADMIN = need(Role.ADMIN)


async def _offices(request: Request, staff: Staff) -> list[tuple[str, str]]:
    async with sessions.hub_of(request).db.session() as session:
        rows = await session.execute(
            select(Office.id, Office.name).where(Office.id.in_(sorted(staff.offices))).order_by(Office.id)
        )
    return [(office_id, name) for office_id, name in rows]


@router.get("/tim")
async def team(request: Request, staff: Staff = Depends(ADMIN)) -> HTMLResponse:
    async with sessions.hub_of(request).db.session() as session:
        users = list(
            (
                await session.execute(
                    select(StaffUser)
                    .where(StaffUser.office_id.in_(sorted(staff.offices)))
                    .order_by(StaffUser.office_id, StaffUser.email)
                )
            ).scalars()
        )
    return web.page(request, "team/list.html.j2", staff, users=users, now=utcnow(), Role=Role)


def _create_page(
    request: Request,
    staff: Staff,
    offices: list[tuple[str, str]],
    values: dict[str, str],
    errors: dict[str, str],
    status_code: int = 200,
) -> HTMLResponse:
    return web.page(
        request,
        "team/create.html.j2",
        staff,
        status_code=status_code,
        offices=offices,
        roles=list(Role),
        values=values,
        errors=errors,
    )


@router.get("/tim/baru")
async def create_form(request: Request, staff: Staff = Depends(ADMIN)) -> HTMLResponse:
    values = {"name": "", "email": "", "office": staff.office_id, "role": Role.EDITOR.key}
    return _create_page(request, staff, await _offices(request, staff), values, {})


_FIELD_ERRORS = {"email": "team.email_bad", "name": "team.name_missing", "office": "team.office_bad"}


@router.post("/tim/baru")
async def create(request: Request, staff: Staff = Depends(ADMIN)) -> Response:
    posted = await web.form(request)
    values = {name: web.field(posted, name) for name in ("name", "email", "office", "role")}
    offices = await _offices(request, staff)
    errors: dict[str, str] = {}
    try:
        role = Role.parse(values["role"])
    except ValueError:
        errors["role"] = "team.role_bad"
    if values["office"] not in staff.offices:
        errors["office"] = "team.office_bad"
    if not values["name"]:
        errors["name"] = "team.name_missing"
    if errors:
        return _create_page(request, staff, offices, values, errors, 400)
    hub = sessions.hub_of(request)
    try:
        async with hub.db.transaction() as session:
            user, password = await accounts.create_user(
                session, values["office"], role, values["email"], values["name"]
            )
            await audit.record(
                session, staff, "user.create", f"staff:{user.id}", {"email": user.email, "role": role.key}
            )
    except accounts.AccountError as refused:
        key = "team.email_taken" if "already has" in str(refused) else _FIELD_ERRORS.get(refused.field, "")
        errors[refused.field or "email"] = key or "team.email_bad"
        return _create_page(request, staff, offices, values, errors, 400)
    return web.page(request, "team/password.html.j2", staff, user=user, password=password, created=True)


async def _member(request: Request, staff: Staff, user_id: str) -> StaffUser | None:
    """The user if ``user_id`` names one in the admin's subtree, else None (a 404 page)."""
    if not user_id.isascii() or not user_id.isdigit() or len(user_id) > 18:
        return None
    async with sessions.hub_of(request).db.session() as session:
        user = await session.get(StaffUser, int(user_id))
    if user is None or user.office_id not in staff.offices:
        return None
    return user


@router.get("/tim/{user_id}")
async def member(user_id: str, request: Request, staff: Staff = Depends(ADMIN)) -> HTMLResponse:
    user = await _member(request, staff, user_id)
    if user is None:
        return web.not_found(request, staff)
    notice = request.query_params.get("ok", "")
    return _member_page(request, staff, user, notice if notice in NOTICES else "")


NOTICES = ("role_changed", "deactivated", "activated")


def _member_page(
    request: Request, staff: Staff, user: StaffUser, notice: str = "", error: str = "", status_code: int = 200
) -> HTMLResponse:
    return web.page(
        request,
        "team/member.html.j2",
        staff,
        status_code=status_code,
        user=user,
        roles=list(Role),
        now=utcnow(),
        notice=notice,
        error=error,
    )


@router.post("/tim/{user_id}/peran")
async def change_role(user_id: str, request: Request, staff: Staff = Depends(ADMIN)) -> Response:
    posted = await web.form(request)
    user = await _member(request, staff, user_id)
    if user is None:
        return web.not_found(request, staff)
    try:
        role = Role.parse(web.field(posted, "role"))
    except ValueError:
        return web.problem(request, staff, 400, "bad_form")
    if user.id == staff.id:
        return _refuse_self(request, staff, user)
    async with sessions.hub_of(request).db.transaction() as session:
        row = await session.get(StaffUser, user.id)
        assert row is not None
        before, row.role = row.role, role.key
        await audit.record(session, staff, "user.role", f"staff:{user.id}", {"from": before, "to": role.key})
    return web.redirect(request, f"/console/tim/{user.id}?ok=role_changed")


def _refuse_self(request: Request, staff: Staff, user: StaffUser) -> HTMLResponse:
    return _member_page(request, staff, user, error="team.not_self", status_code=400)


@router.post("/tim/{user_id}/reset")
async def reset(user_id: str, request: Request, staff: Staff = Depends(ADMIN)) -> Response:
    posted = await web.form(request)
    user = await _member(request, staff, user_id)
    if user is None:
        return web.not_found(request, staff)
    reset_totp = web.field(posted, "reset_totp") == "1"
    hub = sessions.hub_of(request)
    async with hub.db.transaction() as session:
        row = await session.get(StaffUser, user.id)
        assert row is not None
        password = await accounts.reset_password(hub, session, row, reset_totp=reset_totp)
        await audit.record(session, staff, "user.reset_password", f"staff:{user.id}", {"totp": reset_totp})
    return web.page(request, "team/password.html.j2", staff, user=user, password=password, created=False)


@router.post("/tim/{user_id}/aktif")
async def set_active(user_id: str, request: Request, staff: Staff = Depends(ADMIN)) -> Response:
    posted = await web.form(request)
    user = await _member(request, staff, user_id)
    if user is None:
        return web.not_found(request, staff)
    if user.id == staff.id:
        return _refuse_self(request, staff, user)
    active = web.field(posted, "active") == "1"
    async with sessions.hub_of(request).db.transaction() as session:
        row = await session.get(StaffUser, user.id)
        assert row is not None
        row.active = active
        if not active:
            await accounts.end_sessions(session, user.id)
        await audit.record(
            session, staff, "user.activate" if active else "user.deactivate", f"staff:{user.id}"
        )
    return web.redirect(request, f"/console/tim/{user.id}?ok={'activated' if active else 'deactivated'}")
