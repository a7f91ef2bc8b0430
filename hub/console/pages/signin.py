"""Signing in (email and password, then a TOTP code when the account has one) and signing out.

Each step makes a new session (``sessions.start``): the token a browser had before signing in is worth
nothing after. Attempts are limited per client and per account in Redis (``SIGNIN_*``), and wrong
passwords or codes lock the account (``accounts.MAX_FAILURES``). Every outcome goes to the audit log,
never the password or the code.
"""

from __future__ import annotations

import math
from urllib.parse import quote

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response

from hub import signing
from hub.api import limits
from hub.console import accounts, audit, sessions, web
from hub.console.auth import Staff, need_session, safe_next
from hub.logs import log
from hub.queue import REDIS_DOWN
from hub.ratelimit import SlidingWindow
from hub.store.models import StaffUser

router = APIRouter()

#: Sign-in attempts (passwords and codes) per client address, and per account, in a sliding window.
SIGNIN_PER_CLIENT = 20
SIGNIN_PER_ACCOUNT = 10
SIGNIN_WINDOW = 600.0


async def _over_limit(request: Request, email: str) -> float:
    """Seconds to wait when this client or account made too many attempts lately (0: go ahead)."""
    hub = sessions.hub_of(request)
    if hub.redis is None:
        return 0.0
    prefix = hub.settings.redis.key_prefix
    account = signing.digest(hub.secret, f"staff-signin:{email.strip().lower()}")[:32]
    try:
        waits = [
            await SlidingWindow(hub.redis, prefix, "console-signin", SIGNIN_PER_CLIENT, SIGNIN_WINDOW).take(
                limits.client(hub, request)
            ),
            await SlidingWindow(
                hub.redis, prefix, "console-signin-account", SIGNIN_PER_ACCOUNT, SIGNIN_WINDOW
            ).take(account),
        ]
    except REDIS_DOWN:
        log.warning("console_signin_limit_unavailable", reason="redis down; the lock-out still holds")
        return 0.0
    return max(waits)


async def _audit(request: Request, user: StaffUser | None, action: str, email: str, **detail: object) -> None:
    hub = sessions.hub_of(request)
    async with hub.db.transaction() as session:
        await audit.record(
            session,
            None,
            action,
            target=f"staff:{user.id}" if user else "",
            detail=dict(detail),
            email=user.email if user else email[:320],
            office_id=user.office_id if user else None,
        )


def _signin_page(request: Request, status_code: int = 200, **context: object) -> HTMLResponse:
    values = {"email": "", "error": "", "notice": "", "next": safe_next(request.query_params.get("next"))}
    values.update(context)
    return web.page(request, "signin.html.j2", None, status_code=status_code, **values)


@router.get("/masuk")
async def signin_form(request: Request) -> Response:
    """Public: the sign-in form (listed in the route audit)."""
    if await sessions.current(request) is not None:
        return web.redirect(request, safe_next(request.query_params.get("next")))
    notice = "signin.signed_out" if request.query_params.get("keluar") else ""
    if request.query_params.get("habis"):
        notice = "signin.expired"
    return _signin_page(request, notice=notice)


@router.post("/masuk")
async def signin(request: Request) -> Response:
    """Public: checks the password (listed in the route audit)."""
    values = await web.form(request)
    email, password = web.field(values, "email"), str(values.get("password") or "")
    target = safe_next(web.field(values, "next"))
    wait = await _over_limit(request, email)
    if wait:
        await _audit(request, None, "signin.throttled", email)
        minutes = max(1, math.ceil(wait / 60))
        return _signin_page(request, 429, email=email, next=target, error=("signin.too_many", minutes))
    attempt = await accounts.check_password(sessions.hub_of(request), email, password)
    if attempt.outcome != "ok" or attempt.user is None:
        action = "signin.locked" if attempt.outcome == "locked" else "signin.failed"
        await _audit(request, attempt.user, action, email, factor="password")
        return _signin_page(request, 401, email=email, next=target, error=("signin.refused", 0))
    user = attempt.user
    if user.totp_sealed:
        await sessions.start(request, user.id, "totp")
        return web.redirect(request, f"/console/masuk/kode?next={_quote(target)}")
    await sessions.start(request, user.id, "ok")
    await _audit(request, user, "signin", email, factor="password")
    return web.redirect(request, target)


def _quote(target: str) -> str:
    return quote(target, safe="")


@router.get("/masuk/kode")
async def code_form(request: Request) -> Response:
    """Public: the second step, only for a browser whose password was just accepted (route audit)."""
    user = await sessions.current(request, "totp")
    if user is None:
        return web.redirect(request, "/console/masuk?habis=1")
    return web.page(
        request,
        "signin_code.html.j2",
        None,
        email=user.email,
        error="",
        next=safe_next(request.query_params.get("next")),
    )


@router.post("/masuk/kode")
async def code(request: Request) -> Response:
    """Public: checks the TOTP code of a browser whose password was just accepted (route audit)."""
    values = await web.form(request)
    target = safe_next(web.field(values, "next"))
    user = await sessions.current(request, "totp")
    if user is None:
        return web.redirect(request, "/console/masuk?habis=1")
    wait = await _over_limit(request, user.email)
    if wait:
        await _audit(request, user, "signin.throttled", user.email, factor="totp")
        await sessions.end(request)
        minutes = max(1, math.ceil(wait / 60))
        return _signin_page(request, 429, email=user.email, next=target, error=("signin.too_many", minutes))
    attempt = await accounts.check_totp(sessions.hub_of(request), user.id, web.field(values, "code"))
    if attempt.outcome == "locked":
        await _audit(request, user, "signin.locked", user.email, factor="totp")
        await sessions.end(request)
        return _signin_page(request, 401, email=user.email, next=target, error=("signin.refused", 0))
    if attempt.outcome != "ok":
        await _audit(request, user, "signin.failed", user.email, factor="totp")
        return web.page(
            request,
            "signin_code.html.j2",
            None,
            401,
            email=user.email,
            error="signin.code_wrong",
            next=target,
        )
    await sessions.start(request, user.id, "ok")
    await _audit(request, user, "signin", user.email, factor="totp")
    return web.redirect(request, target)


@router.post("/keluar")
async def signout(request: Request, staff: Staff = Depends(need_session())) -> Response:
    await web.form(request)
    hub = sessions.hub_of(request)
    async with hub.db.transaction() as session:
        await audit.record(session, staff, "signout")
    await sessions.end(request)
    return web.redirect(request, "/console/masuk?keluar=1")
