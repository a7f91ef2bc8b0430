"""Inbound records from every channel, answered by one implementation in the core."""

from __future__ import annotations

from sqlalchemy import func, update

from channels.base import Inbound
from hub.bot import answer
from hub.clock import utcnow
from hub.context import Hub
from hub.logs import log
from hub.store.models import Delivery


async def handle_inbound(hub: Hub, record: Inbound) -> None:
    if record.kind == "receipt":
        await apply_receipt(hub, record)
        return
    await answer(hub, record)


async def apply_receipt(hub: Hub, record: Inbound) -> bool:
    """A delivery report moves a delivery to delivered or failed; unknown or final ones do not move.

    A report can overtake the worker's own record of the send (Kannel reports within milliseconds, the
    worker writes outcomes in groups): a row still "sending", or "retrying" after an ambiguous timeout,
    was handed to the provider, so "delivered" applies to it, and the worker's late record then finds it
    no longer "sending" and leaves it be. "failed" applies only to a send in flight or done.
    """
    if record.delivery_id is None or record.receipt_status not in ("delivered", "failed"):
        return False
    table = Delivery.__table__
    before = ("sending", "retrying", "sent") if record.receipt_status == "delivered" else ("sending", "sent")
    now = utcnow()
    error = None if record.receipt_status == "delivered" else (record.text or "delivery report: failed")
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
        )
    changed = bool(result.rowcount)
    log.info(
        "receipt",
        channel=record.channel,
        delivery_id=record.delivery_id,
        status=record.receipt_status,
        applied=changed,
    )
    return changed
