"""A citizen's own data: ``dataku`` shows all the hub holds on the chat, ``hapus`` erases it.

``dataku`` lists the address (masked: the answer is stored and may be read over a shoulder), language,
subscriptions with their states, linked applications, and when each began, in the chat's language. On a
channel that counts SMS segments the answer is shortened until it fits one SMS where it can: topics and
applications in one line each, then only how many of each.

``hapus`` confirms first and erases after: the reply needs the address until it is sent, so the request
is recorded and the reconciler erases the endpoint once the reply went out (``hub.citizens``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from babel.dates import format_date

from channels.base import Content
from hub import citizens
from hub.bot.conversation import Conversation
from hub.clock import to_local
from hub.store.models import Endpoint

#: Dates are shown on the calendar of Indonesia's most common zone (the endpoint belongs to no office).
_TZ = "Asia/Jakarta"


def _day(value: datetime, locale: str) -> str:
    """``4 Des 2026`` / ``4 Dec 2026``: short, plain ASCII (one GSM-7 SMS)."""
    return format_date(
        to_local(value, _TZ).date(), "d MMM yyyy", locale="id_ID" if locale == "id" else "en_GB"
    )


def _one_segment(convo: Conversation, text: str) -> bool:
    """Whether ``text`` is one message on this channel (only SMS counts segments)."""
    return int(convo.channel.describe(Content(text=text)).get("segments", 1)) <= 1


def mydata_texts(convo: Conversation, data: dict[str, Any]) -> list[str]:
    """The answer to ``dataku``, longest first: the full list, one line per kind, counts only."""
    locale, names = convo.locale, _names(convo)
    facts = {
        "channel": names.get(f"channel:{data['channel']}", data["channel"]),
        "address": convo.channel.mask_address(data["address"]),
        "since": _day(data["created_at"], locale),
        "language": names.get(f"language:{data['locale']}", data["locale"]),
    }
    subs = [
        {
            "topic": s["topic_name"],
            "slug": s["topic"],
            "state": names.get(f"state:{s['state']}", s["state"]),
            "since": _day(s["created_at"], locale),
        }
        for s in data["subscriptions"]
    ]
    cases = [
        {
            "document": c["document"],
            "reference": c["reference"],
            "status": convo.status_word(c["status"]),
            "since": _day(c["created_at"], locale),
        }
        for c in data["cases"]
    ]
    lines = [convo.t("mydata_head"), convo.t("mydata_address", **facts)]
    lines.append(convo.t("mydata_subs") if subs else convo.t("mydata_no_subs"))
    lines += [convo.t("mydata_sub", **s) for s in subs]
    lines.append(convo.t("mydata_cases") if cases else convo.t("mydata_no_cases"))
    lines += [convo.t("mydata_case", **c) for c in cases]
    lines.append(convo.t("mydata_erase"))
    none = convo.t("none")
    compact = convo.t(
        "mydata_compact",
        **facts,
        subs=", ".join(convo.t("mydata_compact_sub", **s) for s in subs) or none,
        cases=", ".join(convo.t("mydata_compact_case", **c) for c in cases) or none,
    )
    counts = convo.t("mydata_counts", **facts, subs=len(subs), cases=len(cases))
    return ["\n".join(lines), compact, counts]


def _names(convo: Conversation) -> dict[str, str]:
    """How the chat's language names channels, languages and subscription states."""
    return {
        "channel:email": convo.t("channel_email"),
        "channel:sms": convo.t("channel_sms"),
        "channel:telegram": convo.t("channel_telegram"),
        "channel:matrix": convo.t("channel_matrix"),
        "language:id": convo.t("language_id"),
        "language:en": convo.t("language_en"),
        "state:pending": convo.t("sub_pending"),
        "state:confirmed": convo.t("sub_confirmed"),
        "state:unsubscribed": convo.t("sub_unsubscribed"),
    }


async def cmd_mydata(convo: Conversation, args: list[str]) -> None:
    target = await convo.here()
    async with convo.hub.db.session() as session:
        endpoint = await session.get(Endpoint, target.id)
        assert endpoint is not None  # here() has just made sure of it
        data = await citizens.held(session, endpoint)
    texts = mydata_texts(convo, data)
    text = next((x for x in texts if _one_segment(convo, x)), texts[-1])
    await convo.reply(text, to=target)


async def cmd_erase(convo: Conversation, args: list[str]) -> None:
    target = await convo.here()
    request_id = await citizens.request_erasure(convo.hub, target)
    message_id = await convo.reply(convo.t("erased"), to=target)
    await citizens.reply_sent_with(convo.hub, request_id, message_id)
