"""A dead worker's batch is queued again once; if that job is lost too, once more after a while.

The reconciler marks a dead claim ``requeued`` when it queues its rows again. When Redis restarts before
a worker takes that job, the rows stay ``sending`` under a claim nobody looks at: lost until Redis lost
its data once more. Now rows still ``sending`` ``stale_after_seconds`` after the requeue are queued again.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select, update

from hub import announcements, subscriptions
from hub.clock import utcnow
from hub.delivery.claim import claim, claims
from hub.delivery.plan import plan_chunk
from hub.delivery.reconcile import due_for_requeue
from hub.delivery.states import deliveries


def _queued(batches) -> set[int]:
    return {i for _, _, ids in batches for i in ids}


async def _set_claims(hub, **values) -> None:
    async with hub.db.transaction() as session:
        await session.execute(update(claims).values(**values))


async def test_a_requeued_batch_still_sending_after_stale_after_is_queued_again(hub):
    addresses = [f"warga{i:03d}@mail.example.com" for i in range(30)]
    await subscriptions.import_csv(hub, "email\n" + "\n".join(addresses), "kota-pekalongan", confirmed=True)
    req = announcements.AnnouncementInput(
        template="restriction", topics=["kota-pekalongan"], data={"period_days": 14}
    )
    _, message = await announcements.create(hub, req, publish=True)
    await plan_chunk(hub, message.id, hub.channels)
    async with hub.db.session() as session:
        ids = set(await session.scalars(select(deliveries.c.id).where(deliveries.c.message_id == message.id)))
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
