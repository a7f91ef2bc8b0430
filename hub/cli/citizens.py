"""Requests by letter under UU 27/2022: export or erase everything held on an address, both recorded."""

from __future__ import annotations

import getpass
import json
from typing import Annotated

import typer

from hub import citizens
from hub.cli.common import app, out, with_hub

citizens_app = typer.Typer(
    help="A citizen's data, on their written request: export it, erase it (recorded in citizen_requests).",
    no_args_is_help=True,
)
app.add_typer(citizens_app, name="citizens")

Address = Annotated[
    str, typer.Option("--address", help="The address as the citizen gave it: phone number, email, chat id.")
]
Channel = Annotated[
    str | None,
    typer.Option("--channel", help="Only this channel (email, sms, telegram, matrix); default: all."),
]
By = Annotated[
    str | None,
    typer.Option(
        "--by", help="Who acts, for the record (default: your login name); add the letter's number."
    ),
]


def _actor(by: str | None) -> str:
    try:
        return by or getpass.getuser()
    except OSError:
        return "unknown operator"


@citizens_app.command("export")
def export(address: Address, channel: Channel = None, by: By = None) -> None:
    """Print as JSON everything held on an address: endpoints, subscriptions, cases, delivery summary."""
    data = with_hub(lambda hub: citizens.export(hub, address, channel, actor=_actor(by)), redis=False)
    typer.echo(json.dumps(data, indent=2, ensure_ascii=False))


@citizens_app.command("erase")
def erase(address: Address, channel: Channel = None, by: By = None) -> None:
    """Erase everything held on an address now; delivery history keeps counts per message, no address."""
    done = with_hub(lambda hub: citizens.erase(hub, address, channel, actor=_actor(by)), redis=False)
    if not done["endpoints"]:
        out.print("nothing is held on this address: nothing erased (the request is recorded)")
        return
    out.print(
        f"erased {done['endpoints']} address(es): {done['subscriptions']} subscription(s), "
        f"{done['case_links']} case link(s), {done['deliveries']} delivery row(s) (counts per message kept)"
    )
