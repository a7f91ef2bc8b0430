"""One reminder per unconfirmed relay, then one report to the office: steps of the reconciler.

Each step changes a ``relay_acks`` row and stores the message it sends in the same transaction: a row
inserted (the unique (message, endpoint) pair) or updated only while still unset, so two workers, or a
worker restarted halfway, never remind a relay twice or tell an office twice. The stored message is
"planning" until its fan-out runs; the reconciler plans any such message Redis lost.

The report goes by email to the office's console staff whose role is editor or above (the people who
can act on it), plus ``[relays] report_to`` addresses for the office: the simplest route that reaches
a person at the office with the channels every deployment has.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from hub import delivery
from hub.clock import utcnow
from hub.context import Hub
from hub.logs import log
from hub.privacy import mask
from hub.relays.acks import RECEIVED, RELAYED_KINDS
from hub.relays.codes import text
from hub.relays.outbound import relay_part
from hub.render import format_moment
from hub.store.models import (
    Delivery,
    Endpoint,
    Message,
    Office,
    RelayAck,
    Rendering,
    StaffUser,
    Subscriber,
)
from hub.subscriptions import endpoint_for

#: Staff roles told of relays that did not confirm.
REPORT_ROLES = ("editor", "approver", "admin")


async def remind_and_report(hub: Hub) -> dict[str, int]:
    """Send the reminders and reports that are due; how many of each."""
    reminded = await _remind(hub)
    reported = await _report(hub)
    if reminded or reported:
        log.info("relay_followups", reminders=reminded, reports=reported)
    return {"reminders": reminded, "reports": reported}


async def _remind(hub: Hub, limit: int = 500) -> int:
    cfg = hub.settings.relays
    now = utcnow()
    due = now - timedelta(minutes=cfg.remind_after_minutes)
    horizon = now - timedelta(hours=cfg.forget_after_hours)
    async with hub.db.session() as session:
        rows = (
            await session.execute(
                select(
                    Delivery.id,
                    Delivery.message_id,
                    Delivery.endpoint_id,
                    Delivery.channel,
                    Endpoint.relay_office_id,
                    Message.announcement_id,
                    Subscriber.locale,
                )
                .join(Endpoint, Endpoint.id == Delivery.endpoint_id)
                .join(Subscriber, Subscriber.id == Endpoint.subscriber_id)
                .join(Message, Message.id == Delivery.message_id)
                .outerjoin(
                    RelayAck,
                    (RelayAck.message_id == Delivery.message_id)
                    & (RelayAck.endpoint_id == Delivery.endpoint_id),
                )
                .where(
                    Endpoint.relay_office_id.is_not(None),
                    Endpoint.active.is_(True),
                    Message.kind.in_(RELAYED_KINDS),
                    Message.state != "cancelled",
                    Delivery.state.in_(RECEIVED),
                    Delivery.sent_at <= due,
                    Delivery.sent_at > horizon,
                    RelayAck.id.is_(None),
                )
                .order_by(Delivery.id)
                .limit(limit)
            )
        ).all()
    sent = 0
    for row in rows:
        if row.channel not in hub.channels:
            continue
        try:
            message_id = await _remind_one(hub, row, now)
        except IntegrityError:  # confirmed or reminded by another process meanwhile
            continue
        await hub.queue.plan_soon(message_id, "urgent")
        sent += 1
    return sent


async def _remind_one(hub: Hub, row: Any, now: Any) -> int:
    channel = hub.channel(row.channel)
    locale = row.locale if row.locale in hub.settings.hub.locales else hub.settings.hub.default_locale
    async with hub.db.transaction() as session:
        ack = RelayAck(
            message_id=row.message_id,
            endpoint_id=row.endpoint_id,
            delivery_id=row.id,
            announcement_id=row.announcement_id,
            office_id=row.relay_office_id,
            reminded_at=now,
        )
        session.add(ack)
        await session.flush()  # the unique (message, endpoint) pair: a second reminder stops here
        office = await session.get(Office, row.relay_office_id)
        title = await _title(session, row.message_id, row.channel, locale)
        part, buttons = relay_part(hub, channel, locale, row.id, row.relay_office_id, row.announcement_id)
        body = text(locale, "reminder", title=title, office=office.name if office else row.relay_office_id)
        draft = delivery.Draft(
            kind="reply",
            lane="urgent",
            group="system",
            template="reply",
            context={
                "text": f"{body}\n{part}",
                "buttons": [{"text": b.text, "data": b.data} for b in buttons],
                "office": {},
                "tz": "Asia/Jakarta",
            },
            office_id=row.relay_office_id,
            endpoint_ids=[row.endpoint_id],
            renditions=[(row.channel, locale)],
        )
        message = await delivery.create_message(hub, draft, session=session)
        ack.reminder_message_id = message.id
    return int(message.id)


async def _title(session: Any, message_id: int, channel: str, locale: str) -> str:
    """What a relay recognises the message by: its subject, else its first line."""
    renderings = list(
        (await session.execute(select(Rendering).where(Rendering.message_id == message_id))).scalars()
    )
    renderings.sort(key=lambda r: (r.channel != channel, r.locale != locale))
    if not renderings:
        return f"#{message_id}"
    first = renderings[0]
    line = first.subject or next((ln for ln in first.text.splitlines() if ln.strip()), "")
    return line.strip()[:120]


async def _report(hub: Hub) -> int:
    cfg = hub.settings.relays
    now = utcnow()
    due = now - timedelta(minutes=cfg.report_after_minutes)
    horizon = now - timedelta(hours=cfg.forget_after_hours)
    async with hub.db.session() as session:
        messages = (
            await session.execute(
                select(RelayAck.message_id, RelayAck.office_id)
                .join(Message, Message.id == RelayAck.message_id)
                .where(
                    RelayAck.office_told_at.is_(None),
                    RelayAck.confirmed_at.is_(None),
                    RelayAck.reminded_at.is_not(None),
                    Message.send_at <= due,
                    Message.send_at > horizon,
                )
                .distinct()
            )
        ).all()
    told = 0
    for message_id, office_id in messages:
        report_id = await _report_one(hub, message_id, office_id, now)
        if report_id:
            await hub.queue.plan_soon(report_id, "urgent")
            told += 1
    return told


async def _report_one(hub: Hub, message_id: int, office_id: str, now: Any) -> int | None:
    """Tell the office once which relays did not confirm ``message_id``; the report's message id."""
    table = RelayAck.__table__
    async with hub.db.transaction() as session:
        taken = (
            await session.execute(
                update(table)
                .where(
                    table.c.message_id == message_id,
                    table.c.office_id == office_id,
                    table.c.office_told_at.is_(None),
                    table.c.confirmed_at.is_(None),
                    table.c.reminded_at.is_not(None),
                )
                .values(office_told_at=now)
                .returning(table.c.id, table.c.endpoint_id, table.c.announcement_id)
            )
        ).all()
        if not taken:
            return None
        ids = [row.id for row in taken]
        recipients = await _report_to(hub, session, office_id)
        if not recipients or "email" not in hub.channels:
            log.warning("relay_report_nobody", office=office_id, message_id=message_id, relays=len(ids))
            return None
        subject, body = await report_text(hub, session, message_id, office_id, [r.endpoint_id for r in taken])
        endpoints = [
            (await endpoint_for(session, "email", address, kind="person", reactivate=False)).id
            for address in recipients
        ]
        draft = delivery.Draft(
            kind="reply",
            lane="urgent",
            group="system",
            template="relay_report",
            context={"text": body, "subject": subject, "office": {}, "tz": "Asia/Jakarta"},
            office_id=office_id,
            endpoint_ids=endpoints,
            renditions=[("email", "id")],
        )
        message = await delivery.create_message(hub, draft, session=session)
        await session.execute(update(table).where(table.c.id.in_(ids)).values(report_message_id=message.id))
    log.info("relay_report", office=office_id, message_id=message_id, relays=len(ids), to=len(recipients))
    return int(message.id)


async def _report_to(hub: Hub, session: Any, office_id: str) -> list[str]:
    staff = (
        await session.execute(
            select(StaffUser.email)
            .where(
                StaffUser.office_id == office_id,
                StaffUser.active.is_(True),
                StaffUser.role.in_(REPORT_ROLES),
            )
            .order_by(StaffUser.email)
        )
    ).scalars()
    extra = hub.settings.relays.report_to.get(office_id, [])
    return sorted({*(e.lower() for e in staff), *(e.lower() for e in extra)})


async def report_text(
    hub: Hub, session: Any, message_id: int, office_id: str, silent: list[int]
) -> tuple[str, str]:
    """The report's subject and body: Bahasa Indonesia first, English second."""
    message = await session.get(Message, message_id)
    office = await session.get(Office, office_id)
    tz = office.timezone if office else "Asia/Jakarta"
    total = await session.scalar(
        select(func.count())
        .select_from(Delivery)
        .join(Endpoint, Endpoint.id == Delivery.endpoint_id)
        .where(
            Delivery.message_id == message_id,
            Endpoint.relay_office_id == office_id,
            Delivery.state.in_(RECEIVED),
        )
    )
    relays = (
        await session.execute(
            select(Endpoint.id, Endpoint.channel, Endpoint.address)
            .where(Endpoint.id.in_(silent))
            .order_by(Endpoint.id)
        )
    ).all()
    lines = [f"- #{e.id} {e.channel} {mask(e.address, hub.channels.get(e.channel))}" for e in relays]
    ann = message.announcement_id
    title = await _title(session, message_id, "email", "id")
    base = hub.settings.hub.public_url.rstrip("/")
    link = f"{base}/console/pengumuman/{ann}" if ann else base + "/console"
    sent_id, sent_en = format_moment(message.send_at, "id", tz), format_moment(message.send_at, "en", tz)
    subject = f"Kelurahan belum konfirmasi / Relays not confirmed: #{ann or message_id}"
    body = "\n".join(
        [
            f"Pengumuman #{ann} «{title}», dikirim {sent_id}: {len(relays)} dari {total} kelurahan belum "
            "mengonfirmasi sudah meneruskannya, juga setelah satu pengingat:",
            *lines,
            f"Rincian: {link}",
            "",
            f"Announcement #{ann} «{title}», sent {sent_en}: {len(relays)} of {total} relays have not "
            "confirmed they passed it on, even after one reminder:",
            *lines,
            f"Details: {link}",
        ]
    )
    return subject, body
