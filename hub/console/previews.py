"""What the console shows of an announcement's preview beyond hub.announcements.preview's dict."""

from __future__ import annotations

import html
from typing import Any

from hub.context import Hub
from hub.render import TOPIC_MARK
from hub.store.models import Office


async def readable(hub: Hub, preview: dict[str, Any]) -> dict[str, Any]:
    """The footer's topic as a reader sees it: the sending office's name (each reader's own topic at send)."""
    async with hub.db.session() as session:
        office = await session.get(Office, preview["office_id"])
    name = office.name if office is not None else ""
    for entry in preview["channels"].values():
        for rendering in entry["renderings"].values():
            rendering["text"] = rendering["text"].replace(TOPIC_MARK, name)
            rendering["html"] = rendering["html"].replace(TOPIC_MARK, html.escape(name))
    return preview


def emails(preview: dict[str, Any] | None) -> list[str]:
    """The email renderings a preview shows in frames (their inline styles are let through, no others)."""
    email = (preview or {}).get("channels", {}).get("email", {})
    return [r["html"] for r in email.get("renderings", {}).values() if r.get("html")]
