"""Matrix throughput: messages/s into a local Synapse through the hub vs a bare matrix-nio loop, same run.

Synapse (from ``scripts/install-synapse.sh``, SQLite, loopback) serves ``--rooms`` rooms the bot is in;
the bot is exempt from Synapse's message limits (admin API ``override_ratelimit``), as a production bot
should be. The hub sends ``--rounds`` announcements to every room: publish, fan-out, queue, claim, pacing
in Redis, ``MatrixChannel.send`` (transaction id per delivery, fixed device, crypto store) and recording,
in ``--workers`` ``hub worker`` processes. The bare loop sends the same number of messages with the same
content (the hub's own Matrix rendering) with ``AsyncClient.room_send``, at each ``--bare-concurrency``
(tasks in flight), before and after the hub; the best of these runs is the ceiling. Aim: the hub at ≥ 80%
of it.

    python -m benchmarks.matrix [--rooms 100] [--rounds 10] [--concurrency 8] [--workers 1] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

from benchmarks.common import (
    TOPIC,
    Result,
    Row,
    cli,
    database_url,
    last_sent_at,
    make_settings,
    overrides,
    parser,
    publish_free_text,
    start_hub,
    wait_done,
    workspace,
)
from benchmarks.workers import HubWorkers

AIM = 0.8
DEVICE = "HUBBENCH"


# ---------------------------------------------------------------------------------------------------------
# The bare loop


async def bare_loop(
    homeserver: str,
    user_id: str,
    password: str,
    rooms: list[str],
    rounds: int,
    content: dict[str, Any],
    concurrency: int,
) -> float:
    """``rounds`` messages to every room with plain ``room_send`` on ``concurrency`` tasks; messages/s."""
    from nio import AsyncClient, AsyncClientConfig, LoginResponse, RoomSendResponse

    config = AsyncClientConfig(max_limit_exceeded=0, max_timeouts=2, request_timeout=30)
    client = AsyncClient(homeserver, user_id, device_id=f"BARE{uuid.uuid4().hex[:6].upper()}", config=config)
    try:
        login = await client.login(password)
        assert isinstance(login, LoginResponse), login
        # Round by round, as the hub sends a broadcast after another: the tasks mostly meet different rooms.
        todo = iter([(n, room) for n in range(rounds) for room in rooms])
        run = uuid.uuid4().hex[:8]
        sent = 0

        async def loop() -> None:
            nonlocal sent
            for n, room in todo:
                resp = await client.room_send(room, "m.room.message", content, tx_id=f"bare-{run}-{n}-{room}")
                assert isinstance(resp, RoomSendResponse), resp
                sent += 1

        started = time.perf_counter()
        await asyncio.gather(*(loop() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
        assert sent == rounds * len(rooms)
        return sent / elapsed
    finally:
        await client.close()


async def _content(hub: Any, message_id: int) -> dict[str, Any]:
    """The Matrix event content the hub's adapter sends for ``message_id`` (its stored rendering)."""
    from sqlalchemy import select

    from channels.base import Content
    from channels.matrix import render
    from hub.store.models import Rendering

    async with hub.db.session() as session:
        r = await session.scalar(
            select(Rendering).where(
                Rendering.message_id == message_id, Rendering.channel == "matrix", Rendering.locale == "id"
            )
        )
    assert r is not None
    body, formatted = render(Content(text=r.text, html=r.html))
    return {
        "msgtype": "m.notice",
        "body": body,
        "format": "org.matrix.custom.html",
        "formatted_body": formatted,
    }


# ---------------------------------------------------------------------------------------------------------


async def _run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    from hub import subscriptions
    from hub.clock import utcnow
    from tests.services.synapse import Person, run_synapse

    (tmp / "synapse").mkdir()
    with run_synapse(tmp / "synapse") as synapse:
        bot = synapse.register("dukcapil-bench")
        synapse.override_ratelimit(bot.user_id, 0, 0)
        owner = Person(synapse, bot)
        print(f"   creating {args.rooms} rooms …", flush=True)
        rooms = [await owner.create_room(name=f"Kelurahan {n}") for n in range(args.rooms)]
        await owner.http.aclose()
        matrix = {
            "enabled": True,
            "homeserver": synapse.base_url,
            "user_id": bot.user_id,
            "password": bot.password,
            "device_id": DEVICE,
            "store_path": str(tmp / "store"),
            "rate_per_second": args.rate,
            "concurrency": args.concurrency,
        }
        ov = overrides(database_url(tmp), channels={"matrix": matrix})
        hub = await start_hub(ov)
        try:
            for room_id in rooms:
                await subscriptions.subscribe(hub, TOPIC, "matrix", room_id, confirmed=True, kind="group")
            with HubWorkers(ov, count=args.workers) as workers:
                # Warm-up: the worker logs in, uploads its keys and syncs the rooms' state once.
                warm = await publish_free_text(hub, "Pemanasan")
                await wait_done(hub, warm, len(rooms), timeout=args.timeout, label="warm-up")
                content = await _content(hub, warm)
                total = len(rooms) * args.rounds
                bare: list[tuple[str, int, float]] = []

                async def bare_run(label: str) -> None:
                    for tasks in args.bare_concurrency:
                        print(f"   bare loop ({label}): {total:,} messages, {tasks} tasks …", flush=True)
                        rate = await bare_loop(
                            synapse.base_url, bot.user_id, bot.password, rooms, args.rounds, content, tasks
                        )
                        bare.append((label, tasks, rate))

                await bare_run("before")
                print(f"   hub: {args.rounds} announcements to {len(rooms)} rooms …", flush=True)
                start = utcnow()
                ids = [await publish_free_text(hub, f"Pengumuman {n + 1}") for n in range(args.rounds)]
                statuses = [
                    await wait_done(hub, m, len(rooms), timeout=args.timeout, label="hub") for m in ids
                ]
                end = max([await last_sent_at(hub, m) for m in ids])
                workers.check()
                hub_rate = total / (end - start).total_seconds()
                await bare_run("after")
        finally:
            await hub.close()
    sent = sum(s["totals"]["sent"] for s in statuses)
    assert sent == total, [s["totals"] for s in statuses]
    from channels.matrix import MatrixChannel

    queue = make_settings(ov).queue
    return {
        "hub_rate": hub_rate,
        "bare": bare,
        "total": total,
        "settings": queue,
        # claims are capped by the adapter's batch size
        "batch_size": min(queue.batch_size, MatrixChannel.capabilities.batch_size),
        "body_chars": len(content["body"]),
    }


def run(args: argparse.Namespace) -> Result:
    if args.quick:
        args.rooms, args.rounds = min(args.rooms, 20), min(args.rounds, 5)
    with workspace("matrix") as tmp:
        out = asyncio.run(_run(args, tmp))
    best = max(out["bare"], key=lambda b: b[2])
    ceiling = best[2]
    ratio = out["hub_rate"] / ceiling
    q = out["settings"]
    result = Result(
        name="matrix",
        title="Matrix: hub vs bare matrix-nio loop into a local Synapse",
        params={
            "rooms": args.rooms,
            "rounds": args.rounds,
            "messages": out["total"],
            "adapter_concurrency": args.concurrency,
            "bare_concurrency": ",".join(map(str, args.bare_concurrency)),
            "worker_processes": args.workers,
            "batch_size": out["batch_size"],
            "bulk_jobs": q.bulk_jobs,
        },
        rows=[
            Row(
                metric="messages/s, publish → all sent",
                value=out["hub_rate"],
                unit="messages/s",
                ceiling=ceiling,
                ceiling_what=f"best bare room_send loop ({best[1]} tasks, {best[0]} the hub)",
                ratio=ratio,
                aim=f"≥ {AIM:.0%} of ceiling",
                vs_aim=ratio / AIM,
                met=ratio >= AIM,
            )
        ],
    )
    result.notes.append(
        "bare loop: "
        + ", ".join(f"{n} tasks {label} the hub {rate:.0f}/s" for label, n, rate in out["bare"])
        + "; "
        f"body {out['body_chars']} characters plus HTML; Synapse on SQLite; bot exempt from rate limits, "
        f"hub pacing at {args.rate:g}/s"
    )
    return result


def build_parser() -> argparse.ArgumentParser:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--rooms", type=int, default=100, help="rooms (endpoints), each gets every announcement")
    p.add_argument("--rounds", type=int, default=10, help="announcements, each to every room")
    p.add_argument("--concurrency", type=int, default=8, help="the adapter's rooms in flight per batch")
    p.add_argument(
        "--bare-concurrency",
        type=lambda v: [int(x) for x in v.split(",")],
        default=[8, 32],
        help="tasks of the bare loop, comma-separated: one run each, before and after the hub",
    )
    p.add_argument("--rate", type=float, default=10_000, help="the hub's pacing, per second")
    p.add_argument("--workers", type=int, default=1, help="hub worker processes")
    p.add_argument("--timeout", type=float, default=1800, help="give up after this many seconds")
    return p


def main(argv: list[str] | None = None) -> Result:
    return cli(run, build_parser, argv)


if __name__ == "__main__":
    main()
