"""A worker's database connections last: the pool keeps one per job, so a drain opens a few and closes none.

SQLAlchemy's default pool keeps 5 connections and closes every one beyond them when it is given back; with
20 jobs at once a worker opened and closed connections all the time (an aiosqlite connection is a thread,
a PostgreSQL one a server process). Measured with ``hub.store.db.pool_sizes`` before (5 + 10 overflow) on
a 10,000-delivery drain: 25 opened, 21 closed; with the pool sized to the jobs: 10 opened, none closed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Sequence
from typing import Any, ClassVar

from sqlalchemy import event, func, select

from benchmarks.common import bulk_audience, publish_free_text
from channels.base import Channel, Outbound, Outcome, Pacer, Sent
from hub.delivery import drain
from hub.store.db import SPARE_CONNECTIONS
from hub.store.models import Claim, Delivery
from tests.conftest import make_settings, start_hub


class Instant(Channel):
    """Takes every message at once: only the hub's own database work is left to watch."""

    name: ClassVar[str] = "instant"

    @classmethod
    def from_settings(cls, settings: Any, *, public_url: str) -> Instant:
        return cls()

    def normalize_address(self, raw: str) -> str:
        return raw.strip()

    async def send(self, items: Sequence[Outbound], pacer: Pacer) -> AsyncIterator[tuple[int, Outcome]]:
        for item in items:
            yield item.delivery_id, Sent()


async def test_a_drain_opens_a_connection_per_job_at_most_and_closes_none(database, redis_url):
    url, schema = database
    hub = await start_hub(
        make_settings(url, redis_url, None, schema, urgent_jobs=10, bulk_jobs=10, batch_size=20),
        extra_channels={"instant": Instant()},
    )
    try:
        await bulk_audience(hub, 2000, channel="instant", address_sql="'w' || i", topic="kota-pekalongan")
        pool = hub.db.engine.sync_engine.pool
        seen: Counter[str] = Counter()
        for name in ("connect", "close", "close_detached"):
            event.listen(pool, name, lambda *_, name=name: seen.update([name]))
        message_id = await publish_free_text(hub, topic="kota-pekalongan")
        await drain(hub)
        async with hub.db.session() as session:
            sent = await session.scalar(
                select(func.count()).where(Delivery.message_id == message_id, Delivery.state == "sent")
            )
            claims_left = await session.scalar(select(func.count()).select_from(Claim))
        assert sent == 2000
        assert seen["close"] + seen["close_detached"] == 0, seen
        assert seen["connect"] <= 20 + SPARE_CONNECTIONS, seen
        # Every session ended: no connection left checked out, every claim's last write committed (a
        # statement run on a session already closed left SQLite's write lock held and the claim in place).
        assert pool.checkedout() == 0 and claims_left == 0
    finally:
        await hub.close()
