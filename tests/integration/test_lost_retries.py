"""A retry whose deferred job a Redis restart wiped is queued when it is due, not minutes later.

The chaos soak (docs/reliability.md) left SMS rows `retrying` ("every SMS gateway is cooling off") until the
reconciler's stale pass: Redis restarted empty between the retry's enqueue and its due time, and the
lost-enqueue pass only queued rows already due then.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select, update

from channels.base import RetryLater
from hub import announcements, subscriptions
from hub.clock import utcnow
from hub.delivery.claim import claim
from hub.delivery.plan import plan_chunk
from hub.delivery.reconcile import due_for_requeue
from hub.delivery.record import record
from hub.delivery.states import deliveries


def _queued(batches) -> set[int]:
    return {i for _, _, ids in batches for i in ids}


async def test_a_retry_whose_job_redis_lost_is_queued_once_due(hub):
    addresses = [f"warga{i:03d}@mail.example.com" for i in range(5)]
    await subscriptions.import_csv(hub, "email\n" + "\n".join(addresses), "kota-pekalongan", confirmed=True)
    req = announcements.AnnouncementInput(
        template="restriction", topics=["kota-pekalongan"], data={"period_days": 14}
    )
    _, message = await announcements.create(hub, req, publish=True)
    await plan_chunk(hub, message.id, hub.channels)
    async with hub.db.session() as session:
        ids = set(await session.scalars(select(deliveries.c.id).where(deliveries.c.message_id == message.id)))
    claimed = await claim(hub, sorted(ids))
    cooling = RetryLater("every gateway is cooling off", 20.0, provider=True)
    recorded = await record(hub, claimed.token, [(i, cooling) for i in ids], claimed.attempts, finish=True)
    assert {i for i, _ in recorded.retry} == ids  # the sender defers one job to their due time

    # Redis restarts empty before they are due: nothing is due yet, so nothing is queued now.
    assert _queued(await due_for_requeue(hub, redis_lost=True)) == set()

    # Their due time comes (well before stale_after_seconds): the reconciler queues them, once.
    async with hub.db.transaction() as session:
        await session.execute(
            update(deliveries)
            .where(deliveries.c.id.in_(ids))
            .values(next_attempt_at=utcnow() - timedelta(seconds=1))
        )
    assert _queued(await due_for_requeue(hub, redis_lost=False)) == ids
    assert _queued(await due_for_requeue(hub, redis_lost=False)) == set()


async def test_a_retry_whose_job_redis_kept_is_not_queued_twice(hub):
    addresses = [f"warga{i:03d}@mail.example.com" for i in range(5)]
    await subscriptions.import_csv(hub, "email\n" + "\n".join(addresses), "kota-pekalongan", confirmed=True)
    req = announcements.AnnouncementInput(
        template="restriction", topics=["kota-pekalongan"], data={"period_days": 14}
    )
    _, message = await announcements.create(hub, req, publish=True)
    await plan_chunk(hub, message.id, hub.channels)
    async with hub.db.session() as session:
        ids = set(await session.scalars(select(deliveries.c.id).where(deliveries.c.message_id == message.id)))
    claimed = await claim(hub, sorted(ids))
    cooling = RetryLater("every gateway is cooling off", 20.0, provider=True)
    await record(hub, claimed.token, [(i, cooling) for i in ids], claimed.attempts, finish=True)
    async with hub.db.transaction() as session:
        await session.execute(
            update(deliveries)
            .where(deliveries.c.id.in_(ids))
            .values(next_attempt_at=utcnow() - timedelta(seconds=1))
        )
    # Redis kept the deferred job: the reconciler leaves them to it.
    assert _queued(await due_for_requeue(hub, redis_lost=False)) == set()
