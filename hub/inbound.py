"""Inbound records from every channel, answered by one implementation in the core."""

from __future__ import annotations

from sqlalchemy import update

from channels.base import Inbound
from hub.clock import utcnow
from hub.context import Hub
from hub.logs import log
from hub.store.models import Delivery


async def handle_inbound(hub: Hub, record: Inbound) -> None:
    if record.kind == "receipt":
        await apply_receipt(hub, record)
        return
    from hub.commands import answer

    await answer(hub, record)


async def apply_receipt(hub: Hub, record: Inbound) -> bool:
    """A delivery report moves a sent delivery to delivered or failed; anything else changes nothing."""
    if record.delivery_id is None or record.receipt_status not in ("delivered", "failed"):
        return False
    table = Delivery.__table__
    async with hub.db.transaction() as session:
        result = await session.execute(
            update(table)
            .where(table.c.id == record.delivery_id, table.c.channel == record.channel, table.c.state == "sent")
            .values(state=record.receipt_status, updated_at=utcnow(),
                    error=None if record.receipt_status == "delivered" else (record.text or "delivery report: failed"))
        )
    changed = bool(result.rowcount)
    log.info("receipt", channel=record.channel, delivery_id=record.delivery_id, status=record.receipt_status,
             applied=changed)
    return changed
