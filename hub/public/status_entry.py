"""An office's current status as a feed entry: a new entry each time the status changes.

Its id carries the status's ``version`` (a hash of its content) and its time is ``since``, so a feed
reader shows a new item when an hours announcement takes effect and another when the status returns
after it ends, and nothing new while the status stays the same.
"""

from __future__ import annotations

import html
from typing import Any

from hub.context import Hub
from hub.public.entries import base_url, phrases, say, tag, with_lang
from hub.public.feed_docs import Entry
from hub.render import WEEK, day_name, format_hours, format_moment
from hub.status.effective import ServiceView
from hub.store.models import Office


def status_entry(hub: Hub, office: Office, eff: Any, locale: str) -> Entry:
    """``eff``: ``hub.status.Effective`` at the time of the request."""
    tz = office.timezone
    mode = _mode(eff.mode, locale)
    lines = [eff.today_line(locale), say(locale, "status_since", when=format_moment(eff.since, locale, tz))]
    if eff.changes_at is not None:
        lines.append(say(locale, "status_until", when=format_moment(eff.changes_at, locale, tz)))
    lines += ["", say(locale, "status_weekly")]
    for day in WEEK:
        spans = eff.weekly.get(day) or []
        hours = ", ".join(format_hours(s, locale, tz) for s in spans) or say(locale, "status_closed_day")
        lines.append(f"- {day_name(day, locale)}: {hours}")
    services = list(eff.services or [])
    if services:
        lines += ["", say(locale, "status_services")]
        for service in services:
            lines.append("- " + _service_line(service, locale))
    text = "\n".join(lines)
    page = with_lang(f"{base_url(hub)}/kantor/{office.id}", locale)
    return Entry(
        id=tag(hub, f"kantor/{office.id}/status/{eff.version}"),
        title=say(locale, "status_title", office=office.name, mode=mode),
        updated=eff.since,
        published=eff.since,
        url=page,
        text=text,
        html=html.escape(text, quote=False),
        locale=locale,
        author=office.name,
        tags=["status"],
        facts={"kind": "status", "version": eff.version, "status": eff.as_dict(locale)},
    )


def _mode(mode: str | None, locale: str) -> str:
    """Words for a mode (``in_person``: "buka untuk tatap muka"); a mode without words, as it is."""
    return phrases(locale).get(f"mode_{mode}", mode or "")


def _service_line(service: ServiceView, locale: str) -> str:
    name = service.name.get(locale) or service.name.get("id") or service.key
    parts = [_mode(service.mode, locale)]
    if service.quota is not None:
        parts.append(say(locale, "status_quota", quota=service.quota))
    for contact in service.contacts:
        parts.append(f"{contact.label}: {contact.value}" if contact.label else str(contact.value))
    return f"{name}: " + "; ".join(p for p in parts if p)
