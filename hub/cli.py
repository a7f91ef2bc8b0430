"""The ``hub`` command line (Typer + Rich). Every command has ``--help``.

Errors print one line and exit non-zero; nothing is half-created.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from hub import announcements, applicants, subscriptions
from hub.clock import parse_when
from hub.context import Hub, build_hub
from hub.logs import configure as configure_logs
from hub.regions import DataFileError
from hub.render import RenderError
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

USER_ERRORS = (
    announcements.AnnouncementError,
    subscriptions.SubscriptionError,
    applicants.ApplicantError,
    DataFileError,
    RenderError,
    FileNotFoundError,
    ValueError,
)


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


def _settings() -> Settings:
    try:
        loaded = load_settings(State.settings_path)
    except FileNotFoundError as exc:
        _fail(str(exc))
    configure_logs(loaded.log.level, loaded.log.json_logs)
    return loaded


def _fail(message: str) -> None:
    err.print(f"[red]error:[/red] {message}", highlight=False)
    raise typer.Exit(1)


def _run(work: Callable[[Hub], Awaitable[T]], *, redis: bool = True, migrate: bool = False) -> T:
    """Build the hub, run one piece of work, close everything; user errors become one line."""

    async def go() -> T:
        settings = _settings()
        if migrate:
            await _migrate(settings)
        hub = await build_hub(settings, with_redis=redis)
        try:
            return await work(hub)
        finally:
            await hub.close()

    try:
        return asyncio.run(go())
    except USER_ERRORS as exc:
        _fail(str(exc))
    except Exception as exc:  # database not initialised and the like: one line, not a trace
        if "no such table" in str(exc) or "does not exist" in str(exc):
            _fail("the database is not initialised: run `hub init` first")
        raise
    raise AssertionError("unreachable")


async def _migrate(settings: Settings) -> None:
    from hub.store.db import Database

    db = Database(settings.database.url, schema=settings.database.schema_name or None)
    try:
        await db.migrate()
        await db.secret_key(settings.hub.secret_key)
    finally:
        await db.dispose()


# ---------------------------------------------------------------------------------------------------------


@app.command()
def init(
    sample: Annotated[bool, typer.Option(help="Also load the sample offices (data/offices.toml).")] = False,
) -> None:
    """Create or migrate the database (safe to run again)."""
    settings = _settings()
    asyncio.run(_migrate(settings))
    out.print(f"database ready: {_safe(settings.database.url)}")
    if sample:
        regions_load(Path(__file__).resolve().parent.parent / "data" / "offices.toml")


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
    except DataFileError as exc:
        _fail(str(exc))
    report = _run(lambda hub: load(hub, data), redis=False)
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
    for t in _run(work, redis=False):
        table.add_row(t.slug, t.office_id, t.name)
    out.print(table)


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
        _fail("give --email or --address")
    result = _run(
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
        _fail(f"{file}: no such file")
    text = file.read_text(encoding="utf-8-sig")
    counts = _run(lambda hub: subscriptions.import_csv(hub, text, topic, channel, confirmed=confirmed))
    out.print(
        f"imported {counts['rows']} rows: {counts['new']} new, "
        f"{counts['already_confirmed']} already confirmed"
    )


@app.command()
def announce(
    topic: Annotated[list[str], typer.Option("--topic", help="Topic (repeatable).")] = [],  # noqa: B006
    region: Annotated[
        list[str], typer.Option("--region", help="Region code: every office below (repeatable).")
    ] = [],  # noqa: B006
    template: Annotated[
        str, typer.Option(help="closure, hours_changed, online_only, link or free_text.")
    ] = "free_text",
    data: Annotated[Path | None, typer.Option(help="JSON file with the template's values.")] = None,
    service: Annotated[list[str], typer.Option("--service", help="Affected service (repeatable).")] = [],  # noqa: B006
    at: Annotated[
        str | None, typer.Option(help="Publish at (YYYY-MM-DD HH:MM, office time), default now.")
    ] = None,
    since: Annotated[str | None, typer.Option("--from", help="Valid from (date or time).")] = None,
    until: Annotated[str | None, typer.Option(help="Valid until: nothing goes out after it.")] = None,
    dry_run: Annotated[
        bool, typer.Option(help="Show each channel's rendering and the audience; send nothing.")
    ] = False,
) -> None:
    """Write an announcement and publish it (or preview it with --dry-run)."""
    values: dict[str, Any] = {}
    if data is not None:
        try:
            values = json.loads(data.read_text(encoding="utf-8"))
        except FileNotFoundError:
            _fail(f"{data}: no such file")
        except json.JSONDecodeError as exc:
            _fail(f"{data}: not valid JSON: {exc.msg} at line {exc.lineno}")
        if not isinstance(values, dict):
            _fail(f"{data}: expected a JSON object")
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
        _fail(str(exc))
    if dry_run:
        result = _run(lambda hub: announcements.preview(hub, req), redis=False)
        _print_preview(result)
        return
    ann, message = _run(lambda hub: announcements.create(hub, req, publish=True))
    assert message is not None
    when = f" scheduled for {message.send_at:%Y-%m-%d %H:%M} UTC" if message.state == "scheduled" else ""
    out.print(f"announcement {ann.id}: message {message.id}{when}")


def _print_preview(result: dict[str, Any]) -> None:
    out.print(f"[bold]recipients:[/bold] {result['recipients']} across {result['topics']} topics")
    for channel, entry in result["channels"].items():
        for locale, r in entry["renderings"].items():
            facts = {k: v for k, v in r.items() if k not in ("subject", "text", "html")}
            extra = "".join(f", {k}: {v}" for k, v in facts.items())
            out.rule(f"{channel} / {locale}: {entry['recipients']} recipients{extra}")
            if r["subject"]:
                out.print(f"[bold]Subject:[/bold] {r['subject']}", highlight=False)
            out.print(r["text"], highlight=False, markup=False)


@app.command()
def cancel(announcement_id: int) -> None:
    """Cancel an announcement: deliveries still pending are skipped."""
    skipped = _run(lambda hub: announcements.cancel(hub, announcement_id))
    out.print(f"announcement {announcement_id} cancelled; {skipped} pending deliveries skipped")


@app.command()
def status(
    message_id: int,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    watch: Annotated[bool, typer.Option(help="Show a progress bar until the message is done.")] = False,
) -> None:
    """Delivery counts of a message, per channel and state."""
    from hub import outbox

    if watch:
        _run(lambda hub: _watch(hub, message_id), redis=False)
    result = _run(lambda hub: outbox.status(hub, message_id), redis=False)
    if result is None:
        _fail(f"message {message_id} not found")
    if as_json:
        out.print_json(json.dumps(result))
        return
    states = [s for s in result["totals"] if result["totals"][s]] or ["queued"]
    table = Table("channel", *states, title=f"message {message_id} ({result['kind']}, {result['state']})")
    for channel, counts in result["channels"].items():
        table.add_row(channel, *(str(counts[s]) for s in states))
    table.add_row("[bold]total[/bold]", *(str(result["totals"][s]) for s in states))
    out.print(table)


async def _watch(hub: Hub, message_id: int) -> None:
    from hub import outbox

    with _progress() as bar:
        task = bar.add_task(f"message {message_id}", total=None)
        while True:
            result = await outbox.status(hub, message_id)
            if result is None:
                return
            bar.update(task, total=result["total"] or None, completed=result["total"] - result["pending"])
            if result["done"]:
                return
            await asyncio.sleep(0.5)


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=False,
    )


@app.command()
def worker(
    burst: Annotated[bool, typer.Option(help="Drain what is due, then exit.")] = False,
) -> None:
    """Run a worker: both lanes (urgent and bulk) and the reconciler."""
    from hub.worker import drain, run_workers

    async def work(hub: Hub) -> None:
        if not burst:
            out.print(f"worker started; channels: {', '.join(sorted(hub.channels)) or 'none'}")
            listeners = [_listen(hub, name) for name in _polling_channels(hub, in_worker=True)]
            await _until_signal(asyncio.gather(run_workers(hub), *listeners))
            return
        with _progress() as bar:
            task = bar.add_task("draining", total=None)
            start: list[int] = []

            def progress(left: int) -> None:
                if not start or left > start[0]:
                    start[:] = [left]
                bar.update(task, total=start[0] or None, completed=start[0] - left)

            await drain(hub, on_progress=progress)

    _run(work)


async def _until_signal(coro: Awaitable[Any]) -> None:
    task = asyncio.ensure_future(coro)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    try:
        await task
    except asyncio.CancelledError:
        out.print("stopped")


@app.command()
def run(
    host: Annotated[str | None, typer.Option(help="Listen address (default from settings).")] = None,
    port: Annotated[int | None, typer.Option(help="Listen port (default from settings).")] = None,
) -> None:
    """API and worker in one process, for a small office. Initialises the database if needed."""
    import uvicorn

    from hub.api.app import create_app
    from hub.worker import run_workers

    async def work(hub: Hub) -> None:
        settings = hub.settings
        config = uvicorn.Config(
            create_app(hub),
            host=host or settings.api.host,
            port=port or settings.api.port,
            log_level=settings.log.level.lower(),
            lifespan="on",
        )
        server = uvicorn.Server(config)
        server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        tasks = [
            asyncio.ensure_future(server.serve()),
            asyncio.ensure_future(run_workers(hub)),
            *[asyncio.ensure_future(_listen(hub, name)) for name in _polling_channels(hub)],
        ]
        out.print(
            f"hub running on http://{config.host}:{config.port} (API docs at /docs); "
            f"channels: {', '.join(sorted(hub.channels)) or 'none'}; Ctrl+C stops"
        )
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        waiter = asyncio.ensure_future(stop.wait())
        await asyncio.wait([waiter, *tasks], return_when=asyncio.FIRST_COMPLETED)
        server.should_exit = True
        for t in tasks[1:]:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for t in tasks:
            if t.done() and not t.cancelled() and t.exception():
                raise t.exception()  # type: ignore[misc]

    _run(work, migrate=True)


def _polling_channels(hub: Hub, *, in_worker: bool | None = None) -> list[str]:
    """Channels that pull their inbound; ``in_worker`` picks those a worker process must read itself."""
    return [
        name
        for name, channel in hub.channels.items()
        if getattr(channel, "mode", None) == "polling"
        and (in_worker is None or type(channel).listens_in_worker == in_worker)
    ]


async def _listen(hub: Hub, name: str) -> None:
    from hub.inbound import handle_inbound

    channel = await hub.open_channel(name)
    await channel.listen(lambda record: handle_inbound(hub, record))


@app.command()
def listen(channel: Annotated[str, typer.Argument(help="Channel to poll, e.g. telegram.")]) -> None:
    """Receive a channel's inbound messages by polling (for offices without a public address)."""

    async def work(hub: Hub) -> None:
        if type(hub.channel(channel)).listens_in_worker:
            raise ValueError(f"{channel} is read by the worker that owns its session: run `hub worker`")
        await _until_signal(_listen(hub, channel))

    _run(work)


@keys_app.command("create")
def keys_create(
    office: Annotated[str, typer.Option(help="Office id the key acts for.")],
    role: Annotated[str, typer.Option(help="intake (applicant updates) or staff (announcements).")],
    name: Annotated[str, typer.Option(help="Who uses the key, for the record.")] = "",
) -> None:
    """Create an API key. It is shown once; only a hash is stored."""
    from hub.keys import create_key

    key = _run(lambda hub: create_key(hub, office, role, name or role), redis=False)
    out.print(key, highlight=False)


@relays_app.command("code")
def relays_code(office: Annotated[str, typer.Option(help="Office the group relays for.")]) -> None:
    """A one-time code; the kelurahan admin sends it in the group (``/kelurahan CODE``)."""
    from hub.commands import relay_code

    out.print(_run(lambda hub: relay_code(hub, office), redis=False), highlight=False)


@app.command()
def reconcile() -> None:
    """Queue again whatever the database says is due (run after Redis was lost, or from cron)."""
    from hub.worker import reconcile as reconcile_job

    result = _run(lambda hub: reconcile_job({"hub": hub}))
    out.print(f"queued {result['batches']} batches and {result['plans']} fan-outs")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
