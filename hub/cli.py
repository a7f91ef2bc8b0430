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
from redis.exceptions import RedisError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from hub import announcements, operate, subscriptions
from hub.clock import parse_when, utcnow
from hub.context import Hub, build_hub
from hub.errors import HubError, InvalidInput, Unavailable
from hub.logs import configure as configure_logs
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


def _settings() -> Settings:
    try:
        loaded = load_settings(State.settings_path)
    except (FileNotFoundError, HubError) as exc:  # HubError: a setting that does not fit, named
        _fail(str(exc))
    configure_logs(loaded.log.level, loaded.log.json_logs)
    return loaded


def _fail(message: str, code: int = 1) -> None:
    err.print("[red]error:[/red] ", end="", highlight=False)
    err.print(message, highlight=False, markup=False)
    raise typer.Exit(code)


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
    except HubError as exc:
        _fail(str(exc), exc.exit_code)
    except FileNotFoundError as exc:
        _fail(str(exc))
    except RedisError as exc:
        _fail(
            f"Redis does not answer ({exc}): start it, or change redis.url "
            "(empty: an embedded Redis is started)",
            Unavailable.exit_code,
        )
    except (OSError, TimeoutError) as exc:
        _fail(f"a service the hub needs does not answer: {exc}", Unavailable.exit_code)
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
    except HubError as exc:
        _fail(str(exc), exc.exit_code)
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
        str,
        typer.Option(
            help="closure, restriction, suspension, hours_changed, online_only, link or free_text."
        ),
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
        if as_json:
            out.print_json(data=result)
        else:
            _print_preview(result)
        return
    if draft:
        shown = _run(lambda hub: _create_draft(hub, req))
    else:
        shown = _run(lambda hub: _published(hub, _publish(hub, req, force=force)))
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


async def _publish(
    hub: Hub, req: announcements.AnnouncementInput, *, force: bool
) -> tuple[Any, Any]:
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

    _print_announcement(_run(run), as_json)


@app.command()
def show(
    announcement_id: int,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """An announcement as stored: template, data, state and times in the office's zone."""

    async def run(hub: Hub) -> dict[str, Any]:
        return await announcements.read_back(hub, await announcements.get(hub, announcement_id))

    shown = _run(run, redis=False)
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
    skipped = _run(lambda hub: announcements.cancel(hub, announcement_id))
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
        _run(lambda hub: _watch(hub, message_id), redis=False)
    result = _run(lambda hub: delivery.status(hub, message_id), redis=False)
    if result is None:
        _fail(f"message {message_id} not found")
    if as_json:
        out.print_json(json.dumps(result))
        return
    states = [s for s in result["totals"] if result["totals"][s]] or ["queued"]
    title = f"message {message_id} ({result['kind']}): {result['progress']}"
    if result["progress"] == "done":
        sent = result["totals"]["sent"] + result["totals"]["delivered"]
        title += f", {sent} of {result['total']} sent"
    table = Table("channel", *states, title=title)
    for channel, counts in result["channels"].items():
        table.add_row(channel, *(str(counts[s]) for s in states))
    table.add_row("[bold]total[/bold]", *(str(result["totals"][s]) for s in states))
    out.print(table)


async def _watch(hub: Hub, message_id: int) -> None:
    from hub import delivery

    with _progress() as bar:
        task = bar.add_task(f"message {message_id}", total=None)
        while True:
            result = await delivery.status(hub, message_id)
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
    from hub.delivery import drain, run_workers

    async def work(hub: Hub) -> None:
        if not burst:
            out.print(f"worker started; channels: {', '.join(sorted(hub.channels)) or 'none'}")
            listeners = [_listen(hub, name) for name in hub.listeners("worker")]
            watch = operate.watch_redis_neighbours(hub)
            try:
                await _until_signal(asyncio.gather(operate.supervise(run_workers, hub), *listeners))
            finally:
                watch.cancel()
            return
        started = utcnow()
        with _progress() as bar:
            task = bar.add_task("draining", total=0)
            seen = [0]  # the most work seen at once: the bar's total, never "?"

            def progress(left: int) -> None:
                seen[0] = max(seen[0], left)
                bar.update(task, total=seen[0], completed=seen[0] - left)

            await drain(hub, on_progress=progress)
            counts = await operate.outcomes_since(hub, started)
            done = max(seen[0], sum(counts.values()))
            bar.update(task, total=done, completed=done)
        out.print(operate.summary_line(counts), highlight=False)

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
    from hub.delivery import run_workers

    async def work(hub: Hub) -> None:
        settings = hub.settings
        config = uvicorn.Config(
            create_app(hub),
            host=host or settings.api.host,
            port=port or settings.api.port,
            log_level=settings.log.level.lower(),
            lifespan="on",
        )
        # Bound before anything says "running": a busy port is one line naming the setting to change.
        sock = operate.listen_socket(config.host, config.port)
        server = uvicorn.Server(config)
        server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        watch = operate.watch_redis_neighbours(hub)
        tasks = [
            asyncio.ensure_future(server.serve(sockets=[sock])),
            asyncio.ensure_future(operate.supervise(run_workers, hub)),
            *[asyncio.ensure_future(_listen(hub, name)) for name in hub.listeners("worker", "listener")],
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
        watch.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        sock.close()
        for t in tasks:
            if t.done() and not t.cancelled() and t.exception():
                raise t.exception()  # type: ignore[misc]

    _run(work, migrate=True)


async def _listen(hub: Hub, name: str) -> None:
    from hub.inbound import handle_inbound

    channel = await hub.open_channel(name)
    await channel.listen(lambda record: handle_inbound(hub, record))


@app.command()
def listen(channel: Annotated[str, typer.Argument(help="Channel to poll, e.g. telegram.")]) -> None:
    """Receive a channel's inbound messages by polling (for offices without a public address)."""

    async def work(hub: Hub) -> None:
        where = hub.channel(channel).capabilities.listening
        if where == "worker":
            raise InvalidInput(
                f"{channel} is read by `hub worker` itself (the worker that owns the bot's session "
                "listens); there is nothing to run separately"
            )
        if where == "none" and hub.channel(channel).capabilities.webhooks:
            raise InvalidInput(
                f"{channel} has nothing to poll: its inbound arrives at "
                f"{hub.settings.hub.public_url.rstrip('/')}/v1/channels/{channel}/webhook"
            )
        if where == "none":
            raise InvalidInput(f"{channel} receives nothing: there is nothing to listen to")
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
    from hub.delivery import reconcile as reconcile_job

    result = _run(lambda hub: reconcile_job({"hub": hub}))
    out.print(f"queued {result['batches']} batches and {result['plans']} fan-outs")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
