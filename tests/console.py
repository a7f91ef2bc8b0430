"""Helpers for console tests: make a staff user directly, sign in through the pages like a browser.

``sign_in`` returns the client signed in (its cookie jar holds the session). A TOTP code is good once per
30-second step: a second sign-in within one step uses the next step's code, which the hub also accepts.
"""

from __future__ import annotations

import re
import time

import httpx
import pyotp

from hub.console import accounts
from hub.console.auth import Role
from hub.context import Hub
from hub.store.models import StaffUser

CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_of(html: str) -> str:
    """The CSRF token of the first form on a page."""
    found = CSRF.search(html)
    assert found, "no CSRF field on this page"
    return found.group(1)


async def make_staff(
    hub: Hub,
    email: str,
    role: Role | str,
    office_id: str,
    password: str,
    *,
    totp: bool | None = None,
    must_change_password: bool = False,
) -> tuple[int, str | None]:
    """A user with ``password`` (already changed) and, for admins or when ``totp``, a TOTP secret."""
    role = role if isinstance(role, Role) else Role.parse(role)
    with_totp = role >= Role.ADMIN if totp is None else totp
    async with hub.db.transaction() as session:
        user, _ = await accounts.create_user(session, office_id, role, email, email.split("@")[0])
        user.password_hash = accounts.hash_password(password)
        user.must_change_password = must_change_password
        secret = pyotp.random_base32() if with_totp else None
        if secret:
            user.totp_sealed = accounts.seal_totp(hub.secret, user.id, secret)
        return user.id, secret


async def user_row(hub: Hub, email: str) -> StaffUser:
    async with hub.db.session() as session:
        from sqlalchemy import select

        user = await session.scalar(select(StaffUser).where(StaffUser.email == email))
    assert user is not None
    return user


async def post_form(client: httpx.AsyncClient, url: str, data: dict[str, str], *, page: str | None = None):
    """POST ``data`` with the CSRF token read from ``page`` (default: a GET of ``url``)."""
    if page is None:
        page = (await client.get(url)).text
    return await client.post(url, data={"csrf": csrf_of(page), **data})


async def sign_in(
    client: httpx.AsyncClient, email: str, password: str, totp_secret: str | None = None
) -> httpx.Response:
    """Sign in through /console/masuk (and /console/masuk/kode); the last response (not followed)."""
    form = await client.get("/console/masuk")
    response = await client.post(
        "/console/masuk", data={"csrf": csrf_of(form.text), "email": email, "password": password}
    )
    if response.status_code != 303 or not response.headers["location"].startswith("/console/masuk/kode"):
        return response
    assert totp_secret, f"{email} has TOTP: pass totp_secret"
    page = await client.get(response.headers["location"])
    totp = pyotp.TOTP(totp_secret)
    for offset in (0, totp.interval):
        response = await client.post(
            "/console/masuk/kode",
            data={"csrf": csrf_of(page.text), "code": totp.at(time.time() + offset)},
        )
        if response.status_code == 303:
            break
    return response
