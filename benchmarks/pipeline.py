"""Pipeline throughput: deliveries/s through fan-out, queue, claim and record, into a do-nothing channel.

100,000 confirmed subscribers (bulk SQL inserts) on a channel ``null`` whose adapter says ``Sent()`` at
once; one free-text announcement published to them; the clock runs from publish until every delivery is
``sent``. The ceiling is a plain arq worker on the same Redis running no-op jobs (same ``poll_delay`` and
``max_jobs``), in as many processes as the hub gets, run before and after the hub (the mean is the
ceiling). Aim: deliveries/s at least 5x that job rate. The notes give the hub workers' CPU per delivery.

    python -m benchmarks.pipeline [--count 100000] [--workers 1] [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import queue as queue_mod
import tempfile
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from benchmarks.common import (
    REDIS_URL,
    Result,
    Row,
    bulk_audience,
    cli,
    database_url,
    flush_redis,
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
from channels.base import Channel, Outbound, Outcome, Pacer, Sent

CHANNELS = "benchmarks.pipeline:channels"
AIM = 5.0


class NullChannel(Channel):
    """Sends nothing: every item is ``Sent()`` at once, so only the hub's own costs are measured."""

    name = "null"
    batch_size = 100

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any], *, public_url: str) -> NullChannel:
        return cls()

    def normalize_address(self, raw: str) -> str:
        return raw.strip()

    async def send(self, items: Sequence[Outbound], pacer: Pacer) -> AsyncIterator[tuple[int, Outcome]]:
        for item in items:
            yield item.delivery_id, Sent()


def channels() -> dict[str, Channel]:
    return {"null": NullChannel()}


# ---------------------------------------------------------------------------------------------------------
# Ceiling: a plain arq worker running no-op jobs


async def _noop(ctx: dict[str, Any]) -> None:
    return None


def _plain_process(queue_name: str, poll_delay: float, max_jobs: int, go: Any, ready: Any, done: Any) -> None:
    asyncio.run(_plain(queue_name, poll_delay, max_jobs, go, ready, done))


async def _plain(queue_name: str, poll_delay: float, max_jobs: int, go: Any, ready: Any, done: Any) -> None:
    from arq.connections import ArqRedis
    from arq.worker import Worker, func
    from redis.asyncio import ConnectionPool

    redis = ArqRedis(connection_pool=ConnectionPool.from_url(REDIS_URL))
    await redis.ping()
    worker = Worker(
        functions=[func(_noop, name="noop", keep_result=0, timeout=600)],
        redis_pool=redis,
        queue_name=queue_name,
        max_jobs=max_jobs,
        poll_delay=poll_delay,
        handle_signals=False,
        keep_result=0,
        job_timeout=600,
        max_tries=1000,
        log_results=False,
        burst=True,
    )
    ready.put(True)
    while not go.is_set():
        await asyncio.sleep(0.005)
    started = time.time()
    await worker.main()
    done.put((started, time.time(), worker.jobs_complete))
    await redis.aclose()


async def _enqueue_noops(count: int, queue_name: str) -> float:
    from arq.connections import ArqRedis
    from redis.asyncio import ConnectionPool

    redis = ArqRedis(connection_pool=ConnectionPool.from_url(REDIS_URL))
    started = time.perf_counter()
    for start in range(0, count, 500):
        await asyncio.gather(
            *(
                redis.enqueue_job("noop", _queue_name=queue_name)
                for _ in range(start, min(count, start + 500))
            )
        )
    elapsed = time.perf_counter() - started
    await redis.aclose()
    return count / elapsed


def plain_arq_rate(jobs: int, *, poll_delay: float, max_jobs: int, processes: int = 1) -> tuple[float, float]:
    """No-op jobs/s of plain arq workers in ``processes`` processes; also returns the enqueue rate."""
    flush_redis()
    queue_name = "bench:plain"
    enqueue_rate = asyncio.run(_enqueue_noops(jobs, queue_name))
    ctx = mp.get_context("spawn")
    go, ready, done = ctx.Event(), ctx.Queue(), ctx.Queue()
    procs = [
        ctx.Process(
            target=_plain_process, args=(queue_name, poll_delay, max_jobs, go, ready, done), daemon=True
        )
        for _ in range(processes)
    ]
    for proc in procs:
        proc.start()
    for _ in procs:
        ready.get(timeout=60)
    go.set()
    results = []
    for _ in procs:
        try:
            results.append(done.get(timeout=600))
        except queue_mod.Empty:
            break
    for proc in procs:
        proc.join(timeout=10)
        if proc.is_alive():
            proc.terminate()
    flush_redis()
    if len(results) != processes:
        raise RuntimeError("a plain arq worker did not finish")
    completed = sum(r[2] for r in results)
    elapsed = max(r[1] for r in results) - min(r[0] for r in results)
    return completed / elapsed, enqueue_rate


# ---------------------------------------------------------------------------------------------------------
# The hub


def worker_cpu(pids: list[int]) -> float:
    """CPU seconds (user + system, all threads) the processes have used so far."""
    import psutil

    total = 0.0
    for pid in pids:
        times = psutil.Process(pid).cpu_times()
        total += times.user + times.system
    return total


def postgres_cpu() -> float | None:
    """CPU seconds the PostgreSQL server processes of this machine have used so far (None: none seen).

    All of them: another client of the same server in the same seconds counts too.
    """
    import psutil

    total, seen = 0.0, False
    for proc in psutil.process_iter(["name"]):
        if (proc.info["name"] or "").startswith("postgres"):
            try:
                times = proc.cpu_times()
            except psutil.Error:  # ended meanwhile, or not ours to read
                continue
            total, seen = total + times.user + times.system, True
    return total if seen else None


async def _hub_run(args: argparse.Namespace, ov: dict[str, Any], scratch: Path) -> dict[str, Any]:
    hub = await start_hub(ov, CHANNELS)
    try:
        t0 = time.perf_counter()
        await bulk_audience(hub, args.count, channel="null", address_sql="'null-' || i")
        setup = time.perf_counter() - t0
        profile_dir = scratch if args.profile else None
        breakdown_dir = scratch if args.breakdown else None
        with HubWorkers(
            ov, channels=CHANNELS, count=args.workers, profile_dir=profile_dir, breakdown_dir=breakdown_dir
        ) as workers:
            from hub.clock import utcnow

            pids = [proc.pid for proc in workers.procs]
            cpu0 = worker_cpu(pids)
            server0 = postgres_cpu() if hub.db.dialect == "postgresql" else None
            start = utcnow()
            t0 = time.perf_counter()
            message_id = await publish_free_text(hub)
            status = await wait_done(hub, message_id, args.count, timeout=args.timeout, label="pipeline")
            wall = time.perf_counter() - t0
            cpu = worker_cpu(pids) - cpu0
            server1 = postgres_cpu() if server0 is not None else None
            end = await last_sent_at(hub, message_id)
        return {
            "setup": setup,
            "wall": wall,
            "elapsed": (end - start).total_seconds(),
            "totals": status["totals"],
            "worker_cpu": cpu,
            "server_cpu": server1 - server0 if server0 is not None and server1 is not None else None,
            "profile": profile_summary(workers.profile_files()),
            "breakdown": workers.breakdown(),
        }
    finally:
        await hub.close()


def run(args: argparse.Namespace) -> Result:
    if args.quick:
        args.count, args.ceiling_jobs = min(args.count, 3000), min(args.ceiling_jobs, 3000)
    with workspace("pipeline") as tmp:
        queue = queue_overrides(args.queue)
        if args.poll_delay:
            queue["poll_delay"] = args.poll_delay
        ov = overrides(database_url(tmp), **queue)
        settings = make_settings(ov)
        poll_delay, max_jobs = settings.queue.poll_delay, settings.queue.bulk_jobs
        print(
            f"   ceiling: {args.ceiling_jobs:,} no-op jobs, plain arq, {args.workers} process(es) …",
            flush=True,
        )
        before, enqueue_rate = plain_arq_rate(
            args.ceiling_jobs, poll_delay=poll_delay, max_jobs=max_jobs, processes=args.workers
        )
        print(f"   hub: {args.count:,} deliveries, {args.workers} worker process(es) …", flush=True)
        with tempfile.TemporaryDirectory(prefix="hub-bench-prof-") as scratch:
            hub = asyncio.run(_hub_run(args, ov, Path(scratch)))
        # The ceiling again after the hub: on a shared machine the load drifts, and the mean of the two
        # brackets the hub's run instead of resting on one side of it.
        print("   ceiling again …", flush=True)
        after, _ = plain_arq_rate(
            args.ceiling_jobs, poll_delay=poll_delay, max_jobs=max_jobs, processes=args.workers
        )
        ceiling = (before + after) / 2
    rate = args.count / hub["elapsed"]
    ratio = rate / ceiling
    result = Result(
        name="pipeline",
        title="Pipeline: fan-out, queue, claim, record into a null channel",
        params={
            "deliveries": args.count,
            "worker_processes": args.workers,
            "poll_delay": poll_delay,
            "bulk_jobs": max_jobs,
            "batch_size": settings.queue.batch_size,
            "flush_every": settings.queue.flush_every,
            "ceiling_jobs": args.ceiling_jobs,
        },
        rows=[
            Row(
                metric="deliveries/s, publish → all sent",
                value=rate,
                unit="deliveries/s",
                ceiling=ceiling,
                ceiling_what="plain arq worker, no-op jobs",
                ceiling_unit="jobs/s",
                ratio=ratio,
                aim=f"≥ {AIM:g}× ceiling",
                vs_aim=ratio / AIM,
                met=ratio >= AIM,
            )
        ],
    )
    sent = hub["totals"].get("sent", 0)
    result.notes.append(
        f"{sent:,} of {args.count:,} deliveries sent in {hub['elapsed']:.1f} s "
        f"(poll saw done after {hub['wall']:.1f} s); audience insert took {hub['setup']:.1f} s"
    )
    result.notes.append(
        f"ceiling = mean of the plain arq run before the hub ({before:,.0f} jobs/s) and after it "
        f"({after:,.0f} jobs/s); plain arq enqueue rate {enqueue_rate:,.0f} jobs/s (not part of the ceiling)"
    )
    result.notes.append(
        f"hub worker CPU {hub['worker_cpu']:.1f} s = {hub['worker_cpu'] / args.count * 1e6:.0f} µs per "
        "delivery (user + system, all threads of the worker processes, publish → done)"
    )
    if hub["server_cpu"] is not None:
        server = hub["server_cpu"]
        result.notes.append(
            f"PostgreSQL server CPU {server:.1f} s = {server / args.count * 1e6:.0f} µs "
            "per delivery (every postgres process of this machine, publish → done; the server shares the "
            "machine's cores with the worker)"
        )
    if hub["breakdown"]:
        result.notes.append(
            "worker time by step (summed wall time of awaited calls, overlapping): "
            + ", ".join(
                f"{label} {secs:.1f} s/{int(calls):,} calls"
                for label, (secs, calls) in hub["breakdown"].items()
                if calls
            )
        )
    if hub["profile"]:
        print(hub["profile"])
    return result


def build_parser() -> argparse.ArgumentParser:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--count", type=int, default=100_000, help="deliveries (one per subscriber)")
    p.add_argument("--workers", type=int, default=1, help="hub worker processes (the ceiling gets as many)")
    p.add_argument("--ceiling-jobs", type=int, default=20_000, help="no-op jobs for the plain arq ceiling")
    p.add_argument(
        "--poll-delay", type=float, default=None, help="arq poll_delay (default: the hub's setting)"
    )
    p.add_argument("--timeout", type=float, default=1800, help="give up after this many seconds")
    p.add_argument("--profile", action="store_true", help="cProfile the worker processes and print the top")
    p.add_argument(
        "--no-breakdown",
        dest="breakdown",
        action="store_false",
        help="do not time the hub's steps in the worker",
    )
    return p


def main(argv: list[str] | None = None) -> Result:
    return cli(run, build_parser, argv)


if __name__ == "__main__":
    main()
