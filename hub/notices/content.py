"""What a printed notice shows, gathered as plain data before any HTML: the office, the message, its
validity, contacts per service and the ways to subscribe.

The message of an announcement is the hub's own rendering of its kind (``templates/announcements/<kind>/``,
the ``default`` HTML body every rich channel gets), so a notice says what the broadcast said. The data
is also what a notice's version is a hash of: equal data, equal PDF.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Any

from markupsafe import Markup
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from hub import kinds
from hub.announcements import build_context
from hub.context import Hub
from hub.notices.links import subscribe_links
from hub.public.view import services_of
from hub.render import CORRECTION_PREFIX, WEEK, Rendered, day_name, format_day, format_hours, format_moment
from hub.status import status_at
from hub.store.models import Announcement, Office


def office_ctx(office: Office) -> dict[str, Any]:
    """The office as announcement templates know it (``hub.announcements.office_context``)."""
    return {"id": office.id, "name": office.name, "timezone": office.timezone, "profile": office.profile}


def reading_locale(hub: Hub, ann: Announcement, wanted: str) -> str:
    """The language the notice is printed in: the one asked for when the announcement is written in it,
    else the default one, whole (never an English frame around Indonesian sentences)."""
    default = hub.settings.hub.default_locale
    if wanted not in hub.settings.hub.locales:
        return default
    try:
        _, missing = kinds.validate(ann.template, ann.data, [wanted])
    except kinds.KindError:  # stored before its kind's rules changed: the language it was sent in
        return default
    return default if missing.get(wanted) else wanted


def render(hub: Hub, ann: Announcement, office: Office, locale: str) -> Rendered:
    """The announcement as its subscribers read it: the kind's ``default`` rendering (no channel layout)."""
    context = build_context(
        ann.template, ann.data, office_ctx(office), ann.services, ann.valid_from, ann.valid_until
    )
    context["unsubscribable"] = False
    if ann.corrects_id is not None:
        context["correction"] = True
    return hub.renderer.render(
        "announcements", ann.template, channel="notice", locale=locale, context=context
    )


async def announcement_view(
    hub: Hub, session: AsyncSession, ann: Announcement, office: Office, locale: str, at: datetime
) -> dict[str, Any]:
    """A notice of one announcement, in ``locale`` (``reading_locale`` first)."""
    rendered = render(hub, ann, office, locale)
    tz = office.timezone
    # Contacts as the office serves them while the announcement holds (from now, or once it starts).
    when = max(at, ann.valid_from) if ann.valid_from else at
    return {
        "kind": "announcement",
        "locale": locale,
        "office": {"id": office.id, "name": office.name},
        "announcement_id": ann.id,
        "state": ann.state,
        "correction": ann.corrects_id is not None,
        "headline": _headline(rendered.subject or "", office.name, locale),
        "body": _without_office_line(rendered.html or "", office.name),
        "valid_from": format_moment(ann.valid_from, locale, tz) if ann.valid_from else None,
        "valid_until": format_moment(ann.valid_until, locale, tz) if ann.valid_until else None,
        "contacts": await contacts(session, office, when, locale),
        "subscribe": asdict(subscribe_links(hub, office.id)),
    }


async def status_view(
    hub: Hub, session: AsyncSession, office: Office, locale: str, at: datetime
) -> dict[str, Any]:
    """A notice of the office's status at ``at``: today, the week, the services and their contacts."""
    eff = await status_at(session, office, at)
    tz = office.timezone
    headlines = await _headlines(hub, session, list(eff.in_force), office, locale)
    return {
        "kind": "status",
        "locale": locale,
        "office": {"id": office.id, "name": office.name},
        "as_of": format_day(at, locale, tz),
        "changes_at_utc": eff.changes_at,
        "today": eff.today_line(locale),
        "week": week_rows(eff.weekly, locale, tz),
        "services": [
            {k: row[k] for k in ("name", "mode", "urgent", "exceptions", "note")}
            for row in services_of(eff, locale, tz)
        ],
        "in_force": headlines,
        "contacts": _status_contacts(eff, locale),
        "version": eff.version,
        "subscribe": asdict(subscribe_links(hub, office.id)),
    }


def week_rows(weekly: dict[str, list[str]], locale: str, tz: str) -> list[tuple[str, str | None]]:
    """``[("Senin–Kamis", "08.00–11.00 WIB"), ("Sabtu–Minggu", None)]``: equal days share a row; None is
    a closed day (the template says so in the reader's language)."""
    runs: list[list[Any]] = []  # [first day, last day, hours]
    for index, day in enumerate(WEEK):
        spans = weekly.get(day) or []
        hours = ", ".join(format_hours(span, locale, tz) for span in spans) or None
        if runs and runs[-1][1] == index - 1 and runs[-1][2] == hours:
            runs[-1][1] = index
        else:
            runs.append([index, index, hours])
    rows = []
    for first, last, hours in runs:
        label = day_name(WEEK[first], locale)
        if last != first:
            label += "–" + day_name(WEEK[last], locale)
        rows.append((label, hours))
    return rows


async def contacts(session: AsyncSession, office: Office, at: datetime, locale: str) -> list[dict[str, Any]]:
    """Contacts per service from the office's status at ``at``; the office's recorded numbers when the
    status has none."""
    rows = _status_contacts(await status_at(session, office, at), locale)
    if rows:
        return rows
    recorded = (office.profile or {}).get("contacts") or {}
    return [{"service": service, "items": [str(number)]} for service, number in recorded.items()]


def _status_contacts(eff: Any, locale: str) -> list[dict[str, Any]]:
    """Per service, its contacts (``WhatsApp 0858-...``); office-wide ones under the office's own row."""
    rows = []
    for service in eff.services:
        items = [_contact(c) for c in service.contacts]
        if items:
            rows.append({"service": _text(service.name, locale), "items": items})
    general = [_contact(c) for c in getattr(eff, "contacts", None) or []]
    if general:
        rows.append({"service": "", "items": general})
    return rows


def _contact(contact: Any) -> str:
    """``WhatsApp 0858-...``; a label that only repeats the value (an app's name) is said once."""
    label, value = (contact.label or "").strip(), (contact.value or "").strip()
    return value if not label or label == value else f"{label} {value}".strip()


def _text(value: Any, locale: str) -> str:
    if isinstance(value, dict):
        return str(value.get(locale) or value.get("id") or next(iter(value.values()), ""))
    return str(value)


async def _headlines(
    hub: Hub, session: AsyncSession, ids: list[int], office: Office, locale: str
) -> list[str]:
    """The headlines of the announcements that shape the status, as their notices print them."""
    if not ids:
        return []
    found = (await session.execute(select(Announcement).where(Announcement.id.in_(ids)))).scalars()
    out = []
    for ann in sorted(found, key=lambda a: a.id):
        shown = reading_locale(hub, ann, locale)
        rendered = render(hub, ann, office, shown)
        out.append(_headline(rendered.subject or "", office.name, shown))
    return out


def _headline(subject: str, office_name: str, locale: str) -> str:
    """The subject without "Ralat: " and the office's name in front: the notice's header says both."""
    text = subject.removeprefix(f"{CORRECTION_PREFIX.get(locale, '')}: ")
    text = text.removeprefix(f"{office_name}: ").strip()
    return text[:1].upper() + text[1:]


def _without_office_line(body: str, office_name: str) -> Markup:
    """The body without its first line when that line only names the office (every kind starts so)."""
    first, _, rest = body.partition("\n")
    if first.strip() in (f"<b>{Markup.escape(office_name)}</b>", str(Markup.escape(office_name))):
        body = rest
    # The renderer's own output: its sandbox escaped every value into the inline HTML subset.
    return Markup(body.strip())
