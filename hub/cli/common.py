"""What every ``hub`` command shares: the Typer apps, the consoles, settings and running one piece of work."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import typer
from redis.exceptions import RedisError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from hub.context import Hub, build_hub
from hub.errors import HubError, Unavailable
from hub.logs import configure as configure_logs
from hub.logs import secret_values
from hub.settings import Settings, load_settings

app = typer.Typer(
    help="Disdukcapil notification hub: announcements and applicant updates to citizens.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
regions_app = typer.Typer(help="Regions and offices.", no_args_is_help=True)
subscribers_app = typer.Typer(help="Subscribers.", no_args_is_help=True)
keys_app = typer.Typer(help="API keys for intake systems and staff.", no_args_is_help=True)
relays_app = typer.Typer(help="Kelurahan relay groups.", no_args_is_help=True)
app.add_typer(regions_app, name="regions")
app.add_typer(subscribers_app, name="subscribers")
app.add_typer(keys_app, name="keys")
app.add_typer(relays_app, name="relays")

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)
T = TypeVar("T")


class State:
    settings_path: str | None = None


@app.callback()
def main(
    settings: Annotated[
        str | None,
        typer.Option("--settings", envvar="HUB_SETTINGS", help="Settings file (default: ./settings.toml)."),
    ] = None,
) -> None:
    State.settings_path = settings


def settings_from_options() -> Settings:
    try:
        loaded = load_settings(State.settings_path)
    except (FileNotFoundError, HubError) as exc:  # HubError: a setting that does not fit, named
        fail(str(exc))
    configure_logs(loaded.log.level, loaded.log.json_logs, loaded.log.libraries, secret_values(loaded))
    return loaded


def fail(message: str, code: int = 1) -> None:
    err.print("[red]error:[/red] ", end="", highlight=False)
    err.print(message, highlight=False, markup=False)
    raise typer.Exit(code)


def with_hub(work: Callable[[Hub], Awaitable[T]], *, redis: bool = True, migrate: bool = False) -> T:
    """Build the hub, run one piece of work, close everything; user errors become one line."""

    async def go() -> T:
        settings = settings_from_options()
        if migrate:
            await migrate_database(settings)
        hub = await build_hub(settings, with_redis=redis)
        try:
            return await work(hub)
        finally:
            await hub.close()

    try:
        return asyncio.run(go())
    except HubError as exc:
        fail(str(exc), exc.exit_code)
    except FileNotFoundError as exc:
        fail(str(exc))
    except RedisError as exc:
        fail(
            f"Redis does not answer ({exc}): start it, or change redis.url "
            "(empty: an embedded Redis is started)",
            Unavailable.exit_code,
        )
    except (OSError, TimeoutError) as exc:
        fail(f"a service the hub needs does not answer: {exc}", Unavailable.exit_code)
    except Exception as exc:  # database not initialised and the like: one line, not a trace
        if "no such table" in str(exc) or "does not exist" in str(exc):
            fail("the database is not initialised: run `hub init` first")
        raise
    raise AssertionError("unreachable")


async def migrate_database(settings: Settings) -> None:
    from hub.store.db import Database

    db = Database(settings.database.url, schema=settings.database.schema_name or None)
    try:
        await db.migrate()
    finally:
        await db.dispose()


# ---------------------------------------------------------------------------------------------------------


def progress_bar() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=False,
    )


async def until_signal(coro: Awaitable[Any]) -> None:
    task = asyncio.ensure_future(coro)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    try:
        await task
    except asyncio.CancelledError:
        out.print("stopped")
