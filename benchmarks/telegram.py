"""Telegram throughput: a broadcast to private chats through two ``hub worker`` processes, into the
loopback Bot API (tests/fakes/telegram_api.py) enforcing Telegram's limits.

    python -m benchmarks.telegram [--quick] [--chats 2000] [--paid-chats 5000] [--margin 0.02]
                                  [--redis-url URL] [--json-out PATH]

Two cases, each in a fresh SQLite database with the sample offices and N private chats subscribed:

- **30/s**: the fake refuses (429) a 31st message within any sliding second and a 2nd to one chat within a
  second. The hub paces with ``safety_margin`` (default 2%: one send per 34 ms). Aim: ≥ 28.5 msg/s
  sustained, zero 429.
- **paid**: ``paid_broadcast = true``, ``paid_rate_per_second = 1000``; the fake accepts 1000/s. The
  ceiling is what the fake accepts from a bare aiohttp loop (two processes × 32 connections, paced at
  1000/s in total, no database, no queue, no PTB) in the same run. Aim: ≥ 80% of that ceiling.

The rate is measured where Telegram would see it: from the fake's own arrival stamps, first accepted
message to last; "sustained" is the middle 80% (without the first and last tenth: ramp-up, stragglers).
Workers are real subprocesses (``python -m hub.cli --settings FILE worker``). Redis is ``--redis-url``
(default ``$HUB_BENCH_REDIS``, which ``benchmarks.all --private-redis`` sets), else a private
``redis-server`` on a free port, so no other test run can flush it mid-measurement. ``BENCH_PROFILE=1``
runs the workers under cProfile (``/tmp/worker-N.prof``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.common import (
    REDIS_ENV,
    Result,
    Row,
    cli,
    parser,
    queue_overrides,
    set_sequences,
    store_for,
    toml_value,
)

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "data" / "offices.toml"
TOPIC = "kota-pekalongan"
FIRST_CHAT = 100_000_001
#: The fake's limit in the 30/s case (Telegram's broadcast limit) and the aims.
NORMAL_LIMIT = 30.0
NORMAL_AIM = 28.5
PAID_AIM = 0.8


# ---------------------------------------------------------------------------------------------------------
# Infrastructure: Redis, settings, worker processes


@contextmanager
def private_redis(url: str | None) -> Iterator[str]:
    if url:
        yield url
        return
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server not found: pass --redis-url")
    import socket

    import redis

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        client = redis.Redis(port=port)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        client.close()
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    raise TypeError(value)


def write_settings(path: Path, sections: dict[str, dict[str, Any]]) -> Path:
    lines = []
    for name, values in sections.items():
        lines.append(f"[{name}]")
        lines += [f"{k} = {_toml(v)}" for k, v in values.items() if v is not None]
        lines.append("")
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


@dataclass
class Case:
    name: str
    chats: int
    fake_limit: float
    telegram: dict[str, Any]
    results: dict[str, Any] = field(default_factory=dict)


def sections(
    db_url: str, redis_url: str, prefix: str, fake: Any, telegram: dict[str, Any], queue: dict[str, Any]
) -> dict[str, Any]:
    return {
        "hub": {
            "public_url": "http://hub.bench",
            "templates_dir": str(ROOT / "templates"),
            "secret_key": "bench-key",
            "locales": ["id", "en"],
        },
        "database": {"url": db_url},
        "redis": {"url": redis_url, "embedded_fallback": False, "key_prefix": prefix},
        "queue": queue,
        "log": {"level": "WARNING"},
        "channels.telegram": {
            "enabled": True,
            "token": fake.token,
            "base_url": fake.base_url,
            "username": fake.bot_username,
            "mode": "polling",
            **telegram,
        },
    }


def start_workers(
    settings_path: Path, directory: Path, count: int
) -> list[tuple[subprocess.Popen[bytes], Path]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}
    procs = []
    for n in range(count):
        log = directory / f"worker-{n}.log"
        with log.open("wb") as out:
            procs.append(
                (
                    subprocess.Popen(
                        [
                            sys.executable,
                            *(
                                ["-m", "cProfile", "-o", f"/tmp/worker-{n}.prof"]
                                if os.environ.get("BENCH_PROFILE")
                                else []
                            ),
                            "-m",
                            "hub.cli",
                            "--settings",
                            str(settings_path),
                            "worker",
                        ],
                        cwd=ROOT,
                        env=env,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                    ),
                    log,
                )
            )
    deadline = time.monotonic() + 30
    while not all("worker started" in log.read_text(errors="replace") for _, log in procs):
        for proc, log in procs:
            if proc.poll() is not None:
                raise RuntimeError(f"worker exited:\n{log.read_text(errors='replace')[-2000:]}")
        if time.monotonic() > deadline:
            raise RuntimeError("workers did not start within 30 s")
        time.sleep(0.05)
    time.sleep(0.5)  # from "started" to polling the queues
    return procs


def stop_workers(procs: list[tuple[subprocess.Popen[bytes], Path]]) -> None:
    for proc, _ in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc, _ in procs:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


# ---------------------------------------------------------------------------------------------------------
# The database: sample offices and N subscribed chats, inserted in bulk


async def prepare_database(settings: Any, chats: int) -> None:
    from sqlalchemy import insert, select

    from hub.context import build_hub
    from hub.regions import load, read_file
    from hub.store.db import Database
    from hub.store.models import Endpoint, Subscriber, Subscription, Topic

    db = Database(settings.database.url, schema=settings.database.schema_name or None)
    await db.migrate()
    await db.dispose()
    hub = await build_hub(settings, with_redis=False)
    try:
        await load(hub, read_file(SAMPLE))
        async with hub.db.transaction() as session:
            topic_id = await session.scalar(select(Topic.id).where(Topic.slug == TOPIC))
            ids = range(1, chats + 1)
            await session.execute(insert(Subscriber), [{"id": i, "locale": "id"} for i in ids])
            await session.execute(
                insert(Endpoint),
                [
                    {
                        "id": i,
                        "subscriber_id": i,
                        "channel": "telegram",
                        "address": str(FIRST_CHAT + i),
                        "kind": "person",
                        "active": True,
                    }
                    for i in ids
                ],
            )
            await session.execute(
                insert(Subscription),
                [{"topic_id": topic_id, "endpoint_id": i, "state": "confirmed"} for i in ids],
            )
            if hub.db.dialect == "postgresql":  # explicit ids leave the sequences behind
                await set_sequences(await session.connection(), ("subscribers", "endpoints"))
    finally:
        await hub.close()


async def publish(settings: Any) -> tuple[int, float]:
    from hub import announcements
    from hub.context import build_hub

    hub = await build_hub(settings)
    try:
        req = announcements.AnnouncementInput(
            template="free_text",
            topics=[TOPIC],
            data={"title": "Jam layanan terbatas", "text": "Pelayanan tatap muka pukul 08.00–11.00 WIB."},
        )
        started = time.monotonic()
        _, message = await announcements.create(hub, req, publish=True)
        assert message is not None
        return message.id, started
    finally:
        await hub.close()


async def final_status(settings: Any, message_id: int) -> dict[str, Any]:
    from hub import delivery
    from hub.context import build_hub

    hub = await build_hub(settings, with_redis=False)
    try:
        return await delivery.status(hub, message_id) or {}
    finally:
        await hub.close()


# ---------------------------------------------------------------------------------------------------------
# Measurements


def busiest_second(times: list[float]) -> int:
    times = sorted(times)
    most, start = 0, 0
    for end, at in enumerate(times):
        while times[start] <= at - 1.0:
            start += 1
        most = max(most, end - start + 1)
    return most


def arrival_stats(times: list[float]) -> dict[str, float]:
    times = sorted(times)
    if len(times) < 2:
        return {"count": len(times)}
    span = times[-1] - times[0]
    trim = len(times) // 10  # the middle 80%: without the ramp-up of the first jobs and the stragglers
    middle = times[trim : len(times) - trim]
    return {
        "count": len(times),
        "span_s": span,
        "rate": (len(times) - 1) / span if span else 0.0,
        "rate_middle": (len(middle) - 1) / (middle[-1] - middle[0]) if len(middle) > 1 else 0.0,
        "busiest_second": busiest_second(times),
    }


def run_case(
    case: Case, redis_url: str, workers: int, directory: Path, queue: dict[str, Any]
) -> dict[str, Any]:
    from hub.settings import load_settings
    from tests.fakes.telegram_api import FakeTelegram

    work = directory / case.name
    work.mkdir()
    stack = ExitStack()  # the database (a PostgreSQL schema is dropped after)
    fake = FakeTelegram(overall_per_second=case.fake_limit).start()
    procs: list[tuple[subprocess.Popen[bytes], Path]] = []
    try:
        for n in range(1, case.chats + 1):
            fake.add_private(FIRST_CHAT + n)
        prefix = f"bench{uuid.uuid4().hex[:8]}"
        store = stack.enter_context(store_for(work))
        conf = sections(store.url, redis_url, prefix, fake, case.telegram, queue)
        conf["database"]["schema"] = store.schema or ""
        path = write_settings(work / "settings.toml", conf)
        settings = load_settings(path)
        asyncio.run(prepare_database(settings, case.chats))
        procs = start_workers(path, work, workers)
        message_id, published = asyncio.run(publish(settings))
        deadline = time.monotonic() + max(60.0, case.chats / 20)
        while len(fake.messages()) < case.chats:
            for proc, log in procs:
                if proc.poll() is not None:
                    raise RuntimeError(f"worker exited:\n{log.read_text(errors='replace')[-2000:]}")
            if time.monotonic() > deadline:
                break
            time.sleep(0.2)
        stop_workers(procs)
        messages = fake.messages()
        stats = arrival_stats([m.at for m in messages])
        last = max((m.at for m in messages), default=published)
        per_chat = {}
        for m in messages:
            per_chat[m.chat_id] = per_chat.get(m.chat_id, 0) + 1
        status = asyncio.run(final_status(settings, message_id))
        return {
            **stats,
            "publish_to_last_s": last - published,
            "too_many_requests": fake.too_many_requests,
            "duplicates": sum(1 for n in per_chat.values() if n > 1),
            "missing": case.chats - len(per_chat),
            "paid_flag": all(m.params.get("paid") for m in messages) if messages else False,
            "deliveries": status.get("totals", {}),
        }
    finally:
        if procs:
            stop_workers(procs)
        fake.stop()
        stack.close()


# ---------------------------------------------------------------------------------------------------------
# The ceiling: a bare httpx loop in two processes, paced at the fake's limit


def bare_sender(
    url: str, first: int, count: int, step: int, rate: float, connections: int, start_at: float
) -> int:
    """Send ``count`` messages (chats ``first``, ``first + step``, ...) as fast as ``rate`` allows."""
    import aiohttp

    async def run() -> int:
        accepted = 0
        interval = 1.0 / rate
        next_slot = start_at
        chats = [first + step * n for n in range(count)]
        connector = aiohttp.TCPConnector(limit=connections)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def one() -> None:
                nonlocal accepted, next_slot
                while chats:
                    chat = chats.pop()
                    slot = next_slot  # pace locally, one send per interval: no bursts
                    next_slot = max(next_slot, time.time()) + interval
                    delay = slot - time.time()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    body = {
                        "chat_id": chat,
                        "text": "Jam layanan terbatas.",
                        "parse_mode": "HTML",
                        "allow_paid_broadcast": True,
                    }
                    async with session.post(url, json=body) as response:
                        await response.read()
                        accepted += response.status == 200

            await asyncio.gather(*(one() for _ in range(connections)))
        return accepted

    return asyncio.run(run())


def measure_ceiling(chats: int, limit: float, processes: int = 2, connections: int = 32) -> dict[str, Any]:
    """What the fake accepts from a bare client: aiohttp in ``processes`` processes, paced at ``limit``.

    aiohttp, not httpx: on this kind of box httpx slows down as connections are added (about 40 requests/s
    at 64 connections against the same server), so it would measure itself, not the server.
    """
    from tests.fakes.telegram_api import FakeTelegram

    fake = FakeTelegram(overall_per_second=limit).start()
    try:
        for n in range(1, chats + 1):
            fake.add_private(FIRST_CHAT + n)
        url = f"{fake.base_url}{fake.token}/sendMessage"
        start_at = time.time() + 3.0  # every process starts together, after its imports
        procs = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "benchmarks.telegram",
                    "--bare-sender",
                    url,
                    str(FIRST_CHAT + 1 + k),
                    str(len(range(k, chats, processes))),
                    str(processes),
                    str(limit / processes),
                    str(connections),
                    repr(start_at),
                ],
                cwd=ROOT,
            )
            for k in range(processes)
        ]
        for proc in procs:
            try:
                proc.wait(timeout=max(120.0, chats / 20))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        stats = arrival_stats([m.at for m in fake.messages()])
        return {**stats, "too_many_requests": fake.too_many_requests}
    finally:
        fake.stop()


# ---------------------------------------------------------------------------------------------------------
# Result


def result_of(results: dict[str, Any], args: argparse.Namespace) -> Result:
    """The figures as rows beside their ceilings; sustained = the middle 80%, for the hub and the ceiling."""
    rows: list[Row] = []
    notes: list[str] = []
    normal, paid, ceiling = results.get("normal"), results.get("paid"), results.get("ceiling")
    if normal is not None:
        rate = normal.get("rate_middle", 0.0)
        rows.append(
            Row(
                metric=f"30/s case: msg/s sustained (middle 80%), `safety_margin` {args.margin:g} "
                f"(one send per {normal['interval_ms']} ms)",
                value=rate,
                unit="msg/s",
                ceiling=NORMAL_LIMIT,
                ceiling_what="the fake's limit, as Telegram's: 429 beyond 30 in any second",
                ratio=rate / NORMAL_LIMIT,
                aim=f"≥ {NORMAL_AIM} msg/s",
                vs_aim=rate / NORMAL_AIM,
                met=rate >= NORMAL_AIM,
            )
        )
        rows.append(
            Row(
                metric="30/s case: 429 responses from the fake",
                value=normal["too_many_requests"],
                unit="× 429",
                aim="0",
                met=normal["too_many_requests"] == 0,
            )
        )
        notes.append(_case_note("30/s case", normal))
    if paid is not None and ceiling is not None:
        ratio = paid["rate_middle"] / ceiling["rate_middle"] if ceiling.get("rate_middle") else 0.0
        rows.append(
            Row(
                metric="paid case (`paid_broadcast`, 1000/s): msg/s sustained (middle 80%)",
                value=paid.get("rate_middle", 0.0),
                unit="msg/s",
                ceiling=ceiling.get("rate_middle"),
                ceiling_what="bare aiohttp loop into the same fake, 2 processes × 32 connections, 1000/s",
                ratio=ratio,
                aim=f"≥ {PAID_AIM:.0%} of ceiling",
                vs_aim=ratio / PAID_AIM,
                met=ratio >= PAID_AIM,
            )
        )
        notes.append(_case_note("paid case", paid))
        notes.append(
            f"ceiling (bare aiohttp loop): {ceiling['count']:,} messages accepted, "
            f"{ceiling['rate']:.0f} msg/s first to last, busiest second {ceiling['busiest_second']}, "
            f"{ceiling['too_many_requests']} × 429 "
            "(its local pacing does not know the fake's sliding window; no retries)"
        )
    return Result(
        name="telegram",
        title="Telegram: two hub workers into the loopback Bot API, at 30/s and paid at 1000/s",
        params={
            "chats": args.chats,
            "paid_chats": args.paid_chats,
            "worker_processes": args.workers,
            "safety_margin": args.margin,
            "paid_safety_margin": "adapter default" if args.paid_margin is None else args.paid_margin,
            "poll_delay": results.get("poll_delay"),
        },
        rows=rows,
        notes=notes,
    )


def _case_note(label: str, r: dict[str, Any]) -> str:
    states = {k: v for k, v in r.get("deliveries", {}).items() if v}
    return (
        f"{label}: {r['count']:,} messages accepted, {r.get('rate', 0):.1f} msg/s first to last, "
        f"busiest second {r.get('busiest_second', 0)}, {r['too_many_requests']} × 429, "
        f"duplicates / missing {r['duplicates']} / {r['missing']}, "
        f"publish → last {r['publish_to_last_s']:.1f} s; hub states {states}"
    )


def run(args: argparse.Namespace) -> Result:
    args.chats = args.chats or (300 if args.quick else 2000)
    args.paid_chats = args.paid_chats or (2000 if args.quick else 5000)

    from channels.telegram import _rate

    interval_ms = round(_rate("k", 30, 1.0, args.margin).period * 1000)
    queue = {"poll_delay": 0.01, "lease_seconds": 30}
    queue.update((k, toml_value(v)) for k, v in queue_overrides(args.queue).items())
    results: dict[str, Any] = {"poll_delay": queue["poll_delay"]}
    with (
        tempfile.TemporaryDirectory(prefix="bench-telegram-") as tmp,
        private_redis(args.redis_url) as redis_url,
    ):
        directory = Path(tmp)
        extra = {} if args.pacing_waiters is None else {"pacing_waiters": args.pacing_waiters}
        if args.only in (None, "normal"):
            print(
                f"   30/s: {args.chats} chats, {args.workers} workers, safety_margin {args.margin} "
                f"({interval_ms} ms)",
                flush=True,
            )
            conf = {"safety_margin": args.margin, "chat_safety_margin": 0.2, **extra}
            case = Case("normal", args.chats, NORMAL_LIMIT, conf)
            results["normal"] = run_case(case, redis_url, args.workers, directory, queue)
            results["normal"]["interval_ms"] = interval_ms
        if args.only in (None, "paid"):
            print(f"   ceiling: bare aiohttp loop, {args.paid_chats} chats at 1000/s", flush=True)
            results["ceiling"] = measure_ceiling(args.paid_chats, 1000)
            print(f"   paid: {args.paid_chats} chats, {args.workers} workers", flush=True)
            conf = {"paid_broadcast": True, "paid_rate_per_second": 1000, "chat_safety_margin": 0.2, **extra}
            if args.paid_margin is not None:
                conf["safety_margin"] = args.paid_margin
            paid = Case("paid", args.paid_chats, 1000, conf)
            results["paid"] = run_case(paid, redis_url, args.workers, directory, queue)
    return result_of(results, args)


def build_parser() -> argparse.ArgumentParser:
    p = parser(__doc__.splitlines()[0])
    p.add_argument(
        "--chats", type=int, default=None, help="chats for the 30/s case (default 2000; --quick 300)"
    )
    p.add_argument(
        "--paid-chats", type=int, default=None, help="chats for the paid case (default 5000; --quick 2000)"
    )
    p.add_argument("--margin", type=float, default=0.02, help="the adapter's safety_margin at 30/s")
    p.add_argument(
        "--paid-margin",
        type=float,
        default=None,
        help="the adapter's safety_margin in the paid case (default: the adapter's own, 0.02)",
    )
    p.add_argument("--workers", type=int, default=2, help="hub worker processes")
    p.add_argument(
        "--pacing-waiters",
        type=int,
        default=None,
        help="the adapter's pacing_waiters (default: the adapter's own)",
    )
    p.add_argument("--only", choices=("normal", "paid"), default=None, help="run one case only")
    p.add_argument(
        "--redis-url",
        default=os.environ.get(REDIS_ENV),
        help=f"use this Redis (default ${REDIS_ENV}; unset: a private redis-server of its own)",
    )
    p.add_argument("--bare-sender", nargs=7, metavar="ARG", help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> Result | None:
    args = build_parser().parse_args(argv)
    if args.bare_sender:  # one process of the ceiling's bare loop (see measure_ceiling)
        url, first, count, step, rate, connections, start_at = args.bare_sender
        bare_sender(url, int(first), int(count), int(step), float(rate), int(connections), float(start_at))
        return None
    return cli(run, build_parser, argv)


if __name__ == "__main__":
    main()
