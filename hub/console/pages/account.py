"""The signed-in user's own account: overview, password change, TOTP enrolment.

These pages use ``need_session``: a user who must still change a one-time password or (an admin) enrol
TOTP reaches them, and nothing else, until done. The secret offered for enrolment is derived from the
session (the same on reload, never stored) and sealed into the account once a code from it is entered.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac

import segno
from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response
from markupsafe import Markup

from hub.console import accounts, audit, sessions, web
from hub.console.auth import Role, Staff, need_session
from hub.store.models import StaffUser

router = APIRouter()


async def _user(request: Request, staff: Staff) -> StaffUser:
    async with sessions.hub_of(request).db.session() as session:
        user = await session.get(StaffUser, staff.id)
    assert user is not None
    return user


@router.get("/akun")
async def overview(request: Request, staff: Staff = Depends(need_session())) -> HTMLResponse:
    user = await _user(request, staff)
    return web.page(request, "account/overview.html.j2", staff, has_totp=bool(user.totp_sealed))


def _password_page(
    request: Request, staff: Staff, user: StaffUser, errors: dict[str, str], status_code: int = 200
) -> HTMLResponse:
    return web.page(
        request,
        "account/password.html.j2",
        staff,
        status_code=status_code,
        errors=errors,
        must=user.must_change_password,
        done=request.query_params.get("selesai") == "1",
    )


@router.get("/akun/sandi")
async def password_form(request: Request, staff: Staff = Depends(need_session())) -> HTMLResponse:
    return _password_page(request, staff, await _user(request, staff), {})


@router.post("/akun/sandi")
async def change_password(request: Request, staff: Staff = Depends(need_session())) -> Response:
    values = await web.form(request)
    user = await _user(request, staff)
    current, new, repeat = (str(values.get(k) or "") for k in ("current", "new", "repeat"))
    errors: dict[str, str] = {}
    if not await asyncio.to_thread(accounts.password_matches, user, current):
        errors["current"] = "password.wrong_current"
    problem = accounts.password_problem(new, user.email)
    if problem:
        errors["new"] = problem
    elif new == current:
        errors["new"] = "password.unchanged"
    elif new != repeat:
        errors["repeat"] = "password.mismatch"
    if errors:
        return _password_page(request, staff, user, errors, 400)
    hub = sessions.hub_of(request)
    await accounts.set_password(hub, user.id, new)
    async with hub.db.transaction() as session:
        await audit.record(session, staff, "password.change", f"staff:{staff.id}")
    await sessions.start(request, user.id, "ok")  # every other session of this account has ended
    return web.redirect(request, "/console/akun/sandi?selesai=1")


def _enrol_secret(request: Request, staff: Staff) -> str:
    """A TOTP secret for this session and user: stable across reloads, never stored until confirmed."""
    key = sessions.hub_of(request).secret
    raw = hmac.new(key, f"totp-enrol:{staff.id}:{sessions.token(request)}".encode(), hashlib.sha256).digest()
    return base64.b32encode(raw[:20]).decode()


def _enrol_page(
    request: Request, staff: Staff, user: StaffUser, error: str = "", status_code: int = 200
) -> HTMLResponse:
    secret = _enrol_secret(request, staff)
    uri = accounts.totp_uri(secret, staff.email)
    qr = segno.make(uri, error="m").svg_inline(scale=4, border=2, title=None)
    return web.page(
        request,
        "account/totp.html.j2",
        staff,
        status_code=status_code,
        enrolled=bool(user.totp_sealed),
        required=staff.role >= Role.ADMIN and not user.totp_sealed,
        secret=" ".join(secret[i : i + 4] for i in range(0, len(secret), 4)),
        uri=uri,
        qr=Markup(qr),  # segno's own SVG markup: no user text in it
        error=error,
        done=request.query_params.get("selesai") == "1",
    )


@router.get("/akun/totp")
async def totp_form(request: Request, staff: Staff = Depends(need_session())) -> HTMLResponse:
    return _enrol_page(request, staff, await _user(request, staff))


@router.post("/akun/totp")
async def totp_enrol(request: Request, staff: Staff = Depends(need_session())) -> Response:
    values = await web.form(request)
    user = await _user(request, staff)
    if user.totp_sealed:
        return web.redirect(request, "/console/akun/totp")
    secret = _enrol_secret(request, staff)
    step = accounts.totp_step(secret, web.field(values, "code"), None)
    if step is None:
        return _enrol_page(request, staff, user, "totp.wrong", 400)
    hub = sessions.hub_of(request)
    await accounts.enrol_totp(hub, user.id, secret, step)
    async with hub.db.transaction() as session:
        await audit.record(session, staff, "totp.enrol", f"staff:{staff.id}")
    return web.redirect(request, "/console/akun/totp?selesai=1")
