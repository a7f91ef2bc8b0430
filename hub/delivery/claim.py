"""Claims: a worker sends only what it claimed; a second run of the same job finds nothing to claim."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import and_, or_, select, update

from channels.base import Button, Content, Outbound
from hub.clock import utcnow
from hub.context import Hub
from hub.delivery.messages import link
from hub.delivery.states import PENDING, deliveries
from hub.render import CONFIRM_MARK, UNSUBSCRIBE_MARK
from hub.store.models import (
    Delivery,
    Endpoint,
    Message,
    Rendering,
    Subscriber,
)


@dataclass(frozen=True)
class Claimed:
    token: str
    items: list[Outbound]
    skipped: int
    attempts: dict[int, int]


async def claim(hub: Hub, delivery_ids: Sequence[int]) -> Claimed:
    token = uuid.uuid4().hex
    now = utcnow()
    lease = now + timedelta(seconds=hub.settings.queue.lease_seconds)
    # ``state || ''`` keeps SQLite on the primary key: left to itself it reads the state index for the OR,
    # which visits every queued row of every broadcast (12 ms instead of 0.3 ms per batch at 100k).
    state = deliveries.c.state.op("||")("")
    async with hub.db.transaction() as session:
        claimed = (
            await session.execute(
                update(deliveries)
                .where(
                    deliveries.c.id.in_(list(delivery_ids)),
                    or_(
                        and_(state.in_(PENDING), deliveries.c.next_attempt_at <= now),
                        and_(state == "sending", deliveries.c.lease_until < now),
                    ),
                )
                .values(
                    state="sending",
                    claim=token,
                    lease_until=lease,
                    attempts=deliveries.c.attempts + 1,
                    updated_at=now,
                )
                .returning(deliveries.c.id, deliveries.c.attempts)
            )
        ).all()
        attempts = {row[0]: row[1] for row in claimed}
        if not attempts:
            return Claimed(token, [], 0, {})
        rows = (
            await session.execute(
                select(
                    Delivery.id,
                    Delivery.message_id,
                    Delivery.lane,
                    Delivery.channel,
                    Endpoint.id,
                    Endpoint.address,
                    Endpoint.kind,
                    Endpoint.active,
                    Subscriber.locale,
                    Message.state,
                    Message.not_after,
                    Message.kind,
                )
                .join(Endpoint, Endpoint.id == Delivery.endpoint_id)
                .join(Subscriber, Subscriber.id == Endpoint.subscriber_id)
                .join(Message, Message.id == Delivery.message_id)
                .where(Delivery.id.in_(list(attempts)))
                .order_by(Delivery.id)
            )
        ).all()
        skip: dict[int, str] = {}
        live = []
        for row in rows:
            reason = None
            if row[9] == "cancelled":
                reason = "message cancelled"
            elif row[10] is not None and row[10] <= now:
                reason = "message expired (valid-until passed)"
            elif not row[7]:
                reason = "endpoint inactive"
            if reason:
                skip[row[0]] = reason
            else:
                live.append(row)
        for reason in set(skip.values()):
            ids = [i for i, r in skip.items() if r == reason]
            await session.execute(
                update(deliveries)
                .where(deliveries.c.id.in_(ids))
                .values(state="skipped", error=reason, lease_until=None, updated_at=now)
            )
        contents = await _contents(session, {(r[1], r[3], r[8]) for r in live})
    items = []
    for r in live:
        content = contents.get((r[1], r[3], r[8])) or contents.get(
            (r[1], r[3], hub.settings.hub.default_locale)
        )
        if content is None:
            content = next(c for (m, ch, _), c in contents.items() if m == r[1] and ch == r[3])
        unsubscribe = None
        if r[11] in ("announcement", "correction"):
            unsubscribe = link(hub, "unsubscribe", r[4], r[1])
        merge = {UNSUBSCRIBE_MARK: unsubscribe or ""}
        if r[11] == "confirmation":
            merge[CONFIRM_MARK] = link(hub, "confirm", r[4], r[1])
        content = _merge(content, merge)
        items.append(
            Outbound(
                delivery_id=r[0],
                address=r[5],
                content=content,
                endpoint_kind=r[6],
                lane=r[2],
                unsubscribe_url=unsubscribe,
            )
        )
    return Claimed(token, items, len(skip), attempts)


async def _contents(session: Any, wanted: set[tuple[int, str, str]]) -> dict[tuple[int, str, str], Content]:
    if not wanted:
        return {}
    message_ids = {m for m, _, _ in wanted}
    channels = {c for _, c, _ in wanted}
    rows = (
        await session.execute(
            select(Rendering).where(Rendering.message_id.in_(message_ids), Rendering.channel.in_(channels))
        )
    ).scalars()
    return {
        (r.message_id, r.channel, r.locale): Content(
            text=r.text,
            html=r.html,
            subject=r.subject,
            locale=r.locale,
            buttons=tuple(Button(**b) for b in r.buttons or ()),
        )
        for r in rows
    }


def _merge(content: Content, fields: dict[str, str]) -> Content:
    """Fill the per-recipient merge fields (links that differ for every subscriber)."""
    text, page = content.text, content.html
    for mark, value in fields.items():
        text = text.replace(mark, value)
        page = page.replace(mark, value) if page else page
    if text is content.text and page is content.html:
        return content
    return Content(
        text=text, html=page, subject=content.subject, buttons=content.buttons, locale=content.locale
    )


async def renew_lease(hub: Hub, token: str) -> None:
    lease = utcnow() + timedelta(seconds=hub.settings.queue.lease_seconds)
    async with hub.db.transaction() as session:
        await session.execute(
            update(deliveries)
            .where(deliveries.c.claim == token, deliveries.c.state == "sending")
            .values(lease_until=lease)
        )



async def release(hub: Hub, token: str, ids: Sequence[int], reason: str) -> list[int]:
    """Give claimed rows back (the adapter crashed before saying anything about them)."""
    if not ids:
        return []
    now = utcnow()
    async with hub.db.transaction() as session:
        result = await session.execute(
            update(deliveries)
            .where(
                deliveries.c.id.in_(list(ids)), deliveries.c.claim == token, deliveries.c.state == "sending"
            )
            .values(
                state="retrying", error=reason[:500], lease_until=None, next_attempt_at=now, updated_at=now
            )
            .returning(deliveries.c.id)
        )
        return [r[0] for r in result]

