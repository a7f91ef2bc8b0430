"""One lane's arq worker whose cost while it waits does not grow with the number of workers.

arq's worker asks Redis for due jobs every ``poll_delay`` (50 ms: 40 requests a second per process for two
lanes, all day) and leaves a running job in the queue, so each poll read the jobs every other worker was
running and checked each again (three round trips) before it found a free one: with eight processes,
Redis commands per delivery grew 2.4× and worker CPU per delivery 1.8× (docs/hosts.md). Here

- one Lua script per poll takes the free due jobs atomically (the same ``in-progress`` key arq sets
  with WATCH/MULTI, https://redis.io/docs/latest/develop/interact/programmability/eval-intro/), skipping
  running ones inside Redis: a running job costs nothing, however many workers there are;
- between polls a worker waits for a wake-up: a message on the lane's pub/sub channel, which
  ``hub.queue.Queue`` publishes after every enqueue (https://redis.io/docs/latest/develop/interact/pubsub/),
  or the end of one of its own jobs; or until the queue's next deferred job is due, or ``IDLE_POLL`` at
  most. Polls stay at least ``poll_delay`` apart; not subscribed (Redis away), it polls every
  ``poll_delay`` as arq does.

Everything else (running a job, retries, timeouts, cron, health) is arq's own.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from arq.constants import in_progress_key_prefix
from arq.utils import timestamp_ms
from arq.worker import Worker

from hub.queue import REDIS_DOWN, wake_channel

#: The longest an idle worker waits without a wake-up: bounds the delay when one is missed (a publisher
#: of an older version, a subscription broken without an error) and when a crashed worker's job becomes
#: free again (its in-progress key expired).
IDLE_POLL = 1.0
#: Due jobs a poll looks through at most for a free one (running jobs sit at the head of the queue).
SCAN = 2000

#: KEYS[1] the queue; ARGV: now (ms), jobs wanted, in-progress key prefix, in-progress TTL (ms), scan limit.
#: Returns {job id, score, job id, score, ...} of the jobs taken, and the next deferred job's score.
_TAKE = """
local wanted = 2 * tonumber(ARGV[2])
local scan = tonumber(ARGV[5])
local taken = {}
local offset = 0
while #taken < wanted and offset < scan do
  local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'WITHSCORES', 'LIMIT', offset, 100)
  for i = 1, #due, 2 do
    local key = ARGV[3] .. due[i]
    if redis.call('EXISTS', key) == 0 then
      redis.call('PSETEX', key, ARGV[4], '1')
      taken[#taken + 1] = due[i]
      taken[#taken + 1] = due[i + 1]
      if #taken >= wanted then break end
    end
  end
  if #due < 200 then break end
  offset = offset + 100
end
local later = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. ARGV[1], '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
return {taken, later[2] or false}
"""


class LaneWorker(Worker):
    """arq's worker with an atomic take and a wait for wake-ups instead of a poll every ``poll_delay``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._take: Any = None
        self._wake = asyncio.Event()
        self._listening = False
        self._next_due_ms: float | None = None

    async def main(self) -> None:
        """arq's main loop (``Worker.main``) with ``_pause`` between polls; the pool is the hub's."""
        self.ctx["redis"] = self.pool
        if self.on_startup:
            await self.on_startup(self.ctx)
        if self._take is None:
            self._take = self.pool.register_script(_TAKE)
        bell = asyncio.create_task(self._listen())
        try:
            loop = asyncio.get_running_loop()
            while True:
                started = loop.time()
                self._wake.clear()  # before the poll: a wake-up during it is not lost
                await self._poll_iteration()
                await self._pause(started)
        finally:
            bell.cancel()
            await asyncio.gather(bell, return_exceptions=True)

    async def _poll_iteration(self) -> None:
        wanted = self.max_jobs - self.job_counter
        if wanted > 0:
            ttl_ms = int(self.in_progress_timeout_s * 1000)
            taken, later = await self._take(
                keys=[self.queue_name], args=[timestamp_ms(), wanted, in_progress_key_prefix, ttl_ms, SCAN]
            )
            self._next_due_ms = float(later) if later is not None else None
            # Nothing suspends between the take and the tasks: the in-progress keys are set, the jobs start.
            loop = asyncio.get_running_loop()
            for i in range(0, len(taken), 2):
                job_id = taken[i].decode()
                await self.sem.acquire()  # free (job_counter < max_jobs): returns without suspending
                self.job_counter += 1
                task = loop.create_task(self.run_job(job_id, int(float(taken[i + 1]))))
                task.add_done_callback(lambda _: self._release_sem_dec_counter_on_complete())
                task.add_done_callback(lambda _: self._wake.set())  # after arq's: the place is free
                self.tasks[job_id] = task
        for job_id, task in list(self.tasks.items()):
            if task.done():
                del self.tasks[job_id]
                task.result()  # arq's run_job catches the job's errors: what is left is arq's own
        await self.heart_beat()

    async def _pause(self, started: float) -> None:
        """Until the next poll, never sooner than ``poll_delay`` after this one began. A poll takes every
        free due job up to the free places, so after it either no free job is due or no place is free:
        wait for a wake-up (a job queued, or one of this worker's jobs ended), the next deferred job, or
        ``IDLE_POLL``, whichever is first. Not subscribed: poll every ``poll_delay``, as arq does."""
        loop = asyncio.get_running_loop()
        if self._listening:
            wait = IDLE_POLL
            if self._next_due_ms is not None:
                wait = min(wait, max(0.0, self._next_due_ms / 1000 - time.time()))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, started + wait - loop.time())):
                    await self._wake.wait()
        await asyncio.sleep(max(0.0, started + self.poll_delay_s - loop.time()))

    async def _listen(self) -> None:
        """Set ``_wake`` at every message on the lane's channel; subscribe again after a Redis error."""
        channel = wake_channel(self.queue_name)
        while True:
            pubsub = self.pool.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(channel)
                self._listening = True
                self._wake.set()  # whatever was queued while this worker was not listening
                async for _ in pubsub.listen():
                    self._wake.set()
            except REDIS_DOWN:
                pass
            finally:
                self._listening = False
                with contextlib.suppress(*REDIS_DOWN):
                    await pubsub.aclose()
            await asyncio.sleep(1.0)
