"""Planning: time and peak memory to plan 1,000,000 deliveries (``delivery.plan_chunk`` in a loop + enqueue).

One announcement to 1M confirmed subscribers (bulk SQL inserts). The loop is the body of the
``plan_message`` job: ``plan_chunk`` inserts a page of delivery rows, ``Queue.send_many`` enqueues its
send jobs to Redis (no worker runs, so they stay queued). Memory: tracemalloc peak of the loop and the
process's peak RSS (``getrusage`` maxrss). The ceiling is the same audience inserted by one set-based
``INSERT … SELECT`` into a copy of the deliveries table. Aims: under 60 s, under 300 MB.

    python -m benchmarks.planning [--count 1000000] [--no-tracemalloc]
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import time
import tracemalloc
from typing import Any

from benchmarks.common import (
    TOPIC,
    Result,
    Row,
    bulk_audience,
    cli,
    overrides,
    parser,
    queue_overrides,
    sqlite_url,
    start_hub,
    workspace,
)

CHANNELS = "benchmarks.pipeline:channels"
AIM_SECONDS = 60.0
AIM_MB = 300.0


def maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux


async def _floor(hub: Any, message_id: int) -> float:
    """One ``INSERT … SELECT`` of the whole audience into an indexed copy of deliveries (not chunked)."""
    from sqlalchemy import text

    async with hub.db.engine.begin() as conn:
        await conn.execute(text("CREATE TEMP TABLE floor_deliveries AS SELECT * FROM deliveries WHERE 0"))
        await conn.execute(text("CREATE UNIQUE INDEX floor_uq ON floor_deliveries (message_id, endpoint_id)"))
        t0 = time.perf_counter()
        await conn.execute(
            text(
                "INSERT INTO floor_deliveries (message_id, endpoint_id, channel, lane, state, "
                "next_attempt_at, enqueued_at, attempts) "
                "SELECT DISTINCT :m, e.id, e.channel, 'bulk', 'queued', :now, :now, 0 FROM endpoints e "
                "JOIN subscriptions s ON s.endpoint_id = e.id "
                "JOIN message_topics mt ON mt.topic_id = s.topic_id "
                "WHERE mt.message_id = :m AND s.state = 'confirmed' AND e.active ORDER BY e.id"
            ),
            {"m": message_id, "now": "2026-01-01 00:00:00.000000"},
        )
        elapsed = time.perf_counter() - t0
        await conn.execute(text("DROP TABLE floor_deliveries"))
    return elapsed


async def _run(args: argparse.Namespace, ov: dict[str, Any]) -> dict[str, Any]:
    from hub import announcements, delivery

    hub = await start_hub(ov, CHANNELS)
    try:
        t0 = time.perf_counter()
        await bulk_audience(hub, args.count, channel="null", address_sql="'null-' || i")
        setup = time.perf_counter() - t0
        req = announcements.AnnouncementInput(
            template="free_text",
            topics=[TOPIC],
            data={"title": "Pengumuman", "text": "Kantor tutup sementara."},
        )
        draft, _ = await announcements.prepare(hub, req)
        message = await delivery.create_message(hub, draft)
        rss_before = maxrss_mb()
        if args.tracemalloc:
            tracemalloc.start()
        plan_s = enqueue_s = 0.0
        chunks = inserted = jobs = 0
        started = time.perf_counter()
        while True:
            t0 = time.perf_counter()
            chunk = await delivery.plan_chunk(hub, message.id, hub.channels)
            t1 = time.perf_counter()
            if chunk.batches:
                await hub.queue.send_many(chunk.lane, chunk.batches)
            plan_s += t1 - t0
            enqueue_s += time.perf_counter() - t1
            chunks += 1
            inserted += chunk.inserted
            jobs += len(chunk.batches)
            if args.progress and chunks % 50 == 0:
                print(f"   … {inserted:,} planned after {time.perf_counter() - started:.0f} s", flush=True)
            if chunk.done:
                break
        total = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1] / 2**20 if args.tracemalloc else None
        if args.tracemalloc:
            tracemalloc.stop()
        rss = maxrss_mb()
        queued = await hub.queue.depth("bulk")
        floor = await _floor(hub, message.id)
        return {
            "setup": setup,
            "total": total,
            "plan": plan_s,
            "enqueue": enqueue_s,
            "chunks": chunks,
            "inserted": inserted,
            "jobs": jobs,
            "queued": queued,
            "peak": peak,
            "rss": rss,
            "rss_before": rss_before,
            "floor": floor,
            "plan_chunk": hub.settings.queue.plan_chunk,
        }
    finally:
        await hub.close()


def run(args: argparse.Namespace) -> Result:
    if args.quick:
        args.count = min(args.count, 20_000)
    with workspace("planning") as tmp:
        print(f"   planning {args.count:,} deliveries …", flush=True)
        out = asyncio.run(_run(args, overrides(sqlite_url(tmp), **queue_overrides(args.queue))))
    rows = [
        Row(
            metric=f"plan {args.count:,} deliveries (plan_chunk + enqueue)",
            value=out["total"],
            unit="s",
            ceiling=out["floor"],
            ceiling_what="one INSERT…SELECT of the audience",
            ratio=out["total"] / out["floor"],
            aim=f"< {AIM_SECONDS:g} s",
            vs_aim=AIM_SECONDS / out["total"],
            met=out["total"] < AIM_SECONDS,
        ),
        Row(
            metric="peak RSS (getrusage maxrss)",
            value=out["rss"],
            unit="MB",
            ceiling=out["rss_before"],
            ceiling_what="RSS before planning",
            ratio=out["rss"] / out["rss_before"],
            aim=f"< {AIM_MB:g} MB",
            vs_aim=AIM_MB / out["rss"],
            met=out["rss"] < AIM_MB,
        ),
    ]
    if out["peak"] is not None:
        rows.append(
            Row(
                metric="tracemalloc peak during planning",
                value=out["peak"],
                unit="MB",
                aim=f"< {AIM_MB:g} MB",
                vs_aim=AIM_MB / out["peak"],
                met=out["peak"] < AIM_MB,
            )
        )
    result = Result(
        name="planning",
        title=f"Planning: fan-out of one message to {args.count:,} endpoints",
        params={"deliveries": args.count, "plan_chunk": out["plan_chunk"], "tracemalloc": args.tracemalloc},
        rows=rows,
    )
    result.notes.append(
        f"split: plan_chunk {out['plan']:.1f} s, enqueue {out['enqueue']:.1f} s over {out['chunks']} chunks; "
        f"{out['inserted']:,} rows, {out['jobs']:,} send jobs ({out['queued']:,} in Redis); "
        f"audience insert took {out['setup']:.1f} s"
        + (" (tracemalloc on: slows Python code)" if args.tracemalloc else "")
    )
    return result


def build_parser() -> argparse.ArgumentParser:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--count", type=int, default=1_000_000, help="deliveries (one per subscriber)")
    p.add_argument(
        "--no-tracemalloc",
        dest="tracemalloc",
        action="store_false",
        help="skip tracemalloc (it slows the Python side)",
    )
    p.add_argument("--progress", action="store_true", help="print progress every 50 chunks")
    return p


def main(argv: list[str] | None = None) -> Result:
    return cli(run, build_parser, argv)


if __name__ == "__main__":
    main()
