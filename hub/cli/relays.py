"""`hub relays code|list|pause|resume|remove|acks`: kelurahan relays and what they confirmed (issue 11)."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.table import Table

from hub.cli.common import out, relays_app, with_hub


@relays_app.command("code")
def relays_code(
    office: Annotated[str, typer.Option(help="Office the group relays for.")],
    count: Annotated[int, typer.Option(min=1, max=500, help="How many codes (one per group).")] = 1,
) -> None:
    """One-time codes, one a line; a kelurahan admin sends one in the group (``/kelurahan CODE``)."""
    from hub.bot import relay_code

    async def work(hub: Any) -> list[str]:
        return [await relay_code(hub, office) for _ in range(count)]

    for code in with_hub(work, redis=False):
        out.print(code, highlight=False)


@relays_app.command("add")
def relays_add(
    office: Annotated[str, typer.Option(help="Office the relay passes news on for.")],
    channel: Annotated[str, typer.Option(help="sms or email (groups register with a code instead).")],
    address: Annotated[str, typer.Option(help="The phone number or email address.")],
) -> None:
    """Register a number or an email address as a relay (groups use ``hub relays code`` instead)."""
    from hub.relays import manage

    relay = with_hub(lambda hub: manage.register(hub, office, channel, address), redis=False)
    out.print(
        f"relay {relay.id} ({relay.channel} {relay.address}, {relay.office}): {relay.state}", highlight=False
    )


@relays_app.command("list")
def relays_list(
    office: Annotated[list[str], typer.Option(help="Only this office's relays (repeatable).")] = [],  # noqa: B006
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Registered relays: id, office, channel, masked address, active/paused/inactive."""
    from sqlalchemy import select

    from hub.relays import manage
    from hub.store.models import Office

    async def work(hub: Any) -> list[Any]:
        offices = office
        if not offices:
            async with hub.db.session() as session:
                offices = list((await session.execute(select(Office.id))).scalars())
        return await manage.list_relays(hub, offices)

    relays = with_hub(work, redis=False)
    if as_json:
        out.print_json(json.dumps([r.as_dict() for r in relays]))
        return
    table = Table("id", "office", "channel", "address", "state")
    for r in relays:
        table.add_row(str(r.id), r.office, r.channel, r.address, r.state)
    out.print(table)


def _change(relay_id: int, action: str) -> None:
    from hub.relays import manage

    relay = with_hub(lambda hub: manage.change(hub, relay_id, action), redis=False)
    out.print(
        f"relay {relay.id} ({relay.channel} {relay.address}, {relay.office}): {relay.state}", highlight=False
    )


@relays_app.command("pause")
def relays_pause(relay_id: Annotated[int, typer.Argument(help="Relay id (hub relays list).")]) -> None:
    """Send the relay nothing until resumed; it stays registered."""
    _change(relay_id, "pause")


@relays_app.command("resume")
def relays_resume(relay_id: Annotated[int, typer.Argument(help="Relay id (hub relays list).")]) -> None:
    """Undo a pause."""
    _change(relay_id, "resume")


@relays_app.command("remove")
def relays_remove(relay_id: Annotated[int, typer.Argument(help="Relay id (hub relays list).")]) -> None:
    """End the relay's subscriptions and relay mark; what it confirmed stays on record."""
    _change(relay_id, "remove")


@relays_app.command("acks")
def relays_acks(
    announcement_id: Annotated[int, typer.Argument(help="Announcement id.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (times in the office's zone).")] = False,
) -> None:
    """Which relays confirmed passing the announcement on (when, how), which did not, reminders, report."""
    from hub.relays import manage

    shown = with_hub(lambda hub: manage.acks_of(hub, announcement_id), redis=False)
    if as_json:
        out.print_json(json.dumps(shown))
        return
    out.print(
        f"announcement {announcement_id}: {shown['confirmed']} of {shown['total']} relays confirmed",
        highlight=False,
    )
    table = Table("relay", "channel", "address", "confirmed at", "means", "via", "reminded", "office told")
    for r in shown["relays"]:
        table.add_row(
            str(r["relay_id"]),
            r["channel"],
            r["address"],
            r["confirmed_at"] or "-",
            r["means"] or "-",
            r["confirmed_via"] or "-",
            r["reminded_at"] or "-",
            r["office_told_at"] or "-",
        )
    out.print(table)
