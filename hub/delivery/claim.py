"""Claims: a worker sends only what it claimed; a second run of the same job finds nothing to claim.

A claim is one row in ``claims`` holding the lease; its delivery rows point at it by token. Renewing
the lease writes that one row and never a delivery row, so renewal cannot contend with outcome recording
(docs/design.md, "Claims and leases"). Every statement that locks several delivery rows takes them in id
order or skips rows others hold (``SKIP LOCKED``), so no two of them can deadlock.
"""

from __future__ import annotations

import html
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import DateTime, and_, bindparam, delete, exists, func, or_, select, update

from channels.base import Button, Content, Outbound
from hub.clock import utcnow
from hub.context import Hub
from hub.delivery.messages import link
from hub.delivery.order import hold_back, release_held, requeue_held
from hub.delivery.states import PENDING, deliveries
from hub.relays.acks import RELAYED_KINDS
from hub.relays.outbound import for_relay
from hub.render import CONFIRM_MARK, TOPIC_MARK, UNSUBSCRIBE_MARK
from hub.store.models import (
    Claim,
    Delivery,
    Endpoint,
    Message,
    Office,
    Rendering,
    Subscriber,
    Topic,
)

claims = Claim.__table__


@dataclass(frozen=True)
class Claimed:
    token: str
    items: list[Outbound]
    skipped: int
    #: Attempts each delivery had spent before this claim.
    attempts: dict[int, int]
    #: The message of each claimed delivery (cancel is checked per message).
    messages: dict[int, int] = field(default_factory=dict)
    #: When retrying a delivery stops: its message's valid-until, or send time + ``retry_horizon_seconds``.
    deadlines: dict[int, datetime] = field(default_factory=dict)


def live_claim(now: Any) -> Any:
    """The delivery row's claim still holds its lease at ``now`` (a time or a bind parameter)."""
    return exists().where(claims.c.token == deliveries.c.claim, claims.c.lease_until >= now)


# The claim's statements are built once: building them per batch (the clauses, their coercions and cache
# keys) cost more CPU than SQLite took to run them.
_NOW = bindparam("b_now", type_=DateTime)
# ``state || ''`` keeps SQLite on the primary key: left to itself it reads the state index for the OR,
# which visits every queued row of every broadcast (12 ms instead of 0.3 ms per batch at 100k).
_state = deliveries.c.state.op("||")("")
_claimable = (
    select(deliveries.c.id)
    .where(
        deliveries.c.id.in_(bindparam("b_ids", expanding=True)),
        or_(
            and_(_state.in_(PENDING), deliveries.c.next_attempt_at <= _NOW),
            and_(_state == "sending", ~live_claim(_NOW)),
        ),
    )
    .order_by(deliveries.c.id)
    # PostgreSQL: rows another transaction holds are someone else's business right now; never wait
    # for them (waiting is how lock cycles start). SQLite renders nothing here: it has one writer.
    .with_for_update(skip_locked=True)
)
_take = (
    update(deliveries)
    .where(deliveries.c.id.in_(_claimable))
    .values(state="sending", claim=bindparam("b_token"), lease_until=None, updated_at=_NOW)
    .returning(deliveries.c.id, deliveries.c.attempts)
)
_new_claim = claims.insert().values(
    token=bindparam("b_token"), lease_until=bindparam("b_lease"), requeued=False, created_at=_NOW
)
_drop_claim = delete(claims).where(claims.c.token == bindparam("b_token"))
_to_send = (
    select(
        Delivery.id.label("delivery_id"),
        Delivery.message_id,
        Delivery.lane,
        Delivery.channel,
        Endpoint.id.label("endpoint_id"),
        Endpoint.address,
        Endpoint.kind.label("endpoint_kind"),
        Endpoint.active.label("endpoint_active"),
        Subscriber.locale,
        Message.state.label("message_state"),
        Message.not_after,
        Message.send_at,
        Message.kind.label("message_kind"),
        Delivery.topic_id,
        func.coalesce(Topic.name, Office.name, "").label("topic_name"),
        Endpoint.relay_office_id,
        Message.announcement_id,
    )
    .join(Endpoint, Endpoint.id == Delivery.endpoint_id)
    .join(Subscriber, Subscriber.id == Endpoint.subscriber_id)
    .join(Message, Message.id == Delivery.message_id)
    .outerjoin(Topic, Topic.id == Delivery.topic_id)
    .outerjoin(Office, Office.id == Message.office_id)
    .where(Delivery.id.in_(bindparam("b_ids", expanding=True)))
    .order_by(Delivery.id)
)
_renderings = select(
    Rendering.message_id,
    Rendering.channel,
    Rendering.locale,
    Rendering.text,
    Rendering.html,
    Rendering.subject,
    Rendering.buttons,
).where(
    Rendering.message_id.in_(bindparam("b_messages", expanding=True)),
    Rendering.channel.in_(bindparam("b_channels", expanding=True)),
)


async def claim(hub: Hub, delivery_ids: Sequence[int]) -> Claimed:
    token = uuid.uuid4().hex
    now = utcnow()
    q = hub.settings.queue
    lease = now + timedelta(seconds=q.lease_seconds)
    # The write transaction holds only the claim itself: on SQLite it holds the one write lock, so nothing
    # else (reading the rows, the renderings, the reply order) runs while other workers wait for it. Core
    # connections, not ORM sessions: the pipeline's CPU per delivery (docs/design.md).
    async with hub.db.connection(write=True) as conn:
        await conn.execute(_new_claim, {"b_token": token, "b_lease": lease, "b_now": now})
        taken = (
            await conn.execute(_take, {"b_ids": list(delivery_ids), "b_token": token, "b_now": now})
        ).all()
        if not taken:
            await conn.execute(_drop_claim, {"b_token": token})
    attempts = {row.id: row.attempts for row in taken}
    if not attempts:
        return Claimed(token, [], 0, {})
    # The rows are ours now (``sending`` under this claim's lease): read what to send without a write lock.
    async with hub.db.connection() as session:
        rows = (await session.execute(_to_send, {"b_ids": sorted(attempts)})).all()
        skip: dict[int, str] = {}
        live = []
        for row in rows:
            reason = None
            if row.message_state == "cancelled":
                reason = "message cancelled"
            elif row.not_after is not None and row.not_after <= now:
                reason = "message expired (valid-until passed)"
            elif not row.endpoint_active and row.message_kind != "confirmation":
                reason = "endpoint inactive"
            if reason:
                skip[row.delivery_id] = reason
            else:
                live.append(row)
        # Replies to one chat go out in order: one whose predecessor is unsent waits (hub.delivery.order).
        replies = [(r.delivery_id, r.message_id, r.endpoint_id) for r in live if r.message_kind == "reply"]
        held = await hold_back(session, replies, now)
        live = [r for r in live if r.delivery_id not in held]
        contents = await _contents(session, {(r.message_id, r.channel, r.locale) for r in live})
    if skip or held:  # rare: a second short write, for rows this claim still holds
        async with hub.db.transaction() as session:
            for reason in set(skip.values()):
                ids = sorted(i for i, r in skip.items() if r == reason)
                await session.execute(
                    update(deliveries)
                    .where(
                        deliveries.c.id.in_(ids), deliveries.c.claim == token, deliveries.c.state == "sending"
                    )
                    .values(state="skipped", error=reason, updated_at=now)
                )
            if held:
                await release_held(session, held, now, token)
    if held:
        await requeue_held(hub, held, {r.delivery_id: (r.lane, r.channel) for r in rows})
    items = []
    horizon = timedelta(seconds=q.retry_horizon_seconds)
    deadlines: dict[int, datetime] = {}
    for r in live:
        deadline = r.send_at + horizon
        deadlines[r.delivery_id] = min(deadline, r.not_after) if r.not_after is not None else deadline
        content = contents.get((r.message_id, r.channel, r.locale)) or contents.get(
            (r.message_id, r.channel, hub.settings.hub.default_locale)
        )
        if content is None:
            content = next(c for (m, ch, _), c in contents.items() if m == r.message_id and ch == r.channel)
        unsubscribe = None
        if r.message_kind in ("announcement", "correction"):
            unsubscribe = link(hub, "unsubscribe", r.endpoint_id, r.message_id, r.topic_id)
        # The footer names the topic through which this endpoint was reached (else the sending office).
        merge = {UNSUBSCRIBE_MARK: unsubscribe or "", TOPIC_MARK: r.topic_name}
        if r.message_kind == "confirmation":
            merge[CONFIRM_MARK] = link(hub, "confirm", r.endpoint_id, r.message_id)
        content = _merge(content, merge)
        if r.relay_office_id and r.message_kind in RELAYED_KINDS and r.channel in hub.channels:
            # A kelurahan relay: how to confirm it passed this on, and the printable notice (hub.relays).
            content = for_relay(
                hub, hub.channels[r.channel], content, r.delivery_id, r.relay_office_id, r.announcement_id
            )
        items.append(
            Outbound(
                delivery_id=r.delivery_id,
                address=r.address,
                content=content,
                endpoint_kind=r.endpoint_kind,
                lane=r.lane,
                unsubscribe_url=unsubscribe,
                kind=r.message_kind,
            )
        )
    return Claimed(
        token,
        items,
        len(skip),
        attempts,
        messages={r.delivery_id: r.message_id for r in live},
        deadlines=deadlines,
    )


async def _contents(session: Any, wanted: set[tuple[int, str, str]]) -> dict[tuple[int, str, str], Content]:
    if not wanted:
        return {}
    rows = await session.execute(
        _renderings,
        {"b_messages": sorted({m for m, _, _ in wanted}), "b_channels": sorted({c for _, c, _ in wanted})},
    )
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
        page = page.replace(mark, html.escape(value)) if page else page  # a topic name may hold "&"
    if text is content.text and page is content.html:
        return content
    return Content(
        text=text, html=page, subject=content.subject, buttons=content.buttons, locale=content.locale
    )


async def renew_lease(hub: Hub, token: str) -> bool:
    """Extend the claim's lease; False when it had already run out (another worker may hold the rows).

    One row of ``claims``: never a delivery row, so renewal cannot deadlock with outcome recording.
    """
    now = utcnow()
    lease = now + timedelta(seconds=hub.settings.queue.lease_seconds)
    async with hub.db.transaction() as session:
        renewed = (
            await session.execute(
                update(claims)
                .where(claims.c.token == token, claims.c.lease_until >= now)
                .values(lease_until=lease)
                .returning(claims.c.token)
            )
        ).first()
    return renewed is not None


async def release(hub: Hub, token: str, ids: Sequence[int], reason: str) -> list[int]:
    """Give claimed rows back unsent, due now; no attempt is spent (nothing was tried)."""
    if not ids:
        return []
    now = utcnow()
    async with hub.db.transaction() as session:
        result = await session.execute(
            update(deliveries)
            .where(
                deliveries.c.id.in_(sorted(ids)), deliveries.c.claim == token, deliveries.c.state == "sending"
            )
            .values(state="retrying", error=reason[:500], next_attempt_at=now, updated_at=now)
            .returning(deliveries.c.id)
        )
        return sorted(r.id for r in result)


async def skip_unsent(hub: Hub, token: str, ids: Sequence[int], reason: str) -> int:
    """Rows this claim will not send because their message was cancelled."""
    if not ids:
        return 0
    now = utcnow()
    async with hub.db.transaction() as session:
        result = await session.execute(
            update(deliveries)
            .where(
                deliveries.c.id.in_(sorted(ids)), deliveries.c.claim == token, deliveries.c.state == "sending"
            )
            .values(state="skipped", error=reason[:500], updated_at=now)
        )
    return int(result.rowcount or 0)


async def finish(hub: Hub, token: str) -> None:
    """Drop the claim once none of its rows is still ``sending`` (else its lease runs out for recovery)."""
    async with hub.db.transaction() as session:
        await session.execute(finish_statement(token))


def finish_statement(token: str) -> Any:
    """``finish`` as a statement, for the last outcome write of a batch to carry (``record(finish=True)``)."""
    return delete(claims).where(
        claims.c.token == token,
        ~exists().where(deliveries.c.claim == token, deliveries.c.state == "sending"),
    )


async def dead_claims(
    session: Any, now: datetime, *, redis_lost: bool, again: datetime | None = None
) -> list[Any]:
    """Rows held by claims whose lease ran out: ``(id, lane, channel)``, each dead claim once.

    The claim is marked ``requeued`` (and ``requeued_at``) in the same transaction, so the reconciler
    queues its batch again once, not on every tick; once more only if its rows are still ``sending``
    when ``again`` (now - ``stale_after_seconds``) has passed its ``requeued_at``: that job was lost.
    Rows in ``sending`` with no claim row at all (left from before claims had rows) get a dead, already
    requeued claim row so they too are queued once. When Redis lost its data,
    every row without a live claim is queued again, requeued before or not.
    """
    # Claims of dead workers whose rows are all settled by now are of no further use. PostgreSQL: claim
    # rows another reconciler holds are skipped, never waited for (SQLite has one writer).
    postgres = session.bind.dialect.name == "postgresql"
    spent = select(claims.c.token).where(
        claims.c.requeued.is_(True),
        claims.c.lease_until < now - timedelta(hours=1),
        ~exists().where(deliveries.c.claim == claims.c.token, deliveries.c.state == "sending"),
    )
    if postgres:
        spent = spent.with_for_update(skip_locked=True)
    await session.execute(delete(claims).where(claims.c.token.in_(spent)))
    # Dead: its lease ran out and it was never queued again, or it was queued again ``again`` ago and
    # its rows are still ``sending`` (that job was lost too, e.g. with a Redis restart before a worker
    # took it). Claims older than ``requeued_at`` count from their lease.
    retry = and_(
        func.coalesce(claims.c.requeued_at, claims.c.lease_until) < (again or now),
        exists().where(deliveries.c.claim == claims.c.token, deliveries.c.state == "sending"),
    )
    fresh = claims.c.requeued.is_(False)
    stale = select(claims.c.token).where(claims.c.lease_until < now, or_(fresh, retry) if again else fresh)
    if postgres:
        stale = stale.with_for_update(skip_locked=True)
    tokens = list((await session.execute(stale)).scalars())
    if tokens:
        await session.execute(
            update(claims).where(claims.c.token.in_(tokens)).values(requeued=True, requeued_at=now)
        )
    sending = deliveries.c.state == "sending"
    orphans = list(
        (
            await session.execute(
                select(deliveries.c.claim)
                .where(sending, ~exists().where(claims.c.token == deliveries.c.claim))
                .distinct()
            )
        ).scalars()
    )
    for orphan in orphans:
        if orphan is not None:
            await session.execute(
                claims.insert().values(
                    token=orphan, lease_until=now, requeued=True, created_at=now, requeued_at=now
                )
            )
    if redis_lost:
        condition = and_(sending, or_(deliveries.c.claim.is_(None), ~live_claim(now)))
    else:
        dead = [t for t in (*tokens, *orphans) if t is not None]
        if not dead:
            return []
        condition = and_(sending, deliveries.c.claim.in_(dead))
    return list(
        (
            await session.execute(
                select(deliveries.c.id, deliveries.c.lane, deliveries.c.channel)
                .where(condition)
                .order_by(deliveries.c.id)
            )
        ).all()
    )
