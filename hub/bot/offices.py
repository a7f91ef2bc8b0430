"""What an office publishes about itself: ``jam`` (service hours and quota), ``layanan`` (numbers, app)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from hub.bot.conversation import Conversation
from hub.clock import utcnow
from hub.context import Hub
from hub.render import day_name, format_hours
from hub.store.models import Announcement, Endpoint, Office, Subscription, Topic


async def cmd_hours(convo: Conversation, args: list[str]) -> None:
    office = await office_for(convo, args, "jam")
    if office is None:
        return
    hours, quota = await latest_hours(convo.hub, office)
    if not hours:
        await convo.reply(convo.t("no_hours", office=office.name))
        return
    lines = [convo.t("hours", office=office.name)]
    lines += [
        f"- {day_name(k, convo.locale)}: {format_hours(v, convo.locale, office.timezone)}"
        for k, v in hours.items()
    ]
    if quota:
        lines.append(convo.t("quota", n=quota))
    await convo.reply("\n".join(lines))


async def cmd_services(convo: Conversation, args: list[str]) -> None:
    office = await office_for(convo, args, "layanan")
    if office is None:
        return
    contacts, app, via = await latest_contacts(convo.hub, office)
    if not contacts and not app:
        await convo.reply(convo.t("no_services", office=office.name))
        return
    lines = [convo.t("services", office=office.name)]
    lines += [f"- {service}: {number}" + (f" ({via})" if via else "") for service, number in contacts.items()]
    if app:
        lines.append(convo.t("online_app", app=app))
    await convo.reply("\n".join(lines))


async def office_for(convo: Conversation, args: list[str], cmd: str) -> Office | None:
    """The office a command is about: named in ``args``, else the one the chat follows, else the only one.

    None (after telling the citizen how to name one) when that leaves no single office.
    """
    async with convo.hub.db.session() as session:
        offices = (await session.execute(select(Office).order_by(Office.id))).scalars().all()
        if args:
            wanted = " ".join(args).lower()
            match = [o for o in offices if wanted in (o.id, o.name.lower())] or [
                o for o in offices if wanted in o.id or wanted in o.name.lower()
            ]
            if len(match) == 1:
                return match[0]
            await convo.reply(convo.t("unknown_office", arg=" ".join(args)))
            return None
        sender = await session.scalar(
            select(Endpoint.id).where(
                Endpoint.channel == convo.record.channel,
                Endpoint.address == (convo.record.sender if convo.private else convo.record.address),
            )
        )
        if sender is not None:
            # Distinct ids, not rows: PostgreSQL cannot compare the JSON profile column for DISTINCT.
            subscribed = (
                (
                    await session.execute(
                        select(Topic.office_id)
                        .join(Subscription, Subscription.topic_id == Topic.id)
                        .where(Subscription.endpoint_id == sender, Subscription.state == "confirmed")
                        .distinct()
                    )
                )
                .scalars()
                .all()
            )
            if len(subscribed) == 1:
                return await session.get(Office, subscribed[0])
        if len(offices) == 1:
            return offices[0]
    await convo.reply(
        convo.t(
            "which_office",
            cmd=cmd,
            example=offices[0].id if offices else "kota-serang",
            offices=", ".join(o.id for o in offices),
        )
    )
    return None


async def latest(hub: Hub, office: Office, template: str) -> dict[str, Any] | None:
    """The newest published announcement of a kind still valid, else the office's own recorded change."""
    now = utcnow()
    async with hub.db.session() as session:
        ann = await session.scalar(
            select(Announcement)
            .where(
                Announcement.office_id == office.id,
                Announcement.template == template,
                Announcement.state.in_(("published", "scheduled")),
                (Announcement.valid_until.is_(None)) | (Announcement.valid_until > now),
            )
            .order_by(Announcement.id.desc())
            .limit(1)
        )
    if ann is not None:
        return ann.data
    changes = (office.profile or {}).get("changes", [])
    wanted = {"hours_changed": ("hours_changed",), "online_only": ("online_only", "hours_changed")}[template]
    for change in reversed(changes):
        if change.get("kind") in wanted:
            return change
    return None


async def latest_hours(hub: Hub, office: Office) -> tuple[dict[str, str], int | None]:
    data = await latest(hub, office, "hours_changed") or {}
    return dict(data.get("hours") or {}), data.get("daily_quota")


async def latest_contacts(hub: Hub, office: Office) -> tuple[dict[str, str], str | None, str | None]:
    """Service numbers (the office's, updated by the latest announcement), the online app, and the app
    the numbers are reached by."""
    data = await latest(hub, office, "online_only") or {}
    profile = office.profile or {}
    contacts = dict(profile.get("contacts") or {})
    contacts.update(data.get("contacts") or {})
    return (
        contacts,
        data.get("online_app") or profile.get("online_app"),
        data.get("via") or ("WhatsApp" if contacts else None),
    )
