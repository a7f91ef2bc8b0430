"""Messages: rendered up front, stored with their audience, before any delivery row exists."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from hub import signing
from hub.clock import utcnow
from hub.context import Hub
from hub.render import Rendered, RenderError
from hub.store.models import (
    Message,
    MessageEndpoint,
    MessageTopic,
    Rendering,
)


@dataclass(frozen=True)
class Draft:
    """What a message says and to whom, before it is stored."""

    kind: str
    lane: str
    group: str
    template: str
    context: dict[str, Any]
    office_id: str | None = None
    announcement_id: int | None = None
    topic_ids: Sequence[int] = ()
    endpoint_ids: Sequence[int] = ()
    corrects_message_id: int | None = None
    send_at: datetime | None = None
    not_after: datetime | None = None
    #: Restrict rendering to these (channel, locale) pairs; default: every enabled channel and locale.
    renditions: Sequence[tuple[str, str]] | None = None


def render_all(hub: Hub, draft: Draft) -> dict[tuple[str, str], Rendered]:
    """Render every channel and locale up front: a template error stops everything before a row exists."""
    pairs = draft.renditions or [(ch, loc) for ch in sorted(hub.channels) for loc in hub.settings.hub.locales]
    if not pairs:
        raise RenderError("no channel is enabled: nothing could be sent")
    # A correction says so where a message has a subject or title ("Ralat: ...").
    context = {**draft.context, "correction": True} if draft.kind == "correction" else draft.context
    return {
        (ch, loc): hub.renderer.render(draft.group, draft.template, channel=ch, locale=loc, context=context)
        for ch, loc in pairs
    }


async def create_message(
    hub: Hub, draft: Draft, *, state: str = "planning", session: AsyncSession | None = None
) -> Message:
    """Render, then store the message; in ``session`` when given, so a caller's other rows commit with it."""
    renderings = render_all(hub, draft)
    if session is not None:
        return await _store(session, draft, renderings, state)
    async with hub.db.transaction() as own:
        return await _store(own, draft, renderings, state)


async def _store(
    session: AsyncSession, draft: Draft, renderings: dict[tuple[str, str], Rendered], state: str
) -> Message:
    message = Message(
        kind=draft.kind,
        lane=draft.lane,
        office_id=draft.office_id,
        announcement_id=draft.announcement_id,
        corrects_message_id=draft.corrects_message_id,
        state=state,
        send_at=draft.send_at or utcnow(),
        not_after=draft.not_after,
    )
    session.add(message)
    await session.flush()
    session.add_all(
        Rendering(
            message_id=message.id,
            channel=ch,
            locale=loc,
            subject=r.subject,
            text=r.text,
            html=r.html,
            buttons=r.buttons,
        )
        for (ch, loc), r in renderings.items()
    )
    session.add_all(MessageTopic(message_id=message.id, topic_id=t) for t in sorted(set(draft.topic_ids)))
    session.add_all(
        MessageEndpoint(message_id=message.id, endpoint_id=e) for e in sorted(set(draft.endpoint_ids))
    )
    await session.flush()
    return message


def link(hub: Hub, purpose: str, endpoint_id: int, message_id: int, topic_id: int | None = None) -> str:
    """A signed link for one endpoint: ``/v1/unsubscribe/<token>`` or ``/v1/confirm/<token>``.

    ``topic_id``: the topic through which the message reached the endpoint; an unsubscribe link that
    names it leaves that topic only (a region-wide broadcast must not end the citizen's other topics).
    """
    values = (endpoint_id, message_id) if topic_id is None else (endpoint_id, message_id, topic_id)
    token = signing.sign(hub.secret, purpose, *values)
    return f"{hub.settings.hub.public_url.rstrip('/')}/v1/{purpose}/{token}"
