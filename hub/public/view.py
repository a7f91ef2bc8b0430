"""What an office's public page shows, gathered once per render: status, week, services, subscribing.

Everything here is plain data for the templates (dicts, lists, strings already in the reader's
language), so a template cannot reach into the store or the status object.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from hub.context import Hub
from hub.notices import links
from hub.render import WEEK, day_name, format_day, format_hours
from hub.status.effective import Effective
from hub.store.models import Office

#: What ``/kantor/{office}/qr/{what}.svg`` may encode: each a way in, or the page itself.
QR_KINDS = ("telegram", "matrix", "sms", "halaman")


def localized(value: Any, locale: str) -> str:
    """A per-language value in ``locale``, falling back to Indonesian, then to any text it has."""
    if value is None:
        return ""
    if isinstance(value, dict):
        return str(value.get(locale) or value.get("id") or next(iter(value.values()), ""))
    return str(value)


def wa_link(number: str) -> str | None:
    """``0858-7031-0341`` -> ``https://wa.me/6285870310341`` (Indonesian numbers; None if not a number)."""
    digits = re.sub(r"\D", "", number)
    if len(digits) < 8:
        return None
    if digits.startswith("0"):
        digits = "62" + digits[1:]
    return f"https://wa.me/{digits}"


def contact_url(kind: str, value: str, url: str | None) -> str | None:
    if url:
        return url
    if kind == "whatsapp":
        return wa_link(value)
    if kind == "phone":
        digits = re.sub(r"[^\d+]", "", value)
        return f"tel:{digits}" if len(digits) >= 5 else None
    if kind == "email":
        return f"mailto:{value}"
    if kind in ("web", "app") and re.match(r"^https?://\S+$", value):
        return value
    return None


def week_rows(weekly: dict[str, list[str]], locale: str, tz: str) -> list[dict[str, Any]]:
    return [
        {
            "day": day_name(day, locale),
            "spans": [format_hours(s, locale, tz).rsplit(" ", 1)[0] for s in weekly.get(day, [])],
        }
        for day in WEEK
    ]


def services_of(eff: Effective, locale: str, tz: str) -> list[dict[str, Any]]:
    return [
        {
            "key": service.key,
            "name": localized(service.name, locale) or service.key,
            "mode": service.mode,
            "hours": week_rows(service.hours, locale, tz) if service.hours else [],
            "quota": service.quota,
            "exceptions": [exception_text(e, locale, tz) for e in service.exceptions],
            "urgent": [localized(u, locale) for u in service.urgent],
            "contacts": [contact(c) for c in service.contacts],
            "note": localized(service.note, locale),
        }
        for service in eff.services
    ]


def contact(c: Any) -> dict[str, Any]:
    """A contact with the link a phone opens: WhatsApp chat, call, mail, or the app's page."""
    return {"kind": c.kind, "label": c.label, "value": c.value, "url": contact_url(c.kind, c.value, c.url)}


def exception_text(entry: Any, locale: str, tz: str) -> str:
    """One dated exception in words: ``Senin, 6 April 2020: tutup`` (dict or model)."""
    data = entry if isinstance(entry, dict) else getattr(entry, "__dict__", {})
    first, until = data.get("date"), data.get("until")
    when = format_day(first, locale, tz) if first else ""
    if until and until != first:
        when += " – " + format_day(until, locale, tz)
    parts = []
    if data.get("closed"):
        parts.append("tutup" if locale == "id" else "closed")
    spans = data.get("hours") or []
    if spans:
        parts.append(", ".join(format_hours(s, locale, tz) for s in spans))
    if data.get("quota") is not None:
        parts.append(("kuota {n} orang" if locale == "id" else "quota {n} people").format(n=data["quota"]))
    if data.get("note"):
        parts.append(localized(data["note"], locale))
    return f"{when}: {'; '.join(parts)}" if when else "; ".join(parts)


@dataclass(frozen=True)
class Ways:
    """How a citizen subscribes to an office on each enabled channel (None: not offered here)."""

    telegram: dict[str, str] | None
    matrix: dict[str, str] | None
    sms: dict[str, str] | None
    email: bool
    page_url: str

    def qr_payload(self, what: str) -> str | None:
        if what == "telegram" and self.telegram and self.telegram.get("url"):
            return self.telegram["url"]
        if what == "matrix" and self.matrix:
            return self.matrix["url"]
        if what == "sms" and self.sms and self.sms.get("number"):
            return f"SMSTO:{self.sms['number']}:{self.sms['keyword']}"
        if what == "halaman":
            return self.page_url
        return None


def ways_to_subscribe(hub: Hub, office: Office) -> Ways:
    """Read from the channels the hub runs: the Telegram bot's deep link (``/start t<office>`` subscribes,
    hub.bot.dispatch), the Matrix bot's id (``!langganan``), the SMS number and keyword."""
    telegram = matrix = sms = None
    if (channel := hub.channels.get("telegram")) is not None:
        username = getattr(channel, "username", None)
        payload = links.telegram_payload(office.id)
        telegram = {
            # Telegram takes a start payload of at most 64 characters; a longer id keeps the command.
            "url": (channel.deep_link(payload) or "") if payload else "",
            "bot": f"@{username}" if username else "",
            "command": f"/langganan {office.id}",
        }
    if (channel := hub.channels.get("matrix")) is not None and getattr(channel, "user_id", None):
        user_id = channel.user_id
        matrix = {
            "user": user_id,
            "url": f"https://matrix.to/#/{quote(user_id, safe='@:')}",
            "command": f"!langganan {office.id}",
        }
    if "sms" in hub.channels:
        number = str(hub.settings.enabled_channels().get("sms", {}).get("number") or "")
        # The same words a printed notice gives (hub.notices.links): one way to write it everywhere.
        sms = {"number": number, "keyword": f"{links.sms_keyword()} {office.id.upper()}"}
    return Ways(telegram, matrix, sms, "email" in hub.channels, links.office_page(hub, office.id))
