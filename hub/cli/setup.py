"""Setting a hub up: the database, regions and offices, topics and API keys (relays: ``hub.cli.relays``)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from hub.cli.common import (
    app,
    fail,
    keys_app,
    migrate_database,
    out,
    regions_app,
    settings_from_options,
    with_hub,
)
from hub.context import Hub
from hub.errors import HubError
from hub.settings import Settings


@app.command()
def init(
    sample: Annotated[bool, typer.Option(help="Also load the sample offices (data/offices.toml).")] = False,
) -> None:
    """Create or migrate the database, and the deployment key file if there is no key (safe to run again)."""
    settings = settings_from_options()
    asyncio.run(migrate_database(settings))
    out.print(f"database ready: {_safe(settings.database.url)}")
    out.print(asyncio.run(_deployment_key(settings)), highlight=False)
    if sample:
        regions_load(Path(__file__).resolve().parents[2] / "data" / "offices.toml")
        with_hub(_sample_status, redis=False)
        with_hub(_sample_admin, redis=False)


#: The demo admin ``hub init --sample`` makes for the sample office.
SAMPLE_ADMIN = ("admin@kota-serang.example.go.id", "kota-serang")


async def _sample_status(hub: Hub) -> None:
    """Each sample office's base status, from what data/offices.toml records (kept if already set)."""
    from hub.status.store import seed_missing

    async with hub.db.transaction() as session:
        seeded = await seed_missing(session)
    if seeded:
        out.print(f"office status set for: {', '.join(seeded)} (hub status show OFFICE)", highlight=False)


async def _sample_admin(hub: Hub) -> None:
    """A demo admin for the sample office, and how to sign in (once: a second run leaves it be)."""
    from sqlalchemy import func, select

    from hub.cli.users import console_url, create_account
    from hub.console.auth import Role
    from hub.store.models import StaffUser

    email, office = SAMPLE_ADMIN
    async with hub.db.session() as session:
        exists = await session.scalar(select(func.count()).where(StaffUser.email == email))
    out.print(f"console: {console_url(hub)}", highlight=False)
    if exists:
        out.print(f"demo admin: {email} (new password: hub users reset-password {email})", highlight=False)
        return
    _, password = await create_account(hub, office, Role.ADMIN, email, "Admin Demo Kota Serang")
    out.print(f"demo admin: {email}, one-time password: {password}", highlight=False)
    out.print("sign in, choose a new password, then turn on two-step verification (TOTP)", highlight=False)


async def _deployment_key(settings: Settings) -> str:
    """Make sure the deployment key exists outside the database; say where it is (never what it is)."""
    from hub.store.db import Database

    db = Database(settings.database.url, schema=settings.database.schema_name or None)
    try:
        keyring = await db.keyring(settings.hub, create=True)
    finally:
        await db.dispose()
    if settings.hub.secret_key:
        return "deployment key: hub.secret_key (settings or environment)"
    return f"deployment key: {keyring.file} (readable by its owner only; copy it to every host of this hub)"


def _safe(url: str) -> str:
    head, sep, tail = url.rpartition("@")
    return f"{head.split('://')[0]}://***@{tail}" if sep else url


@regions_app.command("load")
def regions_load(
    file: Annotated[Path, typer.Argument(help="TOML with [[region]] and [[office]] tables.")],
) -> None:
    """Load regions, offices and their topics (format of shared/scenarios/offices.toml)."""
    from hub.regions import load, read_file

    try:
        data = read_file(file)
    except HubError as exc:
        fail(str(exc), exc.exit_code)
    report = with_hub(lambda hub: load(hub, data), redis=False)
    out.print(f"loaded {report.regions} regions, {report.offices} offices, {report.topics} new topics")


@app.command()
def topics() -> None:
    """List topics (the names to subscribe and publish to)."""
    from sqlalchemy import select

    from hub.store.models import Topic

    async def work(hub: Hub) -> list[Any]:
        async with hub.db.session() as session:
            return list((await session.execute(select(Topic).order_by(Topic.slug))).scalars())

    table = Table("topic", "office", "name")
    for t in with_hub(work, redis=False):
        table.add_row(t.slug, t.office_id, t.name)
    out.print(table)


@keys_app.command("create")
def keys_create(
    office: Annotated[str, typer.Option(help="Office id the key acts for.")],
    role: Annotated[str, typer.Option(help="intake (applicant updates) or staff (announcements).")],
    name: Annotated[str, typer.Option(help="Who uses the key, for the record.")] = "",
) -> None:
    """Create an API key. It is shown once; only a hash is stored."""
    from hub.keys import create_key

    key = with_hub(lambda hub: create_key(hub, office, role, name or role), redis=False)
    out.print(key, highlight=False)
