"""Outcomes: recorded only for rows this claim still holds, so states only move forward."""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, select, update
from sqlalchemy.exc import IntegrityError

from channels.base import Moved, Outcome, RecipientGone, Rejected, RetryLater, Sent
from hub.clock import utcnow
from hub.context import Hub
from hub.delivery.claim import finish_statement
from hub.delivery.states import deliveries
from hub.store.models import (
    Delivery,
    Endpoint,
    Message,
)

_record = (
    update(deliveries)
    .where(
        deliveries.c.id == bindparam("b_id"),
        deliveries.c.claim == bindparam("b_claim"),
        deliveries.c.state == "sending",
    )
    .values(
        state=bindparam("b_state"),
        attempts=deliveries.c.attempts + bindparam("b_spent"),
        provider_id=bindparam("b_provider"),
        error=bindparam("b_error"),
        sent_at=bindparam("b_sent_at"),
        next_attempt_at=bindparam("b_next"),
        lease_until=None,
        updated_at=bindparam("b_now"),
    )
)


@dataclass
class Recorded:
    retry: list[tuple[int, datetime]]
    counts: dict[str, int]
    #: Messages of these outcomes that were cancelled meanwhile (the sender stops their rows).
    cancelled: set[int] = field(default_factory=set)


async def record(
    hub: Hub,
    token: str,
    results: Sequence[tuple[int, Outcome]],
    attempts: dict[int, int],
    deadlines: dict[int, datetime] | None = None,
    messages: dict[int, int] | None = None,
    *,
    finish: bool = False,
) -> Recorded:
    """Write a group of outcomes in one transaction; returns what must be retried and when.

    Writing the same group twice changes nothing the second time (only rows this claim still holds in
    ``sending`` are written), so a write that failed may simply be tried again. Rows are written in id
    order, the one order every multi-row lock in the hub follows. ``finish``: the claim's last write, which
    also drops the claim row when none of its rows is still ``sending`` (``claim.finish``, one
    transaction fewer per batch).
    """
    q = hub.settings.queue
    now = utcnow()
    params: list[dict[str, Any]] = []
    retry: list[tuple[int, datetime]] = []
    gone: dict[int, str] = {}
    moved: dict[int, str] = {}
    counts: dict[str, int] = defaultdict(int)
    for delivery_id, outcome in sorted(results, key=lambda r: r[0]):
        state, provider, error, sent_at, next_at, spent = "failed", None, None, None, now, 1
        match outcome:
            case Sent(provider_id=pid):
                state, provider, sent_at = "sent", pid, now
            case RetryLater(reason=reason, delay=delay, provider=provider_trouble):
                # The provider's trouble (flood control, a gateway down) is not the recipient's: it
                # spends no attempt, and only time (valid-until or the retry horizon) ends the retries.
                spent = 0 if provider_trouble else 1
                tries = attempts.get(delivery_id, 0) + spent
                wait = delay if delay is not None else backoff(max(1, tries), q)
                next_at = now + timedelta(seconds=wait)
                deadline = (deadlines or {}).get(delivery_id)
                if spent and tries >= q.max_attempts:
                    state, error = "failed", f"gave up after {tries} attempts: {reason}"
                elif deadline is not None and next_at > deadline:
                    state, error = "failed", f"gave up at the message's retry deadline: {reason}"
                else:
                    state, error = "retrying", reason
                    retry.append((delivery_id, next_at))
            case RecipientGone(reason=reason):
                state, error = "gone", reason
                gone[delivery_id] = reason
            case Rejected(reason=reason):
                state, error = "failed", reason
            case Moved(new_address=address):
                state, error = "retrying", "moved to a new address"
                moved[delivery_id] = address
                retry.append((delivery_id, now))
        counts[state] += 1
        params.append(
            {
                "b_id": delivery_id,
                "b_claim": token,
                "b_state": state,
                "b_spent": spent,
                "b_provider": provider,
                "b_error": error[:500] if error else None,
                "b_sent_at": sent_at,
                "b_next": next_at,
                "b_now": now,
            }
        )
    if not params:
        return Recorded([], {})
    cancelled: set[int] = set()
    wanted = {messages[i] for i, _ in results if messages and i in messages}
    if wanted:  # read before the write transaction, which on SQLite holds the one write lock
        async with hub.db.session() as session:
            cancelled = set(
                (
                    await session.execute(
                        select(Message.id).where(Message.id.in_(wanted), Message.state == "cancelled")
                    )
                ).scalars()
            )
    async with hub.db.transaction() as session:
        await session.execute(_record, params)
        if gone:
            await _deactivate(session, gone)
        for delivery_id, address in sorted(moved.items()):
            await _move(session, delivery_id, address)
        if finish:
            await session.execute(finish_statement(token))
    return Recorded(retry, dict(counts), cancelled)


async def _deactivate(session: Any, gone: dict[int, str]) -> None:
    rows = (
        await session.execute(
            select(Delivery.id, Delivery.endpoint_id)
            .where(Delivery.id.in_(list(gone)))
            .order_by(Delivery.endpoint_id)
        )
    ).all()
    for delivery_id, endpoint_id in rows:
        await session.execute(
            update(Endpoint.__table__)
            .where(Endpoint.__table__.c.id == endpoint_id)
            .values(active=False, deactivated_reason=gone[delivery_id][:300])
        )


async def _move(session: Any, delivery_id: int, address: str) -> None:
    endpoint_id = await session.scalar(select(Delivery.endpoint_id).where(Delivery.id == delivery_id))
    try:
        async with session.begin_nested():
            await session.execute(
                update(Endpoint.__table__)
                .where(Endpoint.__table__.c.id == endpoint_id)
                .values(address=address)
            )
    except IntegrityError:
        await session.execute(
            update(deliveries)
            .where(deliveries.c.id == delivery_id)
            .values(state="failed", error="moved to an address another endpoint already has")
        )


def backoff(attempt: int, q: Any) -> float:
    """Exponential backoff with full jitter: spreads retries so a recovering provider is not stampeded."""
    ceiling = min(q.retry_max_seconds, q.retry_base_seconds * (2 ** max(0, attempt - 1)))
    return random.uniform(q.retry_base_seconds / 2, max(q.retry_base_seconds / 2, ceiling))
