"""Console sessions: a signed cookie carrying a random token, and a server-side row named by its hash.

The cookie (``HttpOnly``, ``SameSite=Lax``, ``Secure`` over https, path ``/console``) holds
``hub.signing.sign(key, "console", token)``, the key derived from the deployment secret. A visitor who has
not signed in gets a token too (no row): it carries the CSRF token of the sign-in form. Signing in makes a
new token and a new row (no session fixation); signing out, a password change or reset and deactivation
delete rows, so a stolen cookie dies with them. The database keeps only SHA-256 of a token.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import timedelta

from fastapi import Request, Response
from sqlalchemy import delete, select

from hub import signing
from hub.clock import utcnow
from hub.context import Hub
from hub.store.models import StaffSession, StaffUser

COOKIE = "hub_console"
#: A session ends this long after sign-in, whatever happens.
ABSOLUTE = timedelta(hours=12)
#: ... or after this long without a request.
IDLE = timedelta(hours=2)
#: Between the password and the TOTP code.
PENDING = timedelta(minutes=10)
#: ``seen_at`` is written at most this often (one write per minute, not per request).
TOUCH_EVERY = timedelta(minutes=1)


def hub_of(request: Request) -> Hub:
    return request.app.state.hub


def _key(deployment_key: bytes) -> bytes:
    return hmac.new(deployment_key, b"hub-console-session-v1", hashlib.sha256).digest()


def row_id(token: str) -> str:
    return hashlib.sha256(f"console-session:{token}".encode()).hexdigest()


def _from_cookie(hub: Hub, request: Request) -> str | None:
    raw = request.cookies.get(COOKIE)
    if not raw:
        return None
    for deployment_key in hub.verification_keys:
        try:
            values = signing.read(_key(deployment_key), "console", raw, max_age=ABSOLUTE).values
        except signing.BadToken:
            continue
        if len(values) == 1:
            return values[0]
    return None


def token(request: Request) -> str:
    """This browser's token: the cookie's if genuine, else a new anonymous one (set on the response)."""
    current = getattr(request.state, "console_token", None)
    if current is None:
        current = _from_cookie(hub_of(request), request)
        if current is None:
            current = secrets.token_urlsafe(32)
            request.state.console_new_cookie = True
        request.state.console_token = current
    return current


def csrf_token(request: Request) -> str:
    """The CSRF token of this browser's session: changes when the session does (sign-in, sign-out)."""
    key = _key(hub_of(request).secret)
    return hmac.new(key, f"csrf:{token(request)}".encode(), hashlib.sha256).hexdigest()[:40]


def apply_cookie(request: Request, response: Response) -> None:
    """Set the cookie on ``response`` when this request made a new token."""
    if not getattr(request.state, "console_new_cookie", False):
        return
    value = signing.sign(_key(hub_of(request).secret), "console", token(request))
    response.set_cookie(
        COOKIE,
        value,
        max_age=int(ABSOLUTE.total_seconds()),
        path="/console",
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
    )


def _replace_token(request: Request) -> str:
    fresh = secrets.token_urlsafe(32)
    request.state.console_token = fresh
    request.state.console_new_cookie = True
    return fresh


async def start(request: Request, staff_id: int, stage: str) -> None:
    """A new session (new token, new row) for ``staff_id``; the browser's previous one ends."""
    hub = hub_of(request)
    old = row_id(token(request))
    fresh = _replace_token(request)
    async with hub.db.transaction() as session:
        await session.execute(delete(StaffSession).where(StaffSession.id == old))
        session.add(StaffSession(id=row_id(fresh), staff_id=staff_id, stage=stage))


async def end(request: Request) -> None:
    """Sign out: the row goes, the browser gets a new anonymous token."""
    hub = hub_of(request)
    old = row_id(token(request))
    async with hub.db.transaction() as session:
        await session.execute(delete(StaffSession).where(StaffSession.id == old))
    _replace_token(request)


async def end_all(hub: Hub, staff_id: int) -> None:
    """Every session of a user ends (password reset, deactivation)."""
    async with hub.db.transaction() as session:
        await session.execute(delete(StaffSession).where(StaffSession.staff_id == staff_id))


async def current(request: Request, stage: str = "ok") -> StaffUser | None:
    """The active user of this browser's session at ``stage``, or None (no, expired or ended session)."""
    hub = hub_of(request)
    if _from_cookie(hub, request) is None:
        return None
    now = utcnow()
    async with hub.db.transaction() as session:
        row = await session.get(StaffSession, row_id(token(request)))
        if row is None or row.stage != stage:
            return None
        limit = PENDING if stage != "ok" else ABSOLUTE
        if now - row.created_at > limit or now - row.seen_at > IDLE:
            await session.delete(row)
            return None
        user = await session.scalar(select(StaffUser).where(StaffUser.id == row.staff_id))
        if user is None or not user.active:
            return None
        if now - row.seen_at > TOUCH_EVERY:
            row.seen_at = now
        session.expunge(user)
        return user
