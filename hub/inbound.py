"""Inbound records from every channel, answered by one implementation in the core."""

from __future__ import annotations

import contextlib
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update

from channels.base import Inbound, RecipientGone
from hub import metrics
from hub.bot import answer
from hub.clock import utcnow
from hub.context import Hub
from hub.delivery.fallback import fall_back
from hub.delivery.sender import requeue_retries
from hub.logs import log
from hub.queue import REDIS_DOWN
from hub.store.models import Delivery, Endpoint

#: Each report's state, and the states it may follow: a state only moves forward (DESIGN.md rule 2).
AFTER: dict[str, tuple[str, ...]] = {
    "delivered": ("sending", "retrying", "sent"),
    "read": ("sending", "retrying", "sent", "delivered"),
    "failed": ("sending", "sent"),
    "gone": ("sending", "sent"),
}


async def handle_inbound(hub: Hub, record: Inbound) -> None:
    if record.kind == "receipt":
        await apply_receipt(hub, record)
        return
    await answer(hub, record)


async def apply_receipt(hub: Hub, record: Inbound) -> bool:
    """A delivery report moves a delivery to delivered, read, failed or gone, and never backwards.

    A report can overtake the worker's own record of the send (Kannel reports within milliseconds, the
    worker writes outcomes in groups): a row still "sending", or "retrying" after an ambiguous timeout,
    was handed to the provider, so "delivered" and "read" apply to it, and the worker's late record then
    finds it no longer "sending" and leaves it be. Providers send reports in any order (a chat app's
    statuses may arrive read before delivered): "read" follows "delivered", a "delivered" after "read"
    changes nothing, and "failed" applies only to a send in flight or done, never after a report that
    it arrived. Unknown or final rows do not move. "gone" is a failure that says the address cannot be
    reached on this channel (reported after the send was accepted): as for ``RecipientGone``, the
    endpoint is deactivated and, when the report names a ``fallback`` channel, the message is queued
    once for the same number there (``hub.delivery.fallback``), in the same transaction.
    """
    if record.delivery_id is None or record.receipt_status not in AFTER:
        return False
    table = Delivery.__table__
    before = AFTER[record.receipt_status]
    now = utcnow()
    error = None
    if record.receipt_status in ("failed", "gone"):
        error = (record.text or f"delivery report: {record.receipt_status}")[:500]
    retry: list[tuple[int, datetime]] = []
    async with hub.db.transaction() as session:
        result = await session.execute(
            update(table)
            .where(
                table.c.id == record.delivery_id, table.c.channel == record.channel, table.c.state.in_(before)
            )
            .values(
                state=record.receipt_status,
                updated_at=now,
                lease_until=None,
                error=error,
                sent_at=func.coalesce(table.c.sent_at, now),
            )
            .returning(table.c.lane)
        )
        lanes = list(result.scalars())
        if lanes and record.receipt_status == "gone":
            retry = await _gone(hub, session, record.delivery_id, error or "", record.fallback, now)
    if retry:
        with contextlib.suppress(*REDIS_DOWN):  # else the reconciler queues it
            await requeue_retries(hub, retry)
    changed = bool(lanes)
    if changed:
        metrics.deliveries(record.channel, lanes[0], {record.receipt_status: 1})
    log.info(
        "receipt",
        channel=record.channel,
        delivery_id=record.delivery_id,
        status=record.receipt_status,
        applied=changed,
    )
    return changed


async def _gone(
    hub: Hub, session: Any, delivery_id: int, reason: str, fallback: str | None, now: datetime
) -> list[tuple[int, datetime]]:
    """The endpoint of a delivery reported gone is deactivated; the fallback, if named, is created."""
    endpoint_id = await session.scalar(select(Delivery.endpoint_id).where(Delivery.id == delivery_id))
    await session.execute(
        update(Endpoint.__table__)
        .where(Endpoint.__table__.c.id == endpoint_id)
        .values(active=False, deactivated_reason=reason[:300])
    )
    return await fall_back(hub, session, [(delivery_id, RecipientGone(reason, fallback=fallback))], now)
