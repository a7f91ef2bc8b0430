"""Where a printed notice sends its reader: the bot, the office's public page, the SMS keyword.

Every link is built the way the part that receives it reads it back, so a printed code cannot drift from
what the hub accepts: the Telegram payload is ``t<topic>``, which ``hub.bot.dispatch.cmd_start`` turns
into a subscription; the SMS keyword is the one ``channels.sms.parse_mo`` maps to ``daftar``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from hub.context import Hub

#: What Telegram allows in a ``start`` payload (core.telegram.org/bots/features#deep-linking).
START_PAYLOAD = re.compile(r"[A-Za-z0-9_-]{1,64}")


@dataclass(frozen=True)
class Subscribe:
    """The ways to follow one office that fit on paper."""

    page_url: str
    telegram_url: str | None = None
    sms_keyword: str | None = None
    sms_number: str | None = None


def office_page(hub: Hub, office_id: str) -> str:
    return f"{hub.settings.hub.public_url.rstrip('/')}/kantor/{office_id}"


def telegram_payload(topic_slug: str) -> str | None:
    """``t<topic>``: the bot subscribes the chat to the topic (None when Telegram would refuse it)."""
    payload = f"t{topic_slug}"
    return payload if START_PAYLOAD.fullmatch(payload) else None


def sms_keyword() -> str:
    """The Indonesian keyword the SMS adapter reads as "subscribe" (``DAFTAR``)."""
    from channels.sms import KEYWORDS

    return next(word for word, meaning in KEYWORDS.items() if meaning == ("daftar", "id"))


def subscribe_links(hub: Hub, office_id: str) -> Subscribe:
    """The office's general topic (its slug is the office id, ``hub.regions.ensure_topics``) on every
    channel that is enabled and can be printed: a Telegram bot with a username, an SMS number."""
    telegram = hub.channels.get("telegram")
    payload = telegram_payload(office_id)
    telegram_url = telegram.deep_link(payload) if telegram is not None and payload else None
    number = str(hub.settings.channels.get("sms", {}).get("number") or "") if "sms" in hub.channels else ""
    return Subscribe(
        page_url=office_page(hub, office_id),
        telegram_url=telegram_url,
        sms_keyword=f"{sms_keyword()} {office_id.upper()}" if number else None,
        sms_number=number or None,
    )
