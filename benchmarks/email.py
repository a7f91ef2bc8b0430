"""Email rate and CPU: the hub's email channel against a bare aiosmtplib loop, into one local SMTP server.

The server is aiosmtpd in its own process with a handler that counts and discards. The hub runs ``--count``
deliveries through fan-out, queue, claim, send and record with ``pool_size = --pool``; its worker
processes' CPU time (user + system, psutil) over that drain, divided by the emails, is the figure the issue
bounds (1.0 ms). The ceiling, in the same run over the same number of connections to the same server, is
a bare loop as a typical sender writes it: per recipient an ``email.message.EmailMessage`` built from the
hub's own stored rendering (same text, HTML and unsubscribe link, so the sizes match) and
``SMTP.send_message``; half of it runs before the hub's drain and half after, so a change in the shared
machine's load weighs on both. Aim: the hub at >= 1.5x the bare loop's rate.

    python -m benchmarks.email [--count 100000] [--pool 4] [--workers 1] [--database sqlite|pg] [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import socket
import tempfile
import time
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import Any

from benchmarks.common import (
    TOPIC,
    Result,
    Row,
    bulk_audience,
    cli,
    database_url,
    last_sent_at,
    make_settings,
    overrides,
    parser,
    publish_free_text,
    queue_overrides,
    start_hub,
    wait_done,
    workspace,
)
from benchmarks.workers import HubWorkers, profile_summary

AIM = 1.5
#: Worker CPU per delivered email, at most (ms).
CPU_AIM_MS = 1.0
SENDER = "Disdukcapil Kota Pekalongan <no-reply@disdukcapil.example.go.id>"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pids: list[int]) -> float:
    """CPU seconds (user + system, all threads) the processes have used so far."""
    import psutil

    total = 0.0
    for pid in pids:
        times = psutil.Process(pid).cpu_times()
        total += times.user + times.system
    return total


# ---------------------------------------------------------------------------------------------------------
# The SMTP server: aiosmtpd in its own process, counting and discarding


class _CountingHandler:
    def __init__(self, count: Any, size: Any) -> None:
        self.count, self.size = count, size

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.count.get_lock():
            self.count.value += 1
            self.size.value += len(envelope.content)
        return "250 Message accepted for delivery"


def _smtp_process(port: int, count: Any, size: Any, ready: Any, stop: Any) -> None:
    from aiosmtpd.controller import Controller

    controller = Controller(_CountingHandler(count, size), hostname="127.0.0.1", port=port)
    controller.start()
    ready.set()
    stop.wait()
    controller.stop()


class SmtpServer:
    def __init__(self) -> None:
        self.ctx = mp.get_context("spawn")
        self.port = free_port()
        self.count = self.ctx.Value("q", 0)
        self.size = self.ctx.Value("q", 0)
        self.ready, self.stop = self.ctx.Event(), self.ctx.Event()
        self.proc = self.ctx.Process(
            target=_smtp_process,
            args=(self.port, self.count, self.size, self.ready, self.stop),
            name="smtp-server",
            daemon=True,
        )

    def received(self) -> tuple[int, int]:
        """Messages and bytes received since the last reset."""
        with self.count.get_lock():
            return int(self.count.value), int(self.size.value)

    def cpu(self) -> float:
        return cpu_seconds([self.proc.pid])

    def reset(self) -> None:
        with self.count.get_lock():
            self.count.value = 0
            self.size.value = 0

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


async def _recipients(hub: Any, message_id: int, count: int, first_endpoint: int) -> list[dict[str, str]]:
    """Per recipient: address, subject, text, HTML and unsubscribe link, as the hub merges them for
    ``message_id`` (its stored email rendering, the topic's name, the signed link)."""
    from sqlalchemy import select

    from hub import delivery
    from hub.render import TOPIC_MARK, UNSUBSCRIBE_MARK
    from hub.store.models import Rendering, Topic

    async with hub.db.session() as session:
        r = await session.scalar(
            select(Rendering).where(
                Rendering.message_id == message_id, Rendering.channel == "email", Rendering.locale == "id"
            )
        )
        topic = await session.scalar(select(Topic).where(Topic.slug == TOPIC))
    assert r is not None and topic is not None
    text = r.text.replace(TOPIC_MARK, topic.name)
    page = (r.html or "").replace(TOPIC_MARK, topic.name)
    out = []
    for i in range(count):
        url = delivery.link(hub, "unsubscribe", first_endpoint + i, message_id, topic.id)
        out.append(
            {
                "address": f"warga{i + 1}@mail.example.com",
                "subject": r.subject or text.splitlines()[0][:120],
                "text": text.replace(UNSUBSCRIBE_MARK, url),
                "html": page.replace(UNSUBSCRIBE_MARK, url),
                "url": url,
            }
        )
    return out


def typical_message(sender: str, domain: str, r: dict[str, str]) -> EmailMessage:
    """One recipient's email the way a sender without a cache writes it: built whole, every time."""
    message = EmailMessage()
    message["From"] = sender
    message["To"] = r["address"]
    message["Subject"] = r["subject"]
    message["Date"] = formatdate()
    message["Message-ID"] = make_msgid(domain=domain)
    message["List-Unsubscribe"] = f"<{r['url']}>"
    message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    message.set_content(r["text"])
    message.add_alternative(r["html"], subtype="html")
    return message


async def bare_loop(port: int, pool: int, recipients: list[dict[str, str]]) -> tuple[float, float]:
    """Send to ``recipients`` over ``pool`` reused aiosmtplib connections; (seconds, CPU seconds used)."""
    import aiosmtplib

    domain = SENDER.rpartition("@")[2].rstrip(">")
    clients = [
        aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False, timeout=30) for _ in range(pool)
    ]
    await asyncio.gather(*(c.connect() for c in clients))
    todo = iter(recipients)
    sent = 0

    async def loop(client: Any) -> None:
        nonlocal sent
        for r in todo:
            await client.send_message(typical_message(SENDER, domain, r))
            sent += 1

    cpu0, started = time.process_time(), time.perf_counter()
    await asyncio.gather(*(loop(c) for c in clients))
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu0
    await asyncio.gather(*(c.quit() for c in clients), return_exceptions=True)
    assert sent == len(recipients)
    return elapsed, cpu


class _Bare:
    """The bare loop in two halves, one before the hub's drain and one after, so that a change in the
    machine's load during the run (it is shared) weighs on the ceiling as on the figure."""

    def __init__(self, server: SmtpServer, pool: int, recipients: list[dict[str, str]]) -> None:
        self.server, self.pool, self.recipients = server, pool, recipients
        self.seconds = self.cpu = self.server_cpu = 0.0
        self.received = self.bytes = 0
        self.rates: list[float] = []

    async def run(self, part: list[dict[str, str]]) -> None:
        self.server.reset()
        server0 = self.server.cpu()
        seconds, cpu = await bare_loop(self.server.port, self.pool, part)
        self.server_cpu += self.server.cpu() - server0
        received, size = self.server.received()
        self.seconds, self.cpu = self.seconds + seconds, self.cpu + cpu
        self.received, self.bytes = self.received + received, self.bytes + size
        self.rates.append(len(part) / seconds)


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
    ov = overrides(database_url(tmp), channels={"email": email}, **queue_overrides(args.queue))
    hub = await start_hub(ov)
    profile_dir = Path(tempfile.mkdtemp(prefix="hub-bench-email-prof-")) if args.profile else None
    try:
        first, _ = await bulk_audience(
            hub, args.count, channel="email", address_sql="'warga' || i || '@mail.example.com'"
        )
        # Published before any worker runs: its fan-out waits in the queue for the first worker, and the
        # bare loop's first half sends the same rendering meanwhile.
        message_id = await publish_free_text(hub)
        recipients = await _recipients(hub, message_id, args.bare_count or args.count, first)
        bare = _Bare(server, args.pool, recipients)
        half = len(recipients) // 2
        print(
            f"   bare loop: {len(recipients):,} messages over {args.pool} connections, half now …", flush=True
        )
        await bare.run(recipients[:half])
        with HubWorkers(ov, count=args.workers, profile_dir=profile_dir) as workers:
            from hub.clock import utcnow

            pids = [proc.pid for proc in workers.procs]
            server.reset()
            cpu0, server0 = cpu_seconds(pids), server.cpu()
            start = utcnow()
            status = await wait_done(hub, message_id, args.count, timeout=args.timeout, label="email (hub)")
            end = await last_sent_at(hub, message_id)
            hub_cpu, hub_server_cpu = cpu_seconds(pids) - cpu0, server.cpu() - server0
        hub_received, hub_bytes = server.received()
        hub_seconds = (end - start).total_seconds()
        profile = profile_summary(workers.profile_files()) if profile_dir else ""
        print("   bare loop: the other half …", flush=True)
        await bare.run(recipients[half:])
        return {
            "hub_rate": args.count / hub_seconds,
            "hub_cpu_ms": hub_cpu / args.count * 1000,
            "hub_server_share": hub_server_cpu / hub_seconds,
            "bare_rate": len(recipients) / bare.seconds,
            "bare_rates": bare.rates,
            "bare_cpu_ms": bare.cpu / len(recipients) * 1000,
            "bare_server_share": bare.server_cpu / bare.seconds,
            "totals": status["totals"],
            "hub_received": hub_received,
            "hub_size": hub_bytes / max(1, hub_received),
            "bare_received": bare.received,
            "bare_size": bare.bytes / max(1, bare.received),
            "bare_count": len(recipients),
            "settings": make_settings(ov).queue,
            "profile": profile,
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
    if out["profile"]:
        print(out["profile"])
    ratio = out["hub_rate"] / out["bare_rate"]
    cpu_ms = out["hub_cpu_ms"]
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
                ceiling_what=f"bare aiosmtplib loop, EmailMessage per recipient, {args.pool} connections",
                ratio=ratio,
                aim=f"≥ {AIM:g}× ceiling",
                vs_aim=ratio / AIM,
                met=ratio >= AIM,
            ),
            Row(
                metric="worker CPU per email (fan-out, claim, build, send, record)",
                value=cpu_ms,
                unit="ms",
                ceiling=out["bare_cpu_ms"],
                ceiling_what="the bare loop's CPU per email (build and send only)",
                ratio=cpu_ms / out["bare_cpu_ms"],
                aim=f"≤ {CPU_AIM_MS:g} ms",
                vs_aim=CPU_AIM_MS / cpu_ms,
                met=cpu_ms <= CPU_AIM_MS,
            ),
        ],
    )
    result.notes.append(
        f"the server counted {out['hub_received']:,} messages from the hub (mean {out['hub_size']:,.0f} "
        f"bytes) and {out['bare_received']:,} from the bare loop (mean {out['bare_size']:,.0f} bytes); "
        f"hub states {dict((k, v) for k, v in out['totals'].items() if v)}"
    )
    result.notes.append(
        "the bare loop ran half before the hub's drain and half after ("
        + " and ".join(f"{r:,.0f}" for r in out["bare_rates"])
        + " emails/s); the hub's time runs from its worker being up (the message waiting in the queue) "
        "to the last sent_at"
    )
    result.notes.append(
        f"SMTP server process CPU: {out['hub_server_share']:.2f} of a core during the hub's drain, "
        f"{out['bare_server_share']:.2f} during the bare loop"
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
    p.add_argument("--profile", action="store_true", help="cProfile the worker processes, print the top")
    return p


def main(argv: list[str] | None = None) -> Result:
    return cli(run, build_parser, argv)


if __name__ == "__main__":
    main()
