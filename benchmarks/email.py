"""Email throughput: the hub's email channel against a bare aiosmtplib loop, into the same local SMTP server.

The server is aiosmtpd in its own process with a handler that counts and discards. The bare loop keeps
``--pool`` connections open and sends the hub's own messages (the same rendering, built per recipient by
``EmailChannel.build``, so the sizes match); the hub runs ``--count`` deliveries through fan-out, queue,
claim, send and record with ``pool_size = --pool``. Aim: the hub at ≥ 80% of the bare loop.

    python -m benchmarks.email [--count 100000] [--pool 4] [--workers 1]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import socket
import time
from pathlib import Path
from typing import Any

from benchmarks.common import (
    HubWorkers,
    Result,
    Row,
    bulk_audience,
    cli,
    last_sent_at,
    make_settings,
    overrides,
    parser,
    publish_free_text,
    queue_overrides,
    sqlite_url,
    start_hub,
    wait_done,
    workspace,
)

AIM = 0.8
SENDER = "Disdukcapil Kota Pekalongan <no-reply@disdukcapil.example.go.id>"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---------------------------------------------------------------------------------------------------------
# The SMTP server: aiosmtpd in its own process, counting and discarding


class _CountingHandler:
    def __init__(self, count: Any) -> None:
        self.count = count

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.count.get_lock():
            self.count.value += 1
        return "250 Message accepted for delivery"


def _smtp_process(port: int, count: Any, ready: Any, stop: Any) -> None:
    from aiosmtpd.controller import Controller

    controller = Controller(_CountingHandler(count), hostname="127.0.0.1", port=port)
    controller.start()
    ready.set()
    stop.wait()
    controller.stop()


class SmtpServer:
    def __init__(self) -> None:
        self.ctx = mp.get_context("spawn")
        self.port = free_port()
        self.count = self.ctx.Value("q", 0)
        self.ready, self.stop = self.ctx.Event(), self.ctx.Event()
        self.proc = self.ctx.Process(
            target=_smtp_process,
            args=(self.port, self.count, self.ready, self.stop),
            name="smtp-server",
            daemon=True,
        )

    def received(self) -> int:
        return int(self.count.value)

    def reset(self) -> None:
        with self.count.get_lock():
            self.count.value = 0

    def __enter__(self) -> SmtpServer:
        self.proc.start()
        if not self.ready.wait(30):
            raise RuntimeError("the SMTP server did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.proc.join(timeout=10)
        if self.proc.is_alive():
            self.proc.terminate()


# ---------------------------------------------------------------------------------------------------------
# The bare loop


async def _items_from_message(hub: Any, message_id: int, count: int, first_endpoint: int) -> list[Any]:
    """Outbound items exactly as the hub builds them for ``message_id`` (its stored email rendering)."""
    from sqlalchemy import select

    from channels.base import Content, Outbound
    from hub import delivery
    from hub.render import UNSUBSCRIBE_MARK
    from hub.store.models import Rendering

    async with hub.db.session() as session:
        r = await session.scalar(
            select(Rendering).where(
                Rendering.message_id == message_id, Rendering.channel == "email", Rendering.locale == "id"
            )
        )
    assert r is not None
    items = []
    for i in range(count):
        endpoint = first_endpoint + i
        url = delivery.link(hub, "unsubscribe", endpoint, message_id)
        content = Content(
            text=r.text.replace(UNSUBSCRIBE_MARK, url),
            html=(r.html or "").replace(UNSUBSCRIBE_MARK, url),
            subject=r.subject,
            locale=r.locale,
        )
        items.append(
            Outbound(
                delivery_id=10_000_000 + i,
                address=f"warga{i + 1}@mail.example.com",
                content=content,
                unsubscribe_url=url,
            )
        )
    return items


async def bare_loop(port: int, pool: int, items: list[Any], channel: Any) -> float:
    """Send ``items`` over ``pool`` reused aiosmtplib connections; returns messages/s."""
    import aiosmtplib

    clients = [
        aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False, timeout=30) for _ in range(pool)
    ]
    await asyncio.gather(*(c.connect() for c in clients))
    todo = iter(items)
    sent = 0

    async def loop(client: Any) -> None:
        nonlocal sent
        for item in todo:
            await client.send_message(channel.build(item))
            sent += 1

    started = time.perf_counter()
    await asyncio.gather(*(loop(c) for c in clients))
    elapsed = time.perf_counter() - started
    await asyncio.gather(*(c.quit() for c in clients), return_exceptions=True)
    assert sent == len(items)
    return len(items) / elapsed


# ---------------------------------------------------------------------------------------------------------


async def _run(args: argparse.Namespace, tmp: Path, server: SmtpServer) -> dict[str, Any]:
    email = {
        "enabled": True,
        "host": "127.0.0.1",
        "port": server.port,
        "start_tls": False,
        "sender": SENDER,
        "pool_size": args.pool,
        "allow_test_domains": True,
    }
    ov = overrides(sqlite_url(tmp), channels={"email": email}, **queue_overrides(args.queue))
    hub = await start_hub(ov)
    try:
        first, _ = await bulk_audience(
            hub, args.count, channel="email", address_sql="'warga' || i || '@mail.example.com'"
        )
        with HubWorkers(ov, count=args.workers) as _workers:
            from hub.clock import utcnow

            server.reset()
            start = utcnow()
            message_id = await publish_free_text(hub)
            status = await wait_done(hub, message_id, args.count, timeout=args.timeout, label="email (hub)")
            end = await last_sent_at(hub, message_id)
        hub_received = server.received()
        hub_rate = args.count / (end - start).total_seconds()

        items = await _items_from_message(hub, message_id, args.bare_count or args.count, first)
        channel = hub.channel("email")
        size = len(bytes(channel.build(items[0])))
        server.reset()
        print(f"   bare loop: {len(items):,} messages over {args.pool} connections …", flush=True)
        bare_rate = await bare_loop(server.port, args.pool, items, channel)
        bare_received = server.received()
        return {
            "hub_rate": hub_rate,
            "bare_rate": bare_rate,
            "totals": status["totals"],
            "size": size,
            "hub_received": hub_received,
            "bare_received": bare_received,
            "bare_count": len(items),
            "settings": make_settings(ov).queue,
        }
    finally:
        await hub.close()


def run(args: argparse.Namespace) -> Result:
    if args.quick:
        args.count = min(args.count, 2000)
    with workspace("email") as tmp, SmtpServer() as server:
        print(
            f"   hub: {args.count:,} emails, pool_size {args.pool}, {args.workers} worker process(es) …",
            flush=True,
        )
        out = asyncio.run(_run(args, tmp, server))
    ratio = out["hub_rate"] / out["bare_rate"]
    q = out["settings"]
    result = Result(
        name="email",
        title="Email: hub vs bare aiosmtplib loop into a local aiosmtpd",
        params={
            "emails": args.count,
            "pool": args.pool,
            "worker_processes": args.workers,
            "batch_size": q.batch_size,
            "bulk_jobs": q.bulk_jobs,
            "poll_delay": q.poll_delay,
        },
        rows=[
            Row(
                metric="emails/s, publish → all sent",
                value=out["hub_rate"],
                unit="emails/s",
                ceiling=out["bare_rate"],
                ceiling_what=f"bare aiosmtplib loop, {args.pool} connections",
                ratio=ratio,
                aim=f"≥ {AIM:.0%} of ceiling",
                vs_aim=ratio / AIM,
                met=ratio >= AIM,
            )
        ],
    )
    result.notes.append(
        f"message size {out['size']:,} bytes (text + HTML, List-Unsubscribe); the server counted "
        f"{out['hub_received']:,} messages from the hub and {out['bare_received']:,} from the bare "
        f"loop; hub states {dict((k, v) for k, v in out['totals'].items() if v)}"
    )
    return result


def build_parser() -> argparse.ArgumentParser:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--count", type=int, default=100_000, help="emails through the hub")
    p.add_argument(
        "--bare-count", type=int, default=0, help="emails through the bare loop (default: --count)"
    )
    p.add_argument("--pool", type=int, default=4, help="SMTP connections (hub pool_size and bare loop)")
    p.add_argument("--workers", type=int, default=1, help="hub worker processes")
    p.add_argument("--timeout", type=float, default=3600, help="give up after this many seconds")
    return p


def main(argv: list[str] | None = None) -> Result:
    return cli(run, build_parser, argv)


if __name__ == "__main__":
    main()
