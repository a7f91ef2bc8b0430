"""SMS throughput: the hub into a real Kannel against a bare httpx loop into the same Kannel's sendsms.

Kannel (bearerbox + smsbox, fakesmsc as the SMSC, all on 127.0.0.1) is started once for both runs. The
hub runs ``--count`` deliveries through fan-out, queue, claim, send (the SMS channel's Kannel driver,
``concurrency`` sends in flight per worker process, all batches together) and record, in ``--workers``
worker processes; its HTTP API serves the delivery reports Kannel sends back (``dlr-url``) in this
process. The bare loop sends the same text to the same numbers with the same sendsms parameters
(``dlr-mask`` 31 and a ``dlr-url`` to a small sink, so Kannel does the same work) from
``--bare-concurrency`` httpx tasks; the best of them is the ceiling. Rate = messages accepted by Kannel
(HTTP 202) per second: for the hub, from publish to the last recorded send; for the loop, its wall
time. Aim: the hub at >= 80% of the bare loop.

    python -m benchmarks.sms [--quick] [--count 5000] [--workers 1] [--concurrency 16]
        [--bare-concurrency 16,64] [--json-out PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from benchmarks.common import (
    Result,
    Row,
    bulk_audience,
    cli,
    database_url,
    fmt,
    make_settings,
    overrides,
    parser,
    start_hub,
    wait_done,
    workspace,
)
from benchmarks.workers import HubWorkers

AIM = 0.8
SENDER = "DUKCAPIL"
TEXT = (
    "Dindukcapil Kota Pekalongan: layanan tatap muka dibatasi. Senin-Kamis 08.00-11.00, "
    "Jumat 08.00-10.00 WIB. "
    "Kuota 50 orang/hari. Permohonan KK dan KTP-el lewat WhatsApp."
)
#: Numbers ``+6281234000001`` … (made up), the same for the hub's audience and the bare loop.
ADDRESS_SQL = "'+628123' || (4000000 + i)"


def number(i: int) -> str:
    return f"+628123{4_000_000 + i}"


# ---------------------------------------------------------------------------------------------------------
# Servers in this process: the hub's API (delivery reports) and a sink for the bare loop's reports


class _Uvicorn:
    def __init__(self, app: Any, port: int) -> None:
        import uvicorn

        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=2,
        )
        self.server = uvicorn.Server(config)
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> _Uvicorn:
        self.task = asyncio.create_task(self.server.serve())
        deadline = time.monotonic() + 10
        while not self.server.started:
            if self.task.done() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            await asyncio.sleep(0.01)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.should_exit = True
        if self.task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.task, 10)


def _sink_app(counter: dict[str, int]) -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        counter["calls"] += 1
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]}
        )
        await send({"type": "http.response.body", "body": b"ok"})

    return app


# ---------------------------------------------------------------------------------------------------------
# The bare loop


async def bare_loop(
    kannel: Any, count: int, concurrency: int, dlr_base: str, coding: str
) -> tuple[float, int]:
    """``count`` sendsms calls from ``concurrency`` tasks over one httpx pool; returns (messages/s, 202s)."""
    import httpx

    url = f"{kannel.sendsms_url}/cgi-bin/sendsms"
    todo = iter(range(1, count + 1))
    accepted = 0

    async def loop(client: httpx.AsyncClient) -> None:
        nonlocal accepted
        for i in todo:
            params = {
                "username": kannel.username,
                "password": kannel.password,
                "to": number(i),
                "text": TEXT,
                "charset": "UTF-8",
                "coding": coding,
                "from": SENDER,
                "dlr-mask": "31",
                "dlr-url": f"{dlr_base}/dlr?kind=dlr&d={i}&t={'0' * 32}&s=%d",
            }
            response = await client.get(url, params=params)
            accepted += response.status_code == 202

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:
        started = time.perf_counter()
        await asyncio.gather(*(loop(client) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return count / elapsed, accepted


async def wait_smsc(kannel: Any, parts: int, timeout: float) -> float:
    """Seconds until the SMSC (fakesmsc) holds ``parts`` parts, measured from now."""
    started = time.monotonic()
    while len(kannel.received()) < parts:
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"fakesmsc got {len(kannel.received())} of {parts} parts")
        await asyncio.sleep(0.02)
    return time.monotonic() - started


# ---------------------------------------------------------------------------------------------------------


async def _run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    from channels.sms.segments import analyze
    from hub.api.app import create_app
    from hub.clock import utcnow
    from tests.services.kannel import free_port, start_kannel

    api_port, sink_port = free_port(), free_port()
    info = analyze(TEXT)
    coding = "2" if info.encoding == "UCS-2" else "0"
    kannel = start_kannel(
        tmp / "kannel", mo_url=f"http://127.0.0.1:{api_port}/v1/channels/sms/webhook?kind=mo"
    )
    try:
        sms = {
            "enabled": True,
            "sender": SENDER,
            "dlr_secret": "benchmark-dlr-secret",
            "concurrency": args.concurrency,
            "transliterate": True,
            "gateways": [kannel.gateway_settings(rate_per_second=1_000_000, timeout=30.0)],
        }
        ov = overrides(database_url(tmp), channels={"sms": sms})
        ov["hub"]["public_url"] = f"http://127.0.0.1:{api_port}"
        hub = await start_hub(ov)
        try:
            await bulk_audience(hub, args.count, channel="sms", address_sql=ADDRESS_SQL)
            async with _Uvicorn(create_app(hub), api_port):
                with HubWorkers(ov, count=args.workers) as workers:
                    start = utcnow()
                    message_id = await _publish(hub)
                    status = await wait_done(
                        hub, message_id, args.count, timeout=args.timeout, label="sms (hub)"
                    )
                    end = await _last_sent(hub, message_id)
                    workers.check()
                    smsc_wait = await wait_smsc(kannel, args.count * info.segments, args.timeout)
                    await asyncio.sleep(1.0)  # the last delivery reports
                    status = await _status(hub, message_id)
            hub_rate = args.count / (end - start).total_seconds()
            hub_parts = len(kannel.received())
        finally:
            await hub.close()

        bare: dict[int, float] = {}
        sink_calls = {"calls": 0}
        async with _Uvicorn(_sink_app(sink_calls), sink_port):
            for concurrency in args.bare_concurrency:
                kannel.clear()
                print(f"   bare loop: {args.count:,} sendsms calls from {concurrency} tasks …", flush=True)
                rate, accepted = await bare_loop(
                    kannel, args.count, concurrency, f"http://127.0.0.1:{sink_port}", coding
                )
                assert accepted == args.count, f"Kannel accepted {accepted} of {args.count}"
                await wait_smsc(kannel, args.count * info.segments, args.timeout)
                bare[concurrency] = rate
    finally:
        kannel.stop()
    best = max(bare, key=lambda c: bare[c])
    return {
        "hub_rate": hub_rate,
        "bare": bare,
        "best": best,
        "totals": status["totals"],
        "segments": info.segments,
        "encoding": info.encoding,
        "hub_parts": hub_parts,
        "smsc_lag": smsc_wait,
        "settings": make_settings(ov).queue,
    }


async def _publish(hub: Any) -> int:
    from hub import announcements

    req = announcements.AnnouncementInput(
        template="free_text", topics=["kota-pekalongan"], data={"title": "Layanan dibatasi", "text": TEXT}
    )
    _, message = await announcements.create(hub, req, publish=True)
    assert message is not None
    return int(message.id)


async def _status(hub: Any, message_id: int) -> dict[str, Any]:
    from hub import delivery

    status = await delivery.status(hub, message_id)
    assert status is not None
    return status


async def _last_sent(hub: Any, message_id: int) -> datetime:
    """The last moment a send was recorded (``sent_at``; a report may have moved the row on since)."""
    from sqlalchemy import func, select

    from hub.store.models import Delivery

    async with hub.db.session() as session:
        value = await session.scalar(
            select(func.max(Delivery.sent_at)).where(Delivery.message_id == message_id)
        )
    assert value is not None, "no delivery has a sent_at"
    return value


def run(args: argparse.Namespace) -> Result:
    if args.quick:
        args.count = min(args.count, 1000)
    with workspace("sms") as tmp:
        print(
            f"   hub: {args.count:,} SMS, concurrency {args.concurrency}, {args.workers} worker(s) …",
            flush=True,
        )
        out = asyncio.run(_run(args, tmp))
    ceiling = out["bare"][out["best"]]
    ratio = out["hub_rate"] / ceiling
    q = out["settings"]
    result = Result(
        name="sms",
        title="SMS: hub vs bare httpx loop into the same Kannel sendsms",
        params={
            "messages": args.count,
            "worker_processes": args.workers,
            "channel_concurrency": args.concurrency,
            "batch_size": q.batch_size,
            "bulk_jobs": q.bulk_jobs,
            "poll_delay": q.poll_delay,
            "encoding": out["encoding"],
            "segments": out["segments"],
        },
        rows=[
            Row(
                metric="messages/s accepted by Kannel, publish -> last send recorded",
                value=out["hub_rate"],
                unit="msg/s",
                ceiling=ceiling,
                ceiling_what=f"bare httpx loop, {out['best']} tasks",
                ratio=ratio,
                aim=f">= {AIM:.0%} of ceiling",
                vs_aim=ratio / AIM,
                met=ratio >= AIM,
            )
        ],
    )
    loops = ", ".join(f"{c} tasks: {fmt(r)} msg/s" for c, r in sorted(out["bare"].items()))
    result.notes.append(f"bare loop by concurrency: {loops}")
    result.notes.append(
        f"hub states after the run {dict((k, v) for k, v in out['totals'].items() if v)}; fakesmsc got "
        f"{out['hub_parts']:,} parts from the hub run, the last {out['smsc_lag']:.2f} s after the last send"
    )
    return result


def build_parser() -> argparse.ArgumentParser:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--count", type=int, default=5000, help="SMS through the hub and through the bare loop")
    p.add_argument("--workers", type=int, default=1, help="hub worker processes")
    p.add_argument(
        "--concurrency", type=int, default=16, help="the SMS channel's sends in flight per worker process"
    )
    p.add_argument(
        "--bare-concurrency",
        type=lambda s: [int(x) for x in s.split(",") if x],
        default=[16, 64],
        help="comma-separated task counts for the bare loop; the best is the ceiling",
    )
    p.add_argument("--timeout", type=float, default=600, help="give up after this many seconds")
    return p


def main(argv: list[str] | None = None) -> Result:
    return cli(run, build_parser, argv)


if __name__ == "__main__":
    main()
