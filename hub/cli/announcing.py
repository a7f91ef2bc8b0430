"""Writing, previewing, publishing, cancelling and following announcements."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from hub import announcements
from hub.cli.common import app, err, fail, out, progress_bar, with_hub
from hub.clock import parse_when
from hub.context import Hub
from hub.errors import InvalidInput


@app.command()
def announce(
    topic: Annotated[list[str], typer.Option("--topic", help="Topic (repeatable).")] = [],  # noqa: B006
    region: Annotated[
        list[str], typer.Option("--region", help="Region code: every office below (repeatable).")
    ] = [],  # noqa: B006
    template: Annotated[
        str,
        typer.Option(help="closure, restriction, suspension, hours_changed, online_only, link or free_text."),
    ] = "free_text",
    data: Annotated[Path | None, typer.Option(help="JSON file with the template's values.")] = None,
    service: Annotated[list[str], typer.Option("--service", help="Affected service (repeatable).")] = [],  # noqa: B006
    at: Annotated[
        str | None,
        typer.Option(help="Publish at (YYYY-MM-DD HH:MM in the office's zone, or with +08:00), default now."),
    ] = None,
    since: Annotated[str | None, typer.Option("--from", help="Valid from (date or time).")] = None,
    until: Annotated[str | None, typer.Option(help="Valid until: nothing goes out after it.")] = None,
    dry_run: Annotated[
        bool, typer.Option(help="Show each channel's rendering and the audience; send nothing.")
    ] = False,
    force: Annotated[
        bool, typer.Option(help="Publish even when no confirmed subscriber would receive it.")
    ] = False,
    draft: Annotated[bool, typer.Option(help="Store it as a draft; `hub publish ID` sends it.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (times in the office's zone).")] = False,
) -> None:
    """Write an announcement and publish it (or preview it with --dry-run, or keep it as a --draft)."""
    values: dict[str, Any] = {}
    if data is not None:
        try:
            values = json.loads(data.read_text(encoding="utf-8"))
        except FileNotFoundError:
            fail(f"{data}: no such file")
        except json.JSONDecodeError as exc:
            fail(f"{data}: not valid JSON: {exc.msg} at line {exc.lineno}")
        if not isinstance(values, dict):
            fail(f"{data}: expected a JSON object")
    try:
        req = announcements.AnnouncementInput(
            template=template,
            data=values,
            topics=topic,
            regions=region,
            services=service,
            valid_from=parse_when(since) if since else None,
            valid_until=parse_when(until) if until else None,
            publish_at=parse_when(at) if at else None,
        )
    except ValueError as exc:
        fail(str(exc))
    if dry_run:
        result = with_hub(lambda hub: announcements.preview(hub, req), redis=False)
        if as_json:
            out.print_json(data=result)
        else:
            _print_preview(result)
        return
    if draft:
        shown = with_hub(lambda hub: _create_draft(hub, req))
    else:
        shown = with_hub(lambda hub: _published(hub, _publish(hub, req, force=force)))
    _print_announcement(shown, as_json)


async def _create_draft(hub: Hub, req: announcements.AnnouncementInput) -> dict[str, Any]:
    ann, _ = await announcements.create(hub, req, publish=False)
    return await announcements.read_back(hub, ann)


async def _published(hub: Hub, publishing: Awaitable[tuple[Any, Any]]) -> dict[str, Any]:
    ann, message = await publishing
    return {**await announcements.read_back(hub, ann), "message_id": message.id}


def _print_announcement(shown: dict[str, Any], as_json: bool) -> None:
    """One line (or JSON) with the announcement's state and its times in the office's zone."""
    if as_json:
        out.print_json(data=shown)
        return
    line = f"announcement {shown['id']}: {shown['state']}"
    if shown.get("message_id"):
        line += f", message {shown['message_id']}"
    if shown["state"] == "scheduled":
        line += f", goes out {shown['publish_at']}"
    out.print(line, highlight=False)


async def _publish(hub: Hub, req: announcements.AnnouncementInput, *, force: bool) -> tuple[Any, Any]:
    """Publish, unless nobody confirmed would receive it: then say so first and publish only if forced."""
    audience = await announcements.preview(hub, req)
    if not audience["recipients"]:
        where = ", ".join([*req.topics, *req.regions]) or "the given topics"
        if not force:
            raise InvalidInput(
                f"no confirmed subscriber on {where} would receive this: nothing published. "
                "Subscribers confirm by the link in their confirmation email (or `hub subscribe "
                "--confirmed`); pass --force to publish anyway"
            )
        err.print(f"warning: no confirmed subscriber on {where}; publishing anyway (--force)")
    return await announcements.create(hub, req, publish=True)


def _print_preview(result: dict[str, Any]) -> None:
    """Every channel's rendering as it will be sent: the subject, the plain text and the HTML."""
    out.print(f"[bold]recipients:[/bold] {result['recipients']} across {result['topics']} topics")
    if not result["recipients"]:
        out.print("no confirmed subscriber would receive this yet", highlight=False)
    for name in ("publish_at", "valid_from", "valid_until"):
        if result.get(name):
            out.print(f"{name}: {result[name]}", highlight=False)
    for locale, fields in result.get("untranslated", {}).items():
        out.print(
            f"not rendered in {locale!r} (no {locale!r} text for: {', '.join(fields)}): "
            "those readers get the Indonesian message",
            highlight=False,
            markup=False,
        )
    for channel, entry in result["channels"].items():
        for locale, r in entry["renderings"].items():
            facts = {k: v for k, v in r.items() if k not in ("subject", "text", "html", "recipients")}
            extra = "".join(f", {k}: {v}" for k, v in facts.items())
            readers = r.get("recipients", entry["recipients"])
            out.rule(f"{channel} / {locale}: {readers} recipients{extra}")
            if r["subject"]:
                out.print(f"Subject: {r['subject']}", highlight=False, markup=False)
            if r.get("html"):
                out.print("[bold]text:[/bold]", highlight=False)
            out.print(r["text"], highlight=False, markup=False)
            if r.get("html"):
                out.print("[bold]html:[/bold]", highlight=False)
                out.print(r["html"], highlight=False, markup=False)


@app.command()
def publish(
    announcement_id: int,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Publish a draft announcement: now, or at its publish time."""

    async def run(hub: Hub) -> dict[str, Any]:
        message = await announcements.publish_announcement(hub, announcement_id)
        ann = await announcements.get(hub, announcement_id)
        return {**await announcements.read_back(hub, ann), "message_id": message.id}

    _print_announcement(with_hub(run), as_json)


@app.command()
def show(
    announcement_id: int,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """An announcement as stored: template, data, state and times in the office's zone."""

    async def run(hub: Hub) -> dict[str, Any]:
        return await announcements.read_back(hub, await announcements.get(hub, announcement_id))

    shown = with_hub(run, redis=False)
    if as_json:
        out.print_json(data=shown)
        return
    _print_announcement(shown, False)
    for name in ("publish_at", "valid_from", "valid_until"):
        if shown[name]:
            out.print(f"  {name}: {shown[name]}", highlight=False)


@app.command()
def cancel(announcement_id: int) -> None:
    """Cancel an announcement: deliveries still pending are skipped."""
    skipped = with_hub(lambda hub: announcements.cancel(hub, announcement_id))
    out.print(f"announcement {announcement_id} cancelled; {skipped} pending deliveries skipped")


@app.command()
def status(
    message_id: int,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    watch: Annotated[bool, typer.Option(help="Show a progress bar until the message is done.")] = False,
) -> None:
    """Delivery counts of a message, per channel and state."""
    from hub import delivery

    if watch:
        with_hub(lambda hub: _watch(hub, message_id), redis=False)
    result = with_hub(lambda hub: delivery.status(hub, message_id), redis=False)
    if result is None:
        fail(f"message {message_id} not found")
    if as_json:
        out.print_json(json.dumps(result))
        return
    states = [s for s in result["totals"] if result["totals"][s]] or ["queued"]
    title = f"message {message_id} ({result['kind']}): {result['progress']}"
    if result["progress"] == "done":
        sent = sum(result["totals"][s] for s in ("sent", "delivered", "read"))
        title += f", {sent} of {result['total']} sent"
    table = Table("channel", *states, title=title)
    for channel, counts in result["channels"].items():
        table.add_row(channel, *(str(counts[s]) for s in states))
    table.add_row("[bold]total[/bold]", *(str(result["totals"][s]) for s in states))
    out.print(table)
    for waiting in result["deferred"]:  # held back by a provider's limit or trouble: why, and until when
        out.print(
            f"{waiting['count']} waiting on {waiting['channel']}: {waiting['reason']} "
            f"(next try {waiting['next_attempt_at']})",
            markup=False,
        )


async def _watch(hub: Hub, message_id: int) -> None:
    from hub import delivery

    with progress_bar() as bar:
        task = bar.add_task(f"message {message_id}", total=None)
        while True:
            result = await delivery.status(hub, message_id)
            if result is None:
                return
            bar.update(task, total=result["total"] or None, completed=result["total"] - result["pending"])
            if result["done"]:
                return
            await asyncio.sleep(0.5)
