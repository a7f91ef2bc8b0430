"""Console accounts from the command line: the first admin, listing, password resets.

A new or reset account gets a one-time password, printed once and never stored in clear: the user
changes it at first sign-in (and an admin then enrols TOTP). Every change is in the audit log, with
``cli`` as who did it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table
from sqlalchemy import select

from hub.cli.common import app, fail, out, with_hub
from hub.context import Hub
from hub.store.models import StaffUser

if TYPE_CHECKING:  # hub.console imports FastAPI: only the commands that need it load it
    from hub.console.auth import Role

users_app = typer.Typer(help="Staff accounts of the web console (/console).", no_args_is_help=True)
app.add_typer(users_app, name="users")

#: Who the audit log names for changes made here.
CLI_ACTOR = "cli"


def console_url(hub: Hub) -> str:
    return hub.settings.hub.public_url.rstrip("/") + "/console/"


async def create_account(hub: Hub, office: str, role: Role, email: str, name: str) -> tuple[StaffUser, str]:
    from hub.console import accounts, audit

    async with hub.db.transaction() as session:
        user, password = await accounts.create_user(session, office, role, email, name)
        await audit.record(
            session,
            None,
            "user.create",
            f"staff:{user.id}",
            {"email": user.email, "role": role.key},
            email=CLI_ACTOR,
            office_id=office,
        )
    return user, password


@users_app.command("create")
def create(
    office: Annotated[str, typer.Option(help="Office id, e.g. kota-serang (see `hub regions list`).")],
    email: Annotated[str, typer.Option(help="The user's email: their sign-in name.")],
    role: Annotated[str, typer.Option(help="viewer, editor, approver or admin.")] = "editor",
    name: Annotated[str | None, typer.Option(help="Full name (default: the email's local part).")] = None,
) -> None:
    """Create a console user and print a one-time password (changed at first sign-in)."""
    from hub.console.auth import Role

    try:
        parsed = Role.parse(role)
    except ValueError as exc:
        fail(str(exc))
    user, password = with_hub(
        lambda hub: _created(hub, office, parsed, email, name or email.split("@")[0]), redis=False
    )
    out.print(f"user {user.email} ({parsed.key}, office {user.office_id}) created", highlight=False)
    out.print(f"one-time password: {password}", highlight=False)


async def _created(hub: Hub, office: str, role: Role, email: str, name: str) -> tuple[StaffUser, str]:
    user, password = await create_account(hub, office, role, email, name)
    out.print(f"sign in at {console_url(hub)}", highlight=False)
    return user, password


@users_app.command("list")
def list_users(
    office: Annotated[str | None, typer.Option(help="Only this office's users.")] = None,
) -> None:
    """List console users: email, name, office, role, TOTP, state."""

    async def rows(hub: Hub) -> list[StaffUser]:
        query = select(StaffUser).order_by(StaffUser.office_id, StaffUser.email)
        if office:
            query = query.where(StaffUser.office_id == office)
        async with hub.db.session() as session:
            return list((await session.execute(query)).scalars())

    users = with_hub(rows, redis=False)
    table = Table("email", "name", "office", "role", "totp", "state")
    for user in users:
        state = "active" if user.active else "deactivated"
        if user.active and user.must_change_password:
            state = "one-time password"
        totp = "yes" if user.totp_sealed else "no"
        table.add_row(user.email, user.name, user.office_id, user.role, totp, state)
    out.print(table)


@users_app.command("reset-password")
def reset_password(
    email: Annotated[str, typer.Argument(help="The user's email.")],
    reset_totp: Annotated[bool, typer.Option(help="Also remove TOTP (the user enrols again).")] = False,
) -> None:
    """Give a user a new one-time password: unlocks the account and ends its sessions."""

    from hub.console import accounts, audit

    async def reset(hub: Hub) -> str | None:
        async with hub.db.transaction() as session:
            user = await session.scalar(select(StaffUser).where(StaffUser.email == email.strip().lower()))
            if user is None:
                return None
            password = await accounts.reset_password(hub, session, user, reset_totp=reset_totp)
            await audit.record(
                session,
                None,
                "user.reset_password",
                f"staff:{user.id}",
                {"totp": reset_totp},
                email=CLI_ACTOR,
                office_id=user.office_id,
            )
            return password

    password = with_hub(reset, redis=False)
    if password is None:
        fail(f"no console user {email!r} (see `hub users list`)")
    out.print(f"one-time password: {password}", highlight=False)
