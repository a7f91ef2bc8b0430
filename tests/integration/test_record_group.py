"""Outcome writes of several jobs at once: one group commit, and each job gets back only its own answer.

``hub.delivery.record`` writes the outcomes that wait together in one transaction (docs/design.md, step 5).
A job must still learn only about its own rows: their counts, their retries, and whether its own message
was cancelled (a cancel of another job's message must not stop it).
"""

from __future__ import annotations

import asyncio

from sqlalchemy import select

from channels.base import RetryLater, Sent
from hub import announcements, subscriptions
from hub.delivery.claim import claim, claims
from hub.delivery.plan import plan_chunk
from hub.delivery.record import record
from hub.delivery.states import deliveries
from hub.delivery.status import cancel


async def _broadcast(hub, topic: str, count: int) -> tuple[int, list[int]]:
    """A planned broadcast to ``count`` confirmed email subscribers of ``topic``: its message and rows."""
    addresses = [f"warga.{topic}.{i:03d}@mail.example.com" for i in range(count)]
    await subscriptions.import_csv(hub, "email\n" + "\n".join(addresses), topic, confirmed=True)
    req = announcements.AnnouncementInput(template="restriction", topics=[topic], data={"period_days": 14})
    _, message = await announcements.create(hub, req, publish=True)
    await plan_chunk(hub, message.id, hub.channels)
    async with hub.db.session() as session:
        ids = await session.scalars(
            select(deliveries.c.id).where(deliveries.c.message_id == message.id).order_by(deliveries.c.id)
        )
        return message.id, list(ids)


async def test_concurrent_outcome_writes_each_get_their_own_answer(hub):
    _, kept = await _broadcast(hub, "kota-pekalongan", 12)
    stopped_message, stopped = await _broadcast(hub, "kota-serang", 8)
    first, second = await claim(hub, kept), await claim(hub, stopped)
    assert len(first.items) == 12 and len(second.items) == 8
    # The second message is cancelled while its rows are being sent (they stay ``sending`` under the claim).
    await cancel(hub, stopped_message)

    later = RetryLater("mailbox full", 30.0)
    kept_done, stopped_done = await asyncio.gather(
        record(
            hub,
            first.token,
            [(i, Sent(provider_id=f"<{i}@hub>")) for i in kept[:10]] + [(i, later) for i in kept[10:]],
            first.attempts,
            first.deadlines,
            first.messages,
            finish=True,
        ),
        record(
            hub,
            second.token,
            [(i, Sent(provider_id=f"<{i}@hub>")) for i in stopped],
            second.attempts,
            second.deadlines,
            second.messages,
            finish=True,
        ),
    )

    assert kept_done.counts == {"sent": 10, "retrying": 2}
    assert sorted(i for i, _ in kept_done.retry) == kept[10:]
    assert kept_done.cancelled == set()
    assert stopped_done.counts == {"sent": 8} and stopped_done.retry == []
    assert stopped_done.cancelled == {stopped_message}
    async with hub.db.session() as session:
        states = dict((await session.execute(select(deliveries.c.id, deliveries.c.state))).all())
        left = set(await session.scalars(select(claims.c.token)))
    assert [states[i] for i in kept] == ["sent"] * 10 + ["retrying"] * 2
    assert [states[i] for i in stopped] == ["sent"] * 8
    # Both claims were dropped by their last write: none of their rows is still ``sending``.
    assert not {first.token, second.token} & left
