"""arq jobs and the worker process: plan a message, send a batch; drain for `hub worker --burst`."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from arq import cron as arq_cron
from arq.worker import Worker, func
from sqlalchemy import select

from channels.base import Outcome
from hub.clock import utcnow
from hub.context import Hub
from hub.delivery.claim import Claimed, claim, release, renew_lease
from hub.delivery.plan import plan_chunk
from hub.delivery.reconcile import reconcile
from hub.delivery.record import record
from hub.delivery.status import unfinished
from hub.logs import log
from hub.privacy import mask
from hub.store.models import (
    Delivery,
)

JOB_TIMEOUT = 600


async def plan_message(ctx: dict[str, Any], message_id: int) -> int:
    hub: Hub = ctx["hub"]
    total = 0
    while True:
        chunk = await plan_chunk(hub, message_id, hub.channels)
        if chunk.batches:
            await hub.queue.send_many(chunk.lane, chunk.batches)
        total += chunk.inserted
        if chunk.done:
            break
    log.info("message_planned", message_id=message_id, deliveries=total)
    return total


async def send_batch(ctx: dict[str, Any], channel_name: str, delivery_ids: list[int]) -> dict[str, int]:
    hub: Hub = ctx["hub"]
    lane = ctx.get("lane", "bulk")
    channel = await hub.open_channel(channel_name, lane)
    if not await channel.ready():  # another process owns this channel's session: leave the rows unclaimed
        await hub.queue.send(lane, channel_name, delivery_ids, at=utcnow() + timedelta(seconds=1))
        return {"claimed": 0, "deferred": len(delivery_ids)}
    claimed = await claim(hub, delivery_ids)
    if not claimed.items:
        return {"claimed": 0, "skipped": claimed.skipped}
    recorder = _Recorder(hub, claimed.token, claimed.attempts, hub.settings.queue.flush_every)
    keeper = asyncio.create_task(_keep_lease(hub, claimed.token))
    pending = {i.delivery_id for i in claimed.items}
    try:
        async for delivery_id, outcome in channel.send(claimed.items, hub.pacer):
            pending.discard(delivery_id)
            if outcome.__class__.__name__ != "Sent":
                log.info(
                    "delivery_outcome",
                    delivery_id=delivery_id,
                    channel=channel_name,
                    outcome=outcome.__class__.__name__,
                    address=mask(_address(claimed, delivery_id)),
                )
            await recorder.add(delivery_id, outcome)
    except Exception as exc:  # an adapter bug must not strand rows in "sending"
        log.exception("adapter_failed", channel=channel_name, error=str(exc))
        await recorder.flush()
        released = await release(hub, claimed.token, sorted(pending), f"adapter error: {exc}")
        if released:
            await hub.queue.send(claimed.items[0].lane, channel_name, released)
        raise
    finally:
        keeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await keeper
    await recorder.flush()
    return recorder.counts


def _address(claimed: Claimed, delivery_id: int) -> str:
    return next((i.address for i in claimed.items if i.delivery_id == delivery_id), "")


async def _keep_lease(hub: Hub, token: str) -> None:
    """Renew the claim while the batch is being sent, so only a dead worker's lease ever runs out."""
    interval = max(0.5, hub.settings.queue.lease_seconds / 3)
    while True:
        await asyncio.sleep(interval)
        await renew_lease(hub, token)


class _Recorder:
    """Writes outcomes in small groups: few transactions, and little unrecorded when a worker dies."""

    def __init__(self, hub: Hub, token: str, attempts: dict[int, int], every: int) -> None:
        self.hub, self.token, self.attempts, self.every = hub, token, attempts, every
        self.buffer: list[tuple[int, Outcome]] = []
        self.last = time.monotonic()
        self.counts: dict[str, int] = defaultdict(int)
        self.lane = "bulk"

    async def add(self, delivery_id: int, outcome: Outcome) -> None:
        self.buffer.append((delivery_id, outcome))
        if (
            len(self.buffer) >= self.every
            or time.monotonic() - self.last > self.hub.settings.queue.flush_seconds
        ):
            await self.flush()

    async def flush(self) -> None:
        self.last = time.monotonic()
        if not self.buffer:
            return
        batch, self.buffer = self.buffer, []
        recorded = await record(self.hub, self.token, batch, self.attempts)
        for state, n in recorded.counts.items():
            self.counts[state] += n
        if recorded.retry:
            await _requeue_retries(self.hub, recorded.retry)


async def _requeue_retries(hub: Hub, retry: list[tuple[int, datetime]]) -> None:
    """One deferred job per tenth of a second of due time, per lane and channel."""
    async with hub.db.session() as session:
        rows = (
            await session.execute(
                select(Delivery.id, Delivery.lane, Delivery.channel).where(
                    Delivery.id.in_([i for i, _ in retry])
                )
            )
        ).all()
    due = dict(retry)
    groups: dict[tuple[str, str, int], list[int]] = defaultdict(list)
    for delivery_id, lane, channel in rows:
        tick = math.ceil(due[delivery_id].replace(tzinfo=UTC).timestamp() * 10)
        groups[(lane, channel, tick)].append(delivery_id)
    for (lane, channel, tick), ids in groups.items():
        await hub.queue.send(lane, channel, ids, at=datetime.fromtimestamp(tick / 10, tz=UTC))



# ---------------------------------------------------------------------------------------------------------
# The worker process: one arq Worker per lane, sharing one event loop and one Hub


def build_workers(
    hub: Hub, *, cron: bool = True, lanes: tuple[str, ...] = ("urgent", "bulk")
) -> list[Worker]:
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
                    name="reconcile",
                    second=set(range(0, 60, every)),
                    run_at_startup=True,
                    keep_result=0,
                    unique=True,
                )
            ]
        workers.append(
            Worker(
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


async def run_workers(hub: Hub) -> None:
    """Run both lanes until cancelled."""
    await asyncio.gather(*(w.main() for w in build_workers(hub)))


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
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
