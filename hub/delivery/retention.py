"""Retention: delivery rows and renderings are kept for a period, then only their counts.

A delivery row says who received what; after ``queue.retention_days`` (90 by default) that is no longer
the hub's business, but how many received a message stays so:
the reconciler moves each old message's settled rows into ``delivery_counts`` (per channel and state)
and deletes them, then deletes the message's renderings and named audience. A message's status adds the
counts to the rows still held (``kept_counts``), so its totals do not change.

The work is bounded: ``CHUNK`` rows per transaction (SQLite has one writer, and outcomes must not wait
long behind a purge), at most ``BUDGET`` rows per run, and one run per ``EVERY`` for the whole hub.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, exists, select
from sqlalchemy.dialects import postgresql, sqlite

from hub.clock import utcnow
from hub.context import Hub
from hub.delivery.states import FINAL, deliveries
from hub.logs import log
from hub.queue import REDIS_DOWN
from hub.store.models import DeliveryCount, Message, MessageEndpoint, Rendering

#: Delivery rows and renderings of messages sent longer ago than this are purged (counts are kept).
#: Rows moved to counts per transaction, and at most per run.
CHUNK = 2000
BUDGET = 20_000
#: One purge run per this many seconds for the whole hub (a Redis key says when the last one ran).
EVERY = 60
#: Messages a run looks at, oldest first.
MESSAGES_PER_RUN = 200
#: A message in one of these states will not get new delivery rows.
SETTLED_MESSAGES = ("planned", "cancelled", "expired")

counts_table = DeliveryCount.__table__


def retention_period(hub: Hub) -> timedelta:
    return timedelta(days=hub.settings.queue.retention_days)


async def keep_counts(session: Any, rows: Iterable[tuple[int, str, str]]) -> None:
    """Add ``(message_id, channel, state)`` rows about to be deleted to the kept counts."""
    tally = Counter(rows)
    if not tally:
        return
    dialect = postgresql if session.bind.dialect.name == "postgresql" else sqlite
    insert = dialect.insert(counts_table).values(
        [{"message_id": m, "channel": c, "state": s, "count": n} for (m, c, s), n in sorted(tally.items())]
    )
    await session.execute(
        insert.on_conflict_do_update(
            index_elements=["message_id", "channel", "state"],
            set_={"count": counts_table.c["count"] + insert.excluded["count"]},
        )
    )


async def kept_counts(session: Any, message_id: int) -> list[tuple[str, str, int]]:
    """``(channel, state, count)`` of a message's deliveries no longer held row by row."""
    rows = await session.execute(
        select(counts_table.c.channel, counts_table.c.state, counts_table.c["count"]).where(
            counts_table.c.message_id == message_id
        )
    )
    return [(channel, state, int(count)) for channel, state, count in rows.all()]


@dataclass
class Purged:
    rows: int = 0
    messages: int = 0


async def purge(
    hub: Hub,
    *,
    now: datetime | None = None,
    older_than: timedelta | None = None,
    chunk: int = CHUNK,
    budget: int = BUDGET,
) -> Purged:
    """Move the settled delivery rows of old messages into counts; drop their renderings and audience.

    A message is done once none of its rows is pending: then its renderings go, which is also how a
    later run knows to skip it. Safe to run in several processes at once (each row is deleted once,
    and counted by the transaction that deleted it).
    """
    cutoff = (now or utcnow()) - (older_than or retention_period(hub))
    purged = Purged()
    async with hub.db.session() as session:
        old = list(
            (
                await session.execute(
                    select(Message.id)
                    .where(
                        Message.send_at < cutoff,
                        Message.state.in_(SETTLED_MESSAGES),
                        exists().where(Rendering.message_id == Message.id),
                    )
                    .order_by(Message.id)
                    .limit(MESSAGES_PER_RUN)
                )
            ).scalars()
        )
    for message_id in old:
        while budget > 0:
            size = min(chunk, budget)
            async with hub.db.transaction() as session:
                # Along (message, state), never in id order: ``ORDER BY id LIMIT`` let PostgreSQL walk
                # the primary key from the table's first row to this message's (tests/scale). Rows
                # another purge or a receipt holds are skipped, never waited for (PostgreSQL; SQLite
                # has one writer and renders nothing).
                picked = (
                    select(deliveries.c.id)
                    .where(deliveries.c.message_id == message_id, deliveries.c.state.in_(FINAL))
                    .limit(size)
                    .with_for_update(skip_locked=True)
                )
                gone = (
                    await session.execute(
                        delete(deliveries)
                        .where(deliveries.c.id.in_(picked))
                        .returning(deliveries.c.channel, deliveries.c.state)
                    )
                ).all()
                await keep_counts(session, ((message_id, c, s) for c, s in gone))
            purged.rows += len(gone)
            budget -= len(gone)
            if len(gone) < size:
                break
        if budget <= 0:
            break
        async with hub.db.transaction() as session:
            # Any row left: still pending, or skipped above because another transaction held it.
            unsettled = await session.scalar(
                select(deliveries.c.id).where(deliveries.c.message_id == message_id).limit(1)
            )
            if unsettled is None:
                await session.execute(delete(Rendering).where(Rendering.message_id == message_id))
                await session.execute(delete(MessageEndpoint).where(MessageEndpoint.message_id == message_id))
                purged.messages += 1
    if purged.rows or purged.messages:
        log.info("retention_purged", deliveries=purged.rows, messages=purged.messages)
    return purged


def due_key(hub: Hub) -> str:
    """Set for ``EVERY`` seconds by the run that purged last: while it is there, no other run starts."""
    return f"{hub.queue.prefix}:retention"


async def tidy(hub: Hub) -> None:
    """The reconciler's housekeeping: finish erasures whose reply went out; purge, once per ``EVERY``."""
    # hub.citizens builds on this module (keep_counts): imported here, where both are loaded.
    from hub.citizens import finish_erasures

    await finish_erasures(hub)
    due = hub.redis is None
    with contextlib.suppress(*REDIS_DOWN):  # no Redis, no purge this time: nothing is lost by waiting
        due = due or bool(await hub.redis.set(due_key(hub), "1", nx=True, ex=EVERY))
    if due:
        await purge(hub)
