"""Who is signed in to the console and what they may do: roles over a subtree of the region tree.

A user belongs to one office and acts on the offices at or below its region (``hub.regions.offices_under``,
the same scope API keys have). ``need(role)`` is the only way a console page gets its user: the route
audit (tests/integration/test_route_audit.py) fails on a console route without it.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import quote

from fastapi import Request
from sqlalchemy.ext.asyncio import AsyncSession

from hub.console import sessions
from hub.regions import offices_under
from hub.store.models import Office, StaffUser


class Role(enum.IntEnum):
    """Each role may do everything the ones below it may."""

    VIEWER = 1
    EDITOR = 2
    APPROVER = 3
    ADMIN = 4

    @property
    def key(self) -> str:
        """The name stored in ``staff_users.role`` and typed on the command line."""
        return self.name.lower()

    @classmethod
    def parse(cls, text: str) -> Role:
        try:
            return cls[text.strip().upper()]
        except KeyError:
            raise ValueError(f"role must be one of {', '.join(r.key for r in cls)}, not {text!r}") from None


@dataclass(frozen=True)
class Staff:
    """The signed-in user as pages see it."""

    id: int
    email: str
    name: str
    role: Role
    office_id: str
    #: The office and its subtree: the only offices this user may see or act on.
    offices: frozenset[str]


class ConsoleExit(Exception):
    """Stop a request with this response (a redirect to sign-in, a 403 or 404 page)."""

    def __init__(self, response: object) -> None:
        super().__init__("console exit")
        self.response = response


async def scope_of(session: AsyncSession, office_id: str) -> frozenset[str]:
    office = await session.get(Office, office_id)
    if office is None:
        return frozenset()
    return frozenset(await offices_under(session, office.region_code))


async def staff_of(request: Request, user: StaffUser) -> Staff:
    async with sessions.hub_of(request).db.session() as session:
        offices = await scope_of(session, user.office_id)
    return Staff(user.id, user.email, user.name, Role.parse(user.role), user.office_id, offices)


def sign_in_url(request: Request) -> str:
    """``/console/masuk?next=<this page>``: back here after signing in."""
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return f"/console/masuk?next={quote(target, safe='')}"


def safe_next(target: str | None) -> str:
    """Only a console path: never another site (``//evil.example``) after signing in."""
    if target and target.startswith("/console") and not target.startswith("//") and "\\" not in target:
        return target
    return "/console/"


async def _signed_in(request: Request, *, setting_up: bool) -> Staff:
    from hub.console import web

    cached = getattr(request.state, "console_staff", None)
    if cached is not None:
        return cached
    user = await sessions.current(request)
    if user is None:
        raise ConsoleExit(web.redirect(request, sign_in_url(request)))
    staff = await staff_of(request, user)
    await web.load_zones(request)
    # A one-time password is changed, and an admin has a second factor, before anything else.
    unfinished = user.must_change_password or (staff.role >= Role.ADMIN and not user.totp_sealed)
    request.state.console_setup = unfinished  # the layout shows no menu meanwhile
    if unfinished and not setting_up:
        where = "sandi" if user.must_change_password else "totp"
        raise ConsoleExit(web.redirect(request, f"/console/akun/{where}"))
    if not unfinished:  # a cached user has passed every check
        request.state.console_staff = staff
    return staff


def need(role: Role) -> Callable[[Request], Awaitable[Staff]]:
    """A dependency: the signed-in user if their role is at least ``role``; else sign-in or a 403 page."""

    async def dependency(request: Request) -> Staff:
        from hub.console import web

        staff = await _signed_in(request, setting_up=False)
        if staff.role < role:
            raise ConsoleExit(web.forbidden(request, staff))
        return staff

    dependency.console_role = role  # type: ignore[attr-defined]  # read by the route audit
    return dependency


def need_session() -> Callable[[Request], Awaitable[Staff]]:
    """Any signed-in user, even one who must still change a one-time password or enrol TOTP."""

    async def dependency(request: Request) -> Staff:
        return await _signed_in(request, setting_up=True)

    dependency.console_role = Role.VIEWER  # type: ignore[attr-defined]
    return dependency
