"""A lane's worker waits for work without polling, yet starts every job once and on time (lane_worker)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from arq.worker import func

from hub.clock import utcnow
from hub.delivery.lane_worker import IDLE_POLL, LaneWorker
from hub.queue import Queue, connect, wake_channel
from hub.settings import RedisSection

POLL = 0.05


class Started:
    """What the workers' ``send_batch`` jobs saw: each batch's ids, and when a job began."""

    def __init__(self) -> None:
        self.ids: Counter[int] = Counter()
        self.times: list[float] = []
        self.event = asyncio.Event()


@pytest.fixture
async def lane(redis_url: str) -> AsyncIterator[tuple[Queue, Started, list[LaneWorker]]]:
    redis = await connect(RedisSection(url=redis_url, embedded_fallback=False))
    queue = Queue(redis, f"t{uuid.uuid4().hex[:8]}")
    started = Started()

    async def send_batch(ctx: dict[str, Any], channel: str, ids: list[int]) -> None:
        started.times.append(time.monotonic())
        started.ids.update(ids)
        started.event.set()
        await asyncio.sleep(0.01)  # a running job stays at the head of the queue meanwhile

    workers: list[LaneWorker] = []
    tasks: list[asyncio.Task[None]] = []

    def start(count: int) -> None:
        for _ in range(count):
            worker = LaneWorker(
                functions=[func(send_batch, name="send_batch", keep_result=0)],
                redis_pool=redis,
                queue_name=queue.name("urgent"),
                max_jobs=5,
                poll_delay=POLL,
                handle_signals=False,
                keep_result=0,
            )
            workers.append(worker)
            tasks.append(asyncio.create_task(worker.main()))

    queue.start_workers = start  # type: ignore[attr-defined]
    try:
        yield queue, started, workers
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await redis.aclose()


async def _idle(queue: Queue, listeners: int) -> None:
    """Until every worker listens on the lane's channel and has found nothing for longer than a poll."""
    channel = wake_channel(queue.name("urgent"))
    while dict(await queue.redis.pubsub_numsub(channel)).get(channel.encode(), 0) < listeners:
        await asyncio.sleep(0.01)
    await asyncio.sleep(3 * POLL)


async def test_an_idle_worker_starts_a_queued_job_at_once(lane):
    queue, started, _ = lane
    queue.start_workers(1)
    await _idle(queue, 1)
    queued = time.monotonic()
    await queue.send("urgent", "chat", [1])
    await asyncio.wait_for(started.event.wait(), timeout=5)
    # Without the wake-up it would have waited for the next idle poll, up to IDLE_POLL later.
    assert started.times[0] - queued < min(0.3, IDLE_POLL / 2)


async def test_a_deferred_job_starts_when_due(lane):
    queue, started, _ = lane
    queue.start_workers(1)
    await _idle(queue, 1)
    queued = time.monotonic()
    await queue.send("urgent", "chat", [1], at=utcnow() + timedelta(seconds=0.4))
    await asyncio.wait_for(started.event.wait(), timeout=5)
    assert 0.35 < started.times[0] - queued < 0.4 + 0.3


async def test_a_job_queued_without_a_wake_up_still_starts(lane):
    queue, started, _ = lane
    queue.start_workers(1)
    await _idle(queue, 1)
    queued = time.monotonic()
    # As an older hub's process would queue it: arq's enqueue alone, no message on the channel.
    await queue.redis.enqueue_job("send_batch", "chat", [1], _queue_name=queue.name("urgent"))
    await asyncio.wait_for(started.event.wait(), timeout=5)
    assert started.times[0] - queued < IDLE_POLL + 0.5


async def test_many_workers_start_every_job_once(lane):
    queue, started, workers = lane
    queue.start_workers(4)
    await _idle(queue, 4)
    await queue.send_many("urgent", [("chat", [n]) for n in range(300)])
    deadline = time.monotonic() + 30
    while sum(started.ids.values()) < 300 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    await asyncio.sleep(3 * POLL)  # a second start of any job would come within a poll or two
    assert started.ids == Counter(range(300))
    assert all(w.jobs_complete for w in workers)  # all four took a share
