"""Subscribing people by hand or from a CSV file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hub import subscriptions
from hub.cli.common import app, fail, out, subscribers_app, with_hub


@app.command()
def subscribe(
    topic: Annotated[str, typer.Option(help="Topic, e.g. kota-pekalongan or kota-pekalongan/ktp-el.")],
    email: Annotated[str | None, typer.Option(help="Email address.")] = None,
    channel: Annotated[str, typer.Option(help="Channel when --address is used.")] = "email",
    address: Annotated[str | None, typer.Option(help="Address on --channel (chat id, number, ...).")] = None,
    confirmed: Annotated[
        bool, typer.Option(help="Already opted in elsewhere: skip the confirmation.")
    ] = False,
    locale: Annotated[str, typer.Option(help="id or en.")] = "id",
) -> None:
    """Subscribe one address to a topic (double opt-in unless --confirmed)."""
    if email:
        channel, address = "email", email
    if not address:
        fail("give --email or --address")
    result = with_hub(
        lambda hub: subscriptions.subscribe(hub, topic, channel, address, confirmed=confirmed, locale=locale)
    )
    note = " (confirmation sent)" if result.confirmation_message_id else ""
    out.print(f"subscription {result.subscription_id}: {result.state}{note}")


@subscribers_app.command("import")
def subscribers_import(
    file: Annotated[Path, typer.Argument(help="CSV with a header row and an 'email' (or 'address') column.")],
    topic: Annotated[str, typer.Option(help="Topic to subscribe everyone to.")],
    channel: Annotated[str, typer.Option(help="Channel of the addresses.")] = "email",
    confirmed: Annotated[bool, typer.Option(help="They opted in elsewhere: skip confirmations.")] = False,
) -> None:
    """Import subscribers from CSV: every row is valid or nothing is imported."""
    if not file.is_file():
        fail(f"{file}: no such file")
    text = file.read_text(encoding="utf-8-sig")
    counts = with_hub(lambda hub: subscriptions.import_csv(hub, text, topic, channel, confirmed=confirmed))
    out.print(
        f"imported {counts['rows']} rows: {counts['new']} new, "
        f"{counts['already_confirmed']} already confirmed"
    )
