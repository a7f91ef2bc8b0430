"""arq jobs and the worker process: plan a message, send a batch; drain for `hub worker --burst`."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from arq import cron as arq_cron
from arq.worker import Worker, func

from hub.clock import utcnow
from hub.context import Hub
from hub.delivery.claim import claim, finish
from hub.delivery.lane_worker import LaneWorker
from hub.delivery.plan import plan_and_enqueue
from hub.delivery.reconcile import reconcile
from hub.delivery.sender import Batch
from hub.delivery.status import unfinished
from hub.logs import log
from hub.queue import REDIS_DOWN
from hub.store import writegate

JOB_TIMEOUT = 600


async def plan_message(ctx: dict[str, Any], message_id: int) -> int:
    hub: Hub = ctx["hub"]
    writegate.urgent.set(ctx.get("lane") == "urgent")  # SQLite: its writes go before the broadcast's
    total = await plan_and_enqueue(hub, message_id)  # each page enqueued while the next is planned
    log.info("message_planned", message_id=message_id, deliveries=total)
    return total


async def send_batch(ctx: dict[str, Any], channel_name: str, delivery_ids: list[int]) -> dict[str, int]:
    hub: Hub = ctx["hub"]
    lane = ctx.get("lane", "bulk")
    writegate.urgent.set(lane == "urgent")  # SQLite: its writes go before the broadcast's (this job only)
    channel = await hub.open_channel(channel_name, lane)
    if not await channel.ready():  # another process owns this channel's session: leave the rows unclaimed
        await hub.queue.send(lane, channel_name, delivery_ids, at=utcnow() + timedelta(seconds=1))
        return {"claimed": 0, "deferred": len(delivery_ids)}
    started = time.monotonic()  # the lease is counted from before the claim, to be safe
    claimed = await claim(hub, delivery_ids)
    if not claimed.items:
        if claimed.attempts:  # every row was skipped (cancelled, expired, inactive endpoint)
            await finish(hub, claimed.token)
        return {"claimed": 0, "skipped": claimed.skipped}
    return await Batch(hub, channel, claimed, started).run()


# ---------------------------------------------------------------------------------------------------------
# The worker process: one arq Worker per lane (hub.delivery.lane_worker), sharing one event loop and one Hub


def build_workers(
    hub: Hub, *, cron: bool = True, lanes: tuple[str, ...] = ("urgent", "bulk")
) -> list[Worker]:
    _freeze_startup_heap()
    q = hub.settings.queue
    functions = [
        func(plan_message, name="plan_message", keep_result=0, timeout=JOB_TIMEOUT),
        func(send_batch, name="send_batch", keep_result=0, timeout=JOB_TIMEOUT),
    ]
    workers = []
    for lane in lanes:
        crons = []
        if lane == "urgent" and cron:
            every = max(1, q.reconcile_every_seconds)
            crons = [
                arq_cron(
                    reconcile,
                    # arq's cron job ids are global to the Redis: one reconciler per hub, not per Redis.
                    name=f"reconcile:{hub.settings.redis.key_prefix}",
                    second=set(range(0, 60, every)),
                    run_at_startup=True,
                    keep_result=0,
                    unique=True,
                )
            ]
        workers.append(
            LaneWorker(
                functions=functions,
                cron_jobs=crons,
                redis_pool=hub.redis,
                queue_name=hub.queue.name(lane),
                max_jobs=q.urgent_jobs if lane == "urgent" else q.bulk_jobs,
                poll_delay=q.poll_delay,
                handle_signals=False,
                ctx={"hub": hub, "lane": lane},
                keep_result=0,
                job_timeout=JOB_TIMEOUT,
                max_tries=1000,
                log_results=False,
            )
        )
    return workers


_frozen = False


def _freeze_startup_heap() -> None:
    """Move what start-up allocated (modules, SQLAlchemy's and pydantic's structures) out of the collector's
    sight, once per process: every full collection walked those ~130,000 objects again, about a tenth of a
    worker's CPU at full speed (https://docs.python.org/3/library/gc.html#gc.freeze)."""
    global _frozen
    if not _frozen:
        _frozen = True
        gc.collect()
        gc.freeze()


async def run_workers(hub: Hub) -> None:
    """Run both lanes until cancelled; a Redis outage pauses them, never ends them."""
    outage = _Outage(hub)
    await asyncio.gather(*(_keep_running(w, outage) for w in build_workers(hub)))


class _Outage:
    """One Redis outage as the lanes of this process see it: said once when it starts and once at its end.

    Right after Redis is back, connections opened before the outage fail once each; those are the same
    outage's tail, not a new one, and are not logged again.
    """

    QUIET = 10.0

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.down = False
        self.since = 0.0
        self.back_at = -self.QUIET
        self.lock = asyncio.Lock()

    async def wait_for_redis(self, exc: BaseException) -> None:
        async with self.lock:
            tail = time.monotonic() - self.back_at < self.QUIET
            if not self.down and not tail:
                self.since = time.monotonic()
                log.warning(
                    "redis_down_waiting",
                    error=f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:200],
                    hint="sending pauses and resumes by itself when Redis answers",
                )
            self.down = True
            while self.down:
                try:
                    await asyncio.wait_for(self.hub.redis.ping(), timeout=3)
                except REDIS_DOWN:
                    await asyncio.sleep(1.0)
                    continue
                self.down = False
                with contextlib.suppress(*REDIS_DOWN):  # drop connections the outage broke
                    await self.hub.redis.connection_pool.disconnect(inuse_connections=False)
                if not tail:
                    self.back_at = time.monotonic()
                    log.info("redis_back_resuming", down_seconds=round(self.back_at - self.since, 1))
                with contextlib.suppress(Exception):  # queue again what a restarted Redis forgot, now
                    await reconcile({"hub": self.hub})


async def _keep_running(worker: Worker, outage: _Outage) -> None:
    """arq's main loop ends at the first Redis error: run it again (same worker, its jobs go on)."""
    while True:
        try:
            await worker.main()
            return
        except REDIS_DOWN as exc:
            await outage.wait_for_redis(exc)


async def drain(
    hub: Hub, *, on_progress: Callable[[int], Any] | None = None, idle_checks: int = 3, horizon: float = 5.0
) -> None:
    """Run both lanes until nothing is due: no job due in Redis, none running, nothing due in the database.

    Retries due within ``horizon`` seconds are waited for; later ones are left for a long-running worker.
    """
    workers = build_workers(hub, cron=False)
    tasks = [asyncio.create_task(w.main()) for w in workers]
    idle = 0
    try:
        while idle < idle_checks:
            await asyncio.sleep(0.2)
            for t in tasks:
                if t.done():
                    t.result()
            await reconcile({"hub": hub})
            running = sum(1 for w in workers for t in w.tasks.values() if not t.done())
            now_ms = int(time.time() * 1000)
            due_jobs = sum([await hub.redis.zcount(w.queue_name, "-inf", now_ms) for w in workers])
            left = await unfinished(hub, horizon)
            if on_progress:
                on_progress(left)
            idle = idle + 1 if not (running or due_jobs or left) else 0
    finally:
        # The lanes' loops and, when drain ends early (an error, Ctrl+C), the jobs they started.
        stopping = [*tasks, *(t for w in workers for t in w.tasks.values())]
        for t in stopping:
            t.cancel()
        await asyncio.gather(*stopping, return_exceptions=True)
