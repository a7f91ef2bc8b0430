"""What a relay's copy of a broadcast carries besides the announcement: a way to confirm, and the notice.

Chosen from the channel's declared capabilities alone (``channels.base.Capabilities``): a button where
buttons show (Telegram), a reaction or a command where reactions come back (Matrix), ``OK KODE`` where
commands have no prefix (SMS), a signed link where nothing comes back at all (email).
"""

from __future__ import annotations

import html

from channels.base import Button, Channel, Content
from hub import signing
from hub.context import Hub
from hub.relays.codes import make_code, text

#: Purpose of the signed token of an email relay's confirm link.
LINK_PURPOSE = "relay-ack"


def confirm_url(hub: Hub, delivery_id: int) -> str:
    token = signing.sign(hub.secret, LINK_PURPOSE, delivery_id)
    return f"{hub.settings.hub.public_url.rstrip('/')}/v1/relays/ack/{token}"


def notice_url(hub: Hub, office_id: str, announcement_id: int) -> str:
    base = hub.settings.hub.public_url.rstrip("/")
    return f"{base}/kantor/{office_id}/pengumuman/{announcement_id}/cetak.pdf"


def how_to_confirm(
    hub: Hub, channel: Channel, locale: str, delivery_id: int
) -> tuple[str, tuple[Button, ...]]:
    """The line telling a relay how to confirm on this channel, and the button where buttons show."""
    caps = channel.capabilities
    code = make_code(hub.secret, delivery_id)
    if caps.buttons:
        return text(locale, "how_button"), (Button(text=text(locale, "button"), data=f"ra:{code}"),)
    if caps.reactions:
        return text(locale, "how_reaction", p=caps.command_prefix, code=code), ()
    if caps.listening == "none" and not caps.webhooks:
        return text(locale, "how_link", url=confirm_url(hub, delivery_id)), ()
    if not caps.command_prefix:
        return text(locale, "how_reply", code=code), ()
    return text(locale, "how_command", p=caps.command_prefix, code=code), ()


def relay_part(
    hub: Hub,
    channel: Channel,
    locale: str,
    delivery_id: int,
    office_id: str | None,
    announcement_id: int | None,
) -> tuple[str, tuple[Button, ...]]:
    how, buttons = how_to_confirm(hub, channel, locale, delivery_id)
    lines = [text(locale, "ask"), how]
    if office_id and announcement_id:
        lines.append(text(locale, "notice", url=notice_url(hub, office_id, announcement_id)))
    return "\n".join(lines), buttons


def add_part(content: Content, part: str, buttons: tuple[Button, ...]) -> Content:
    """``content`` with ``part`` after its text (before an email page's end) and ``buttons`` added."""
    page = content.html
    if page is not None:
        escaped = html.escape(part, quote=False)
        if "</body>" in page:
            block = '<p style="white-space: pre-line;">' + escaped + "</p>\n</body>"
            page = page.replace("</body>", block, 1)
        else:
            page = f"{page}\n\n{escaped}"
    return Content(
        text=f"{content.text}\n\n{part}",
        html=page,
        subject=content.subject,
        buttons=(*content.buttons, *buttons),
        locale=content.locale,
    )


def for_relay(
    hub: Hub,
    channel: Channel,
    content: Content,
    delivery_id: int,
    office_id: str | None,
    announcement_id: int | None,
) -> Content:
    """A broadcast's content as a relay receives it (``hub.delivery.claim`` calls this per delivery)."""
    part, buttons = relay_part(hub, channel, content.locale, delivery_id, office_id, announcement_id)
    return add_part(content, part, buttons)
