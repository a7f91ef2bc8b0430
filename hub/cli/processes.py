"""The long-running processes: `hub worker`, `hub run`, `hub listen`, and `hub reconcile` once."""

from __future__ import annotations

import asyncio
import signal
from typing import Annotated

import typer

from hub import operate
from hub.cli.common import app, out, progress_bar, until_signal, with_hub
from hub.clock import utcnow
from hub.context import Hub
from hub.errors import InvalidInput


@app.command()
def worker(
    burst: Annotated[bool, typer.Option(help="Drain what is due, then exit.")] = False,
    metrics_port: Annotated[
        int | None,
        typer.Option(min=0, max=65535, help="Serve this worker's Prometheus metrics on this port (0: none)."),
    ] = None,
) -> None:
    """Run a worker: both lanes (urgent and bulk) and the reconciler."""
    from hub.delivery import drain, run_workers

    async def work(hub: Hub) -> None:
        if not burst:
            served = _serve_metrics(hub, metrics_port)
            out.print(f"worker started; channels: {', '.join(sorted(hub.channels)) or 'none'}{served}")
            listeners = [_listen(hub, name) for name in hub.listeners("worker")]
            watch = operate.watch_redis_neighbours(hub)
            try:
                await until_signal(asyncio.gather(operate.supervise(run_workers, hub), *listeners))
            finally:
                watch.cancel()
            return
        started = utcnow()
        with progress_bar() as bar:
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

    with_hub(work)


def _serve_metrics(hub: Hub, port: int | None) -> str:
    """Start the worker's metrics server (stopped with the process); what to add to the start line."""
    from hub import metrics

    section = hub.settings.metrics
    port = section.worker_port if port is None else port
    if not port:
        return ""
    metrics.serve_worker_metrics(section.worker_host, port)  # a daemon thread: ends with the process
    shown = f"[{section.worker_host}]" if ":" in section.worker_host else section.worker_host
    return f"; metrics on http://{shown}:{port}/metrics"


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
            # uvicorn's loggers go through the hub's handler (hub/logs.py): its access lines lose query
            # strings and link tokens, and its own messages follow log.libraries.
            log_config=None,
            log_level=None,
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
        out.print(
            f"console: {console_address(settings.hub.public_url, config.host, config.port)}", highlight=False
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

    with_hub(work, migrate=True)


def console_address(public_url: str, host: str, port: int) -> str:
    """Where staff open the console: the address `hub run` listens on, as a browser on the machine types it.

    Listening on every interface (``0.0.0.0``, ``::``) names no address to type, so the public URL is
    given instead (the one the offices reach through their proxy).
    """
    if host in ("0.0.0.0", "::", ""):
        return public_url.rstrip("/") + "/console/"
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/console/"


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
        await until_signal(_listen(hub, channel))

    with_hub(work)


@app.command()
def reconcile() -> None:
    """Queue again whatever the database says is due (run after Redis was lost, or from cron)."""
    from hub.delivery import reconcile as reconcile_job

    result = with_hub(lambda hub: reconcile_job({"hub": hub}))
    out.print(f"queued {result['batches']} batches and {result['plans']} fan-outs")
