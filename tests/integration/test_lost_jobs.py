"""Rows whose job Redis lost are queued again by the reconciler, once, and soon enough.

Two ways a job is lost, both found by the chaos soak (docs/reliability.md):

- A dead worker's batch: the reconciler marks the dead claim ``requeued`` when it queues its rows again.
  When Redis restarts before a worker takes that job, the rows stay ``sending`` under a claim nobody looks
  at. Rows still ``sending`` ``stale_after_seconds`` after the requeue are queued again.
- A retry's deferred job: Redis restarting empty between the retry's enqueue and its due time wiped it,
  and the lost-enqueue pass only queued rows already due then; the rest waited for the stale pass.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select, update

from channels.base import RetryLater
from hub import announcements, subscriptions
from hub.clock import utcnow
from hub.delivery.claim import claim, claims
from hub.delivery.plan import plan_chunk
from hub.delivery.reconcile import due_for_requeue
from hub.delivery.record import record
from hub.delivery.states import deliveries


def _queued(batches) -> set[int]:
    return {i for _, _, ids in batches for i in ids}


async def _planned(hub, count: int) -> set[int]:
    """The delivery ids of a broadcast planned to ``count`` confirmed email subscribers."""
    addresses = [f"warga{i:03d}@mail.example.com" for i in range(count)]
    await subscriptions.import_csv(hub, "email\n" + "\n".join(addresses), "kota-pekalongan", confirmed=True)
    req = announcements.AnnouncementInput(
        template="restriction", topics=["kota-pekalongan"], data={"period_days": 14}
    )
    _, message = await announcements.create(hub, req, publish=True)
    await plan_chunk(hub, message.id, hub.channels)
    async with hub.db.session() as session:
        return set(
            await session.scalars(select(deliveries.c.id).where(deliveries.c.message_id == message.id))
        )


async def _set_claims(hub, **values) -> None:
    async with hub.db.transaction() as session:
        await session.execute(update(claims).values(**values))


async def _deferred(hub, ids: set[int]) -> list[int]:
    """Claim the rows and record a provider's "retry in 20 s" for each: what the sender defers a job for."""
    claimed = await claim(hub, sorted(ids))
    cooling = RetryLater("every gateway is cooling off", 20.0, provider=True)
    recorded = await record(hub, claimed.token, [(i, cooling) for i in ids], claimed.attempts, finish=True)
    return [i for i, _ in recorded.retry]


async def _come_due(hub, ids: set[int]) -> None:
    async with hub.db.transaction() as session:
        await session.execute(
            update(deliveries)
            .where(deliveries.c.id.in_(ids))
            .values(next_attempt_at=utcnow() - timedelta(seconds=1))
        )


async def test_a_requeued_batch_still_sending_after_stale_after_is_queued_again(hub):
    ids = await _planned(hub, 30)
    assert len(ids) == 30 and len((await claim(hub, sorted(ids))).items) == 30

    # The worker dies mid-batch: once its lease ran out, its rows are queued again, once.
    await _set_claims(hub, lease_until=utcnow() - timedelta(seconds=1))
    assert _queued(await due_for_requeue(hub, redis_lost=False)) == ids
    assert _queued(await due_for_requeue(hub, redis_lost=False)) == set()

    # That job is lost too (Redis restarted before a worker took it): stale_after_seconds later the rows
    # are still `sending`, so they are queued again.
    stale = timedelta(seconds=hub.settings.queue.stale_after_seconds + 1)
    await _set_claims(hub, requeued_at=utcnow() - stale)
    assert _queued(await due_for_requeue(hub, redis_lost=False)) == ids
    assert _queued(await due_for_requeue(hub, redis_lost=False)) == set()

    # A worker took them: the dead claim holds nothing any more and is never queued again.
    assert len((await claim(hub, sorted(ids))).items) == 30
    await _set_claims(hub, requeued_at=utcnow() - stale)
    async with hub.db.transaction() as session:  # the new claim's lease is live: only the old one is dead
        await session.execute(
            update(claims).where(claims.c.requeued.is_(False)).values(lease_until=utcnow() + stale)
        )
    assert _queued(await due_for_requeue(hub, redis_lost=False)) == set()


async def test_a_retry_whose_job_redis_lost_is_queued_once_due(hub):
    ids = await _planned(hub, 5)
    assert set(await _deferred(hub, ids)) == ids  # the sender defers one job to their due time

    # Redis restarts empty before they are due: nothing is due yet, so nothing is queued now.
    assert _queued(await due_for_requeue(hub, redis_lost=True)) == set()

    # Their due time comes (well before stale_after_seconds): the reconciler queues them, once.
    await _come_due(hub, ids)
    assert _queued(await due_for_requeue(hub, redis_lost=False)) == ids
    assert _queued(await due_for_requeue(hub, redis_lost=False)) == set()


async def test_a_retry_whose_job_redis_kept_is_not_queued_twice(hub):
    ids = await _planned(hub, 5)
    assert set(await _deferred(hub, ids)) == ids
    await _come_due(hub, ids)
    # Redis kept the deferred job: the reconciler leaves them to it.
    assert _queued(await due_for_requeue(hub, redis_lost=False)) == set()
