"""What became of a message, and stopping one."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy import func as sql_func

from hub.clock import utcnow
from hub.context import Hub
from hub.delivery.cancels import CANCEL_FRESH, cancel_key
from hub.delivery.claim import live_claim
from hub.delivery.retention import kept_counts
from hub.delivery.states import PENDING, STATES, deliveries
from hub.logs import log
from hub.queue import REDIS_DOWN
from hub.store.models import (
    Delivery,
    Message,
)


async def status(hub: Hub, message_id: int) -> dict[str, Any] | None:
    async with hub.db.session() as session:
        message = await session.get(Message, message_id)
        if message is None:
            return None
        rows = (
            await session.execute(
                select(Delivery.channel, Delivery.state, sql_func.count())
                .where(Delivery.message_id == message_id)
                .group_by(Delivery.channel, Delivery.state)
            )
        ).all()
        # Rows purged by retention or erased with their address are kept as counts.
        rows = [*rows, *await kept_counts(session, message_id)]
        deferred = await _deferred(session, message_id) if any(r[1] == "retrying" for r in rows) else []
    channels: dict[str, dict[str, int]] = {}
    totals: dict[str, int] = dict.fromkeys(STATES, 0)
    for channel, state, count in rows:
        channels.setdefault(channel, dict.fromkeys(STATES, 0))[state] += count
        totals[state] += count
    pending = totals["queued"] + totals["sending"] + totals["retrying"]
    return {
        "id": message.id,
        "kind": message.kind,
        "lane": message.lane,
        "state": message.state,
        "office_id": message.office_id,
        "send_at": message.send_at.isoformat() + "Z",
        "not_after": message.not_after.isoformat() + "Z" if message.not_after else None,
        "total": sum(totals.values()),
        "pending": pending,
        "done": message.state in ("planned", "cancelled", "expired") and pending == 0,
        "progress": progress(message.state, pending),
        "totals": totals,
        "channels": channels,
        "deferred": deferred,
    }


async def _deferred(session: Any, message_id: int, limit: int = 20) -> list[dict[str, Any]]:
    """Deliveries waiting to be tried again, by channel and reason, with the earliest next try.

    A provider's limit (flood control, a messaging limit per 24 h) can hold part of an audience for
    hours; staff see how many wait, why, and when the next ones go.
    """
    rows = (
        await session.execute(
            select(
                Delivery.channel,
                Delivery.error,
                sql_func.count(),
                sql_func.min(Delivery.next_attempt_at),
            )
            .where(Delivery.message_id == message_id, Delivery.state == "retrying")
            .group_by(Delivery.channel, Delivery.error)
            .order_by(sql_func.count().desc(), Delivery.channel)
            .limit(limit)
        )
    ).all()
    return [
        {
            "channel": channel,
            "reason": error or "-",
            "count": int(n),
            "next_attempt_at": next_at.isoformat() + "Z" if next_at else None,
        }
        for channel, error, n, next_at in rows
    ]


def progress(state: str, pending: int) -> str:
    """Where a message stands, in the words an operator expects.

    The stored state ``planned`` only means fan-out finished; whether the sends did is in ``pending``.
    """
    if state in ("scheduled", "cancelled", "expired"):
        return state
    if state == "planning":
        return "preparing"
    return "sending" if pending else "done"


async def cancel(hub: Hub, message_id: int, reason: str = "message cancelled") -> int:
    """Stop a message: nothing still pending goes out. Returns how many deliveries were skipped.

    Workers sending this message's rows see the Redis key before their next hand-off (and the database
    flag at their next flush): after this returns, at most the adapter's concurrency more sends per
    worker (docs/design.md, "Cancel"). Rows stuck in ``sending`` under a dead claim are skipped here.
    """
    now = utcnow()
    key_set: float | None = None
    if hub.redis is not None:
        try:
            await hub.redis.set(cancel_key(hub.queue.prefix, message_id), "1", ex=7 * 86400)
            key_set = time.monotonic()
        except REDIS_DOWN:
            log.warning("cancel_redis_down", message_id=message_id, hint="workers stop at their next flush")
    async with hub.db.transaction() as session:
        await session.execute(
            update(Message.__table__)
            .where(
                Message.__table__.c.id == message_id,
                Message.__table__.c.state.in_(("scheduled", "planning", "planned")),
            )
            .values(state="cancelled")
        )
        result = await session.execute(
            update(deliveries)
            .where(deliveries.c.message_id == message_id, deliveries.c.state.in_(PENDING))
            .values(state="skipped", error=reason, updated_at=now)
        )
        stuck = await session.execute(
            update(deliveries)
            .where(
                deliveries.c.message_id == message_id,
                deliveries.c.state == "sending",
                ~live_claim(now),
            )
            .values(state="skipped", error=reason, updated_at=now)
        )
    if key_set is not None:  # senders trust a read of the key this long (hub.delivery.cancels.CancelWatch)
        await asyncio.sleep(max(0.0, key_set + CANCEL_FRESH - time.monotonic()))
    return int(result.rowcount or 0) + int(stuck.rowcount or 0)


async def unfinished(hub: Hub, horizon: float = 0.0) -> int:
    """Deliveries due within ``horizon`` seconds or in flight, plus messages still being planned."""
    now = utcnow()
    soon = now + timedelta(seconds=horizon)
    async with hub.db.session() as session:
        deliveries_due = await session.scalar(
            select(sql_func.count())
            .select_from(deliveries)
            .where(
                or_(
                    and_(deliveries.c.state.in_(PENDING), deliveries.c.next_attempt_at <= soon),
                    deliveries.c.state == "sending",
                )
            )
        )
        planning = await session.scalar(
            select(sql_func.count())
            .select_from(Message)
            .where(Message.state == "planning", Message.send_at <= now)
        )
    return int(deliveries_due or 0) + int(planning or 0)
