"""`hub status show|set|history`: an office's status as citizens see it, and its base as staff set it."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import click
import typer
from rich.table import Table
from typer.core import TyperGroup

from hub.cli.announcing import status as message_status
from hub.cli.common import app, fail, out, with_hub
from hub.clock import local_iso, parse_when, to_local, to_utc, utcnow
from hub.context import Hub
from hub.render import schedule


class _StatusGroup(TyperGroup):
    """``hub status MESSAGE_ID`` (a message's delivery counts, older than office status) still works: an
    argument that names no subcommand goes to ``hub status message``."""

    def resolve_command(self, ctx: click.Context, args: list[str]) -> Any:
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["message", *args]
        return super().resolve_command(ctx, args)


status_app = typer.Typer(
    cls=_StatusGroup,
    help="Office status (show, set, history OFFICE); a message's delivery counts (hub status MESSAGE_ID).",
    no_args_is_help=True,
)
app.add_typer(status_app, name="status")
status_app.command("message", help="Delivery counts of a message, per channel and state (hub status ID).")(
    message_status
)

OfficeArg = Annotated[str, typer.Argument(help="Office id (hub regions: kota-pekalongan, ...).")]


@status_app.command("show")
def show(
    office: OfficeArg,
    at: Annotated[
        str | None, typer.Option(help="The moment (YYYY-MM-DD HH:MM in the office's zone, or with +08:00).")
    ] = None,
    locale: Annotated[str, typer.Option(help="id or en.")] = "id",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (times in the office's zone).")] = False,
    base: Annotated[
        bool, typer.Option("--base", help="Print the base status as stored: what `hub status set` takes.")
    ] = False,
) -> None:
    """The status in force (now, or --at a moment): the base with the announcements in force laid over it."""
    try:
        when = parse_when(at) if at else None
    except ValueError as exc:
        fail(str(exc))

    async def work(hub: Hub) -> tuple[Any, dict[str, Any], str]:
        from hub.status.model import dump
        from hub.status.store import base_of, office_or_404, status_at

        async with hub.db.session() as session:
            row = await office_or_404(session, office)
            moment = to_utc(when, row.timezone) if when else utcnow()
            stored, _ = await base_of(session, row)
            return await status_at(session, row, moment), dump(stored), row.name

    eff, stored, name = with_hub(work, redis=False)
    if base:
        out.print_json(data=stored)
    elif as_json:
        out.print_json(data=eff.as_dict(locale))
    else:
        _print(eff, name, locale)


def _print(eff: Any, name: str, locale: str) -> None:
    from hub.status.effective import pick, spans_text

    moment = to_local(eff.at, eff.timezone).strftime("%Y-%m-%d %H:%M")
    out.print(f"{name} ({eff.office_id}), {moment} {eff.zone}", highlight=False)
    out.print(eff.today_line(locale), highlight=False)
    out.print(
        f"mode: {eff.mode}" + (f", quota {eff.quota}" if eff.quota is not None else ""), highlight=False
    )
    if eff.urgent:
        out.print("urgent cases: " + "; ".join(pick(u, locale) for u in eff.urgent), highlight=False)
    week = {d: ", ".join(s) for d, s in eff.weekly.items() if s}
    for days, hours in schedule(week, locale, eff.timezone) if week else []:
        out.print(f"  {days}: {hours}", highlight=False)
    for exc in eff.exceptions:
        what = "closed" if exc.get("closed") else spans_text(exc.get("hours", []), locale, eff.timezone)
        out.print(
            f"  {exc['date']}{'..' + exc['until'] if exc.get('until') else ''}: {what}", highlight=False
        )
    table = Table("service", "mode", "today", "contacts")
    for svc in eff.services:
        today = ", ".join(svc.today.spans) if svc.today and svc.today.open else "-"
        contacts = "; ".join(f"{c.kind} {c.label + ' ' if c.label else ''}{c.value}" for c in svc.contacts)
        table.add_row(pick(svc.name, locale), svc.mode, today, contacts)
    out.print(table)
    for c in eff.contacts:
        out.print(f"contact: {c.kind} {c.label} {c.value}".replace("  ", " "), highlight=False)
    if eff.in_force:
        out.print(f"announcements in force: {', '.join(map(str, eff.in_force))}", highlight=False)
    out.print(
        f"since {local_iso(eff.since, eff.timezone)}; changes at {local_iso(eff.changes_at, eff.timezone)}; "
        f"version {eff.version}",
        highlight=False,
    )


@status_app.command("set")
def set_(
    office: OfficeArg,
    file: Annotated[
        Path, typer.Option("--file", "-f", help="JSON file with the whole base status; - reads stdin.")
    ] = Path("-"),
) -> None:
    """Replace an office's base status (validated; the change is kept in its history)."""
    try:
        text = sys.stdin.read() if str(file) == "-" else file.read_text(encoding="utf-8")
    except FileNotFoundError:
        fail(f"{file}: no such file")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        fail(f"{file}: not valid JSON: {exc.msg} at line {exc.lineno}")

    async def work(hub: Hub) -> tuple[bool, list[str]]:
        from hub.status.model import dump
        from hub.status.store import base_of, changed_fields, office_or_404, set_status

        async with hub.db.transaction() as session:
            row = await office_or_404(session, office)
            before = dump((await base_of(session, row))[0])
            stored, changed = await set_status(session, row, data, "cli")
            return changed, changed_fields(before, stored)

    changed, fields = with_hub(work, redis=False)
    if changed:
        out.print(f"status of {office} saved (changed: {', '.join(fields) or 'everything'})", highlight=False)
    else:
        out.print(f"status of {office} unchanged", highlight=False)


@status_app.command("history")
def history_(
    office: OfficeArg,
    limit: Annotated[int, typer.Option(help="How many changes, newest first.")] = 20,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print JSON, with each status before and after.")
    ] = False,
) -> None:
    """Who changed the office's base status, when, and what."""

    async def work(hub: Hub) -> tuple[str, list[Any]]:
        from hub.status.store import history, office_or_404

        async with hub.db.session() as session:
            row = await office_or_404(session, office)
            return row.timezone, await history(session, office, limit)

    tz, rows = with_hub(work, redis=False)
    from hub.status.store import changed_fields

    if as_json:
        out.print_json(
            data=[
                {"id": r.id, "at": local_iso(r.at, tz), "by": r.by, "before": r.before, "after": r.after}
                for r in rows
            ]
        )
        return
    table = Table("#", "when", "by", "changed")
    for r in rows:
        when = to_local(r.at, tz).strftime("%Y-%m-%d %H:%M")
        table.add_row(str(r.id), when, r.by, ", ".join(changed_fields(r.before, r.after)))
    out.print(table)
