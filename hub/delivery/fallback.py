"""Fallback: an adapter's "recipient gone, try channel X once instead" (``RecipientGone.fallback``).

A provider may know that an address cannot be reached on its channel while the same number can be
reached on another one (a phone number that is no user of a chat app still takes an SMS). The adapter
names that channel; here, in the transaction that records the ``gone`` outcome, the same message gets
one delivery row for the endpoint with the same address on the named channel:

- only an **active** endpoint is used (one the citizen registered and that was not deactivated): the hub
  never creates an endpoint the citizen did not ask for, and never writes to a bounced or blocked one;
- the address must be the same (the canonical forms of both channels agree for phone numbers): every
  endpoint has its own subscriber row in this hub (``hub.subscriptions.endpoint_for``), so the address,
  not the subscriber row, is what says "the same person's number";
- **once**: the row is inserted "on conflict do nothing" on the deliveries' unique key (message,
  endpoint), so a second ``gone`` for the same message, a repeated write, or a fallback back the other
  way creates nothing; an endpoint that already had the message keeps its own row;
- not for confirmations: their link confirms the endpoint that was asked, not another one;
- the message must have a rendering for the channel; one rendered before the channel was enabled gets
  it now when it is an announcement (rendered again from the stored announcement, for the locales the
  message has), otherwise nothing is created and a log line says why;
- the new row is ``queued`` and due now; ``record`` hands it back with its retries, so it is enqueued
  after the commit like them (and the reconciler queues it if Redis is down meanwhile).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select, true, update

from channels.base import Outcome, RecipientGone
from hub.context import Hub
from hub.logs import log
from hub.store.models import Announcement, Delivery, Endpoint, Message, Rendering

#: Kinds whose content belongs to the endpoint asked and to no other (a confirmation's link).
NO_FALLBACK_KINDS = ("confirmation",)


async def fall_back(
    hub: Hub, session: Any, results: Sequence[tuple[int, Outcome]], now: datetime
) -> list[tuple[int, datetime]]:
    """Create the fallback deliveries of ``results`` in ``session``; returns ``(id, due)`` to enqueue.

    ``session``: ``record``'s Core connection (or an ORM session): Core statements only. Only rows
    written ``gone`` count (``record`` writes a row only while its claim still holds it).
    """
    wanted = {
        delivery_id: outcome.fallback
        for delivery_id, outcome in results
        if isinstance(outcome, RecipientGone) and outcome.fallback
    }
    if not wanted:
        return []
    rows = (
        await session.execute(
            select(
                Delivery.id,
                Delivery.message_id,
                Delivery.topic_id,
                Delivery.lane,
                Delivery.channel,
                Delivery.error,
                Endpoint.address,
                Message.kind,
                Message.announcement_id,
            )
            .join(Endpoint, Endpoint.id == Delivery.endpoint_id)
            .join(Message, Message.id == Delivery.message_id)
            .where(Delivery.id.in_(sorted(wanted)), Delivery.state == "gone")
            .order_by(Delivery.id)
        )
    ).all()
    created: list[tuple[int, datetime]] = []
    for row in rows:
        target = wanted[row.id]
        why = await _why_not(hub, session, row, target)
        if why:
            log.info("fallback_not_made", delivery_id=row.id, channel=row.channel, fallback=target, why=why)
            continue
        endpoint_id = await session.scalar(
            select(Endpoint.id).where(
                Endpoint.channel == target, Endpoint.address == row.address, Endpoint.active == true()
            )
        )
        if endpoint_id is None:
            why = "no active endpoint with this address on that channel"
            log.info("fallback_not_made", delivery_id=row.id, channel=row.channel, fallback=target, why=why)
            continue
        new_id = await session.scalar(
            hub.db.insert(Delivery.__table__)
            .values(
                message_id=row.message_id,
                endpoint_id=endpoint_id,
                topic_id=row.topic_id,
                channel=target,
                lane=row.lane,
                state="queued",
                attempts=0,
                next_attempt_at=now,
                enqueued_at=now,
            )
            .on_conflict_do_nothing(index_elements=["message_id", "endpoint_id"])
            .returning(Delivery.id)
        )
        if new_id is None:
            continue  # the endpoint already has this message (its own row, or an earlier fallback)
        await session.execute(
            update(Delivery.__table__)
            .where(Delivery.__table__.c.id == row.id)
            .values(error=_note(row.error or "", target))
        )
        log.info("fallback_queued", delivery_id=row.id, fallback_delivery_id=new_id, fallback=target)
        created.append((new_id, now))
    return created


async def _why_not(hub: Hub, session: Any, row: Any, target: str) -> str:
    """Empty when the message can go out on ``target``; else why not (for the log)."""
    if target == row.channel:
        return "the fallback names the same channel"
    if target not in hub.channels:
        return "the fallback channel is not enabled"
    if row.kind in NO_FALLBACK_KINDS:
        return f"a {row.kind} is for the endpoint asked only"
    has = await session.scalar(
        select(Rendering.locale)
        .where(Rendering.message_id == row.message_id, Rendering.channel == target)
        .limit(1)
    )
    if has is not None:
        return ""
    return await _render(hub, session, row.message_id, row.kind, row.announcement_id, target)


async def _render(
    hub: Hub, session: Any, message_id: int, kind: str, announcement_id: int | None, target: str
) -> str:
    """Render an announcement's message for ``target`` as publishing did; empty when done."""
    if announcement_id is None:
        return "the message has no rendering for that channel and no announcement to render it from"
    from hub import announcements  # imports hub.delivery: a module-level import would be circular
    from hub.delivery.messages import Draft, render_all

    table = Announcement.__table__
    announcement = (await session.execute(select(table).where(table.c.id == announcement_id))).one()
    locales = sorted(
        set(
            (
                await session.execute(select(Rendering.locale).where(Rendering.message_id == message_id))
            ).scalars()
        )
    )
    try:
        draft = (await announcements.prepare(hub, announcements.input_of(announcement))).draft
        draft = Draft(**{**draft.__dict__, "kind": kind, "renditions": [(target, loc) for loc in locales]})
        rendered = render_all(hub, draft)
    except Exception as exc:  # an announcement that no longer renders (expired, topic gone): no fallback
        return f"could not render it for that channel: {type(exc).__name__}: {str(exc)[:200]}"
    await session.execute(
        Rendering.__table__.insert(),
        [
            {
                "message_id": message_id,
                "channel": ch,
                "locale": loc,
                "subject": r.subject,
                "text": r.text,
                "html": r.html,
                "buttons": r.buttons,
            }
            for (ch, loc), r in rendered.items()
        ],
    )
    return ""


def _note(error: str, target: str) -> str:
    """The gone row says where the message went instead (status pages list the reason)."""
    return f"{error}; sent by {target} instead"[:500]
