"""Reconciliation: find what is due in the database that Redis may no longer hold, and queue it."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, bindparam, select, update

from hub import audience, metrics
from hub.clock import utcnow
from hub.context import Hub
from hub.delivery import retention
from hub.delivery.claim import dead_claims
from hub.delivery.plan import publish_started
from hub.delivery.states import PENDING, deliveries
from hub.logs import log
from hub.store.models import (
    Message,
)

#: The pending states written into the statement (not bound): PostgreSQL uses a partial index on pending
#: rows only when it can see the states, in a cached generic plan too.
PENDING_LITERAL = deliveries.c.state.in_(
    bindparam("pending_states", list(PENDING), expanding=True, literal_execute=True)
)


async def due_for_requeue(
    hub: Hub, *, redis_lost: bool, limit: int = 100_000
) -> list[tuple[str, str, list[int]]]:
    """Deliveries to queue again: due and never/long ago enqueued, or held by a dead worker's lease.

    Each step is a short transaction of its own (on SQLite a write holds the one write lock), and rows
    another transaction holds are skipped, never waited for: a claim has them, or another reconciler.
    """
    now = utcnow()
    stale = now - timedelta(seconds=hub.settings.queue.stale_after_seconds)
    due = and_(PENDING_LITERAL, deliveries.c.next_attempt_at <= now)
    async with hub.db.transaction() as session:
        # Held by a dead worker's claim (its lease ran out): each such batch once (claims.requeued).
        dead = await dead_claims(session, now, redis_lost=redis_lost, again=stale)
    pick = select(deliveries.c.id)
    if redis_lost:  # every due row; the deferred jobs of the others are gone too
        await _forget_enqueues(hub, now)
        wanted = [pick.where(due).order_by(deliveries.c.id)]
    else:
        # Never enqueued, or enqueued long ago (a lost enqueue): along the pending rows' index by
        # enqueued_at, which stops at the first row enqueued recently (tests/scale: never every pending row).
        wanted = [
            pick.where(due, deliveries.c.enqueued_at.is_(None)),
            pick.where(due, deliveries.c.enqueued_at < stale).order_by(deliveries.c.enqueued_at),
        ]
    rows: list[Any] = []
    for query in wanted:
        if len(rows) >= limit:
            break
        picked = query.limit(limit - len(rows))
        if hub.db.dialect == "postgresql":
            picked = picked.with_for_update(skip_locked=True)
        async with hub.db.transaction() as session:
            rows += (
                await session.execute(
                    update(deliveries)
                    .where(deliveries.c.id.in_(picked))
                    .values(enqueued_at=now)
                    .returning(deliveries.c.id, deliveries.c.lane, deliveries.c.channel)
                )
            ).all()
    rows.sort(key=lambda r: r[0])
    metrics.reconciled("lost_enqueue" if redis_lost else "requeued", len(rows))
    metrics.reconciled("dead_lease", len(dead))
    grouped: dict[tuple[str, str], list[int]] = defaultdict(list)
    for delivery_id, lane, channel in [*rows, *dead]:
        grouped[(lane, channel)].append(delivery_id)
    size = hub.settings.queue.batch_size
    return [
        (lane, channel, ids[i : i + size])
        for (lane, channel), ids in grouped.items()
        for i in range(0, len(ids), size)
    ]


async def _forget_enqueues(hub: Hub, now: datetime) -> None:
    """Redis lost its data, and with it the deferred jobs of rows not yet due (a retry's due time).

    Marked never enqueued, each is queued by the pass for never-enqueued rows once it is due, instead of
    ``stale_after_seconds`` after its last enqueue (seen in the chaos soak: SMS rows cooling off).
    """
    later = select(deliveries.c.id).where(
        PENDING_LITERAL, deliveries.c.next_attempt_at > now, deliveries.c.enqueued_at.is_not(None)
    )
    if hub.db.dialect == "postgresql":
        later = later.with_for_update(skip_locked=True)
    async with hub.db.transaction() as session:
        await session.execute(update(deliveries).where(deliveries.c.id.in_(later)).values(enqueued_at=None))


async def messages_to_plan(hub: Hub) -> list[tuple[int, str, bool]]:
    """Messages whose fan-out is due or unfinished: ``(id, lane, stalled)``.

    ``stalled``: the planner has made no progress for ``stale_after_seconds`` (its worker died while arq
    still holds the job), so a fresh planner job is needed.
    """
    now = utcnow()
    stall = now - timedelta(seconds=hub.settings.queue.stale_after_seconds)
    table = Message.__table__
    async with hub.db.transaction() as session:
        # A schedule may have been moved earlier: its deferred job is then too late, so start a fresh one.
        moved = (
            await session.execute(
                update(table)
                .where(table.c.state == "scheduled", table.c.send_at <= now)
                .values(state="planning")
                .returning(table.c.id, table.c.announcement_id)
            )
        ).all()
        started = {message_id for message_id, _ in moved}
        await publish_started(session, (announcement_id for _, announcement_id in moved))
        rows = (
            await session.execute(
                select(Message.id, Message.lane, Message.plan_touched_at, Message.send_at).where(
                    Message.state == "planning", Message.send_at <= now
                )
            )
        ).all()
    return [(r[0], r[1], r[0] in started or max(r[2] or r[3], r[3]) < stall) for r in rows]


async def reconcile(ctx: dict[str, Any]) -> dict[str, int]:
    """Queue again what the database says is due and Redis may have lost; start due scheduled messages."""
    hub: Hub = ctx["hub"]
    redis_lost = await hub.queue.mark_epoch()
    if redis_lost:
        log.warning("redis_epoch_missing_requeue_all")
    planned = 0
    for message_id, lane, stalled in await messages_to_plan(hub):
        planned += bool(await hub.queue.plan(message_id, lane, fresh=stalled or redis_lost))
        metrics.reconciled("plan_restarted", int(stalled))
    batches = await due_for_requeue(hub, redis_lost=redis_lost)
    for lane in ("urgent", "bulk"):
        await hub.queue.send_many(
            lane, [(ch, ids) for ln, ch, ids in batches if ln == lane and ch in hub.channels]
        )
    await retention.tidy(hub)  # erasures whose reply went out; old delivery rows to counts
    await audience.refresh_if_due(hub)  # the console's recipient counts, when due and changed
    from hub.relays.remind import remind_and_report  # imports hub.delivery: not at module load

    await remind_and_report(hub)  # kelurahan relays: one reminder each, then the office told (issue 11)
    if batches or planned:
        log.info("reconciled", batches=len(batches), plans=planned)
    return {"batches": len(batches), "plans": planned}
