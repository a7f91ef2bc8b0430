"""What an office says about itself, from its status at the moment asked (``hub.status.status_at``):
``jam`` (today first, then the week), ``layanan`` (contacts per service, services not served as usual).

Replies aim at one SMS (160 GSM-7 characters): on SMS the optional lines go, least useful first, until it
fits; other channels get them all.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from babel.dates import format_date
from sqlalchemy import select

from channels.base import Content
from hub.bot.conversation import Conversation
from hub.clock import utcnow
from hub.status import Effective, status_at
from hub.status.effective import pick, spans_text, week_rows
from hub.store.models import Endpoint, Office, Subscription, Topic

#: How far ahead a dated exception (a holiday) is worth a line in ``jam``.
EXCEPTION_DAYS = 14


async def effective(convo: Conversation, office: Office) -> Effective:
    async with convo.hub.db.session() as session:
        return await status_at(session, office, utcnow())


async def cmd_hours(convo: Conversation, args: list[str]) -> None:
    office = await office_for(convo, args, "jam")
    if office is None:
        return
    eff = await effective(convo, office)
    await convo.reply(hours_text(convo, office, eff))


def hours_text(convo: Conversation, office: Office, eff: Effective) -> str:
    """Today's line; the urgent cases (when restricted), the week compactly, the next dated exception,
    the quota."""
    locale = convo.locale
    if not eff.weekly and eff.mode == "in_person" and not eff.today.exception:
        return convo.t("no_hours", office=office.name)
    head = [convo.t("hours", office=office.name), eff.today_line(locale)]
    rows = week_rows(eff.weekly, locale)
    week = "; ".join(f"{days} {hours}" for days, hours in rows) + f" {eff.zone}" if rows else ""
    optional: list[str] = []
    if eff.urgent and eff.mode == "restricted":
        optional.append(convo.t("urgent", cases=", ".join(pick(u, locale) for u in eff.urgent)))
    if week:
        optional.append(week)
    upcoming = _next_exception(convo, eff)
    if upcoming:
        optional.append(upcoming)
    if eff.quota is not None and eff.today.quota is None and eff.mode not in ("closed", "online_only"):
        optional.append(convo.t("quota", n=eff.quota))
    return _fit(convo, head, optional)


def _next_exception(convo: Conversation, eff: Effective) -> str:
    today = eff.today.day or date.min
    for exc in eff.exceptions:
        first = date.fromisoformat(exc["date"])
        if today < first and (first - today).days <= EXCEPTION_DAYS:
            when = _short(first, convo.locale)
            if exc.get("until"):
                when += "–" + _short(date.fromisoformat(exc["until"]), convo.locale)
            closed = convo.t("closed_day")
            what = (
                spans_text(exc["hours"], convo.locale, eff.timezone)
                if exc.get("hours")
                else (closed if exc.get("closed") else "")
            )
            note = pick(exc.get("note"), convo.locale)
            what = f"{what} ({note})" if what and note else what or note
            return convo.t("exception", date=when, what=what)
    return ""


def _short(day: date, locale: str) -> str:
    return format_date(day, "d MMM", locale="id_ID" if locale == "id" else "en_GB")


def _fit(convo: Conversation, head: list[str], optional: list[str]) -> str:
    """``head``, then each of ``optional`` (most useful first) that still fits one SMS; all elsewhere."""
    lines = [_plain(convo, x) for x in head]
    for line in optional:
        if _one_segment(convo, "\n".join([*lines, _plain(convo, line)])):
            lines.append(_plain(convo, line))
    return "\n".join(lines)


def _one_segment(convo: Conversation, text: str) -> bool:
    return int(convo.channel.describe(Content(text=text)).get("segments", 1)) <= 1


def _plain(convo: Conversation, text: str) -> str:
    """On a channel that counts segments (SMS) a hyphen for the dash: GSM-7 has none, and one dash
    would make the whole reply UCS-2 (70 characters a segment instead of 160)."""
    return text.replace("–", "-") if "segments" in convo.channel.describe(Content(text="")) else text


async def cmd_services(convo: Conversation, args: list[str]) -> None:
    office = await office_for(convo, args, "layanan")
    if office is None:
        return
    eff = await effective(convo, office)
    await convo.reply(services_text(convo, office, eff))


def services_text(convo: Conversation, office: Office, eff: Effective) -> str:
    """One line per contact (the services it serves), then the services not served as usual."""
    locale = convo.locale
    lines: list[str] = []
    seen: dict[str, list[str]] = {}  # contact value -> service names, in order
    contacts: dict[str, Any] = {}
    for svc in eff.services:
        for contact in svc.contacts:
            contacts.setdefault(contact.value, contact)
            seen.setdefault(contact.value, []).append(pick(svc.name, locale))
    for contact in eff.contacts:
        contacts.setdefault(contact.value, contact)
        seen.setdefault(contact.value, [])
    apps = []
    for value, contact in contacts.items():
        if contact.kind == "app":
            apps.append(contact.value)
            continue
        label = contact.label or ", ".join(seen[value]) or value
        via = {
            "whatsapp": convo.t("via_whatsapp"),
            "phone": convo.t("via_phone"),
            "email": convo.t("via_email"),
        }.get(contact.kind)
        shown = contact.url if contact.kind == "web" and contact.url else contact.value
        lines.append(
            convo.t("contact_via", label=label, value=shown, via=via)
            if via
            else convo.t("contact", label=label, value=shown)
        )
    for app in apps:
        lines.append(convo.t("online_app", app=app))
    modes = {
        "restricted": convo.t("mode_restricted"),
        "online_only": convo.t("mode_online_only"),
        "closed": convo.t("mode_closed"),
    }
    for svc in eff.services:
        if svc.mode != eff.mode and svc.mode in modes:
            lines.append(convo.t("service_mode", service=pick(svc.name, locale), mode=modes[svc.mode]))
    if not lines and eff.mode == "in_person":
        return convo.t("no_services", office=office.name)
    head = [convo.t("services", office=office.name)]
    if eff.mode != "in_person":
        head.append(eff.today_line(locale))
    return _plain(convo, "\n".join([*head, *lines]))


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
