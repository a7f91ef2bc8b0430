"""Retention: delivery rows and renderings of messages older than the period (90 days) are purged by the
reconciler in bounded chunks; a message's counts, per channel and state, are what they were."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select, update

from hub import announcements, delivery, subscriptions
from hub.clock import utcnow
from hub.context import Hub
from hub.delivery import drain, retention
from hub.store.models import Delivery, Message, Rendering
from tests.conftest import Mailbox

PEOPLE = ["satu@mail.example.com", "dua@mail.example.com", "tiga@mail.example.com"]


async def publish(hub: Hub, title: str) -> int:
    req = announcements.AnnouncementInput(
        template="free_text", topics=["kota-pekalongan"], data={"title": title, "text": "Isi pengumuman."}
    )
    _, message = await announcements.create(hub, req, publish=True)
    assert message is not None
    await drain(hub, idle_checks=1)
    return message.id


async def held(hub: Hub, message_id: int) -> tuple[int, int]:
    """How many delivery rows and renderings of the message are held."""
    async with hub.db.session() as session:
        rows = await session.scalar(select(func.count()).where(Delivery.message_id == message_id))
        texts = await session.scalar(select(func.count()).where(Rendering.message_id == message_id))
    return int(rows or 0), int(texts or 0)


async def age(hub: Hub, message_id: int, days: int) -> None:
    async with hub.db.transaction() as session:
        await session.execute(
            update(Message).where(Message.id == message_id).values(send_at=utcnow() - timedelta(days=days))
        )


async def test_the_reconciler_purges_old_rows_and_keeps_counts(hub: Hub, mailbox: Mailbox) -> None:
    for address in PEOPLE:
        await subscriptions.subscribe(hub, "kota-pekalongan", "email", address, confirmed=True)
    mailbox.refuse["tiga@mail.example.com"] = (550, "5.1.1 no such user")
    old = await publish(hub, "Lama")
    recent = await publish(hub, "Baru")
    await age(hub, old, 91)
    await age(hub, recent, 89)
    before = {m: await delivery.status(hub, m) for m in (old, recent)}
    assert before[old] is not None and before[old]["total"] == 3 and before[old]["totals"]["sent"] == 2
    assert await held(hub, old) == (3, 1)  # one email rendering: every subscriber reads Indonesian
    kept = await held(hub, recent)  # two rows: "tiga" bounced and is no longer sent to
    assert kept == (2, 1)

    # The reconciler purges once a minute: the drains above ran it, so let that minute pass.
    assert hub.redis is not None
    await hub.redis.delete(retention.due_key(hub))
    await delivery.reconcile({"hub": hub})

    assert await held(hub, old) == (0, 0)
    assert await held(hub, recent) == kept
    assert {m: await delivery.status(hub, m) for m in (old, recent)} == before
    # Purging again finds nothing and counts nothing twice.
    assert await retention.purge(hub) == retention.Purged(rows=0, messages=0)
    assert await delivery.status(hub, old) == before[old]


async def test_purge_runs_in_bounded_chunks_and_spares_unsettled_rows(hub: Hub) -> None:
    for address in PEOPLE:
        await subscriptions.subscribe(hub, "kota-pekalongan", "email", address, confirmed=True)
    old = await publish(hub, "Lama")
    await age(hub, old, 120)
    # One row is still waiting for a retry: it is not history yet.
    async with hub.db.transaction() as session:
        last = await session.scalar(select(func.max(Delivery.id)).where(Delivery.message_id == old))
        await session.execute(update(Delivery).where(Delivery.id == last).values(state="retrying"))
    before = await delivery.status(hub, old)
    assert before is not None and before["totals"]["sent"] == 2 and before["totals"]["retrying"] == 1

    assert await retention.purge(hub, chunk=1, budget=1) == retention.Purged(rows=1, messages=0)
    assert await held(hub, old) == (2, 1)
    assert await delivery.status(hub, old) == before
    assert await retention.purge(hub, chunk=1) == retention.Purged(rows=1, messages=0)
    assert await held(hub, old) == (1, 1)  # the waiting row, and the texts it will be sent with
    assert await delivery.status(hub, old) == before

    async with hub.db.transaction() as session:
        await session.execute(update(Delivery).where(Delivery.id == last).values(state="failed"))
    assert await retention.purge(hub) == retention.Purged(rows=1, messages=1)
    assert await held(hub, old) == (0, 0)
    after = await delivery.status(hub, old)
    assert after is not None and after["totals"] == {**before["totals"], "retrying": 0, "failed": 1}
