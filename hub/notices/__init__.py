"""Printable notices (issue 11): an announcement or an office's status on A4 or A5, for notice boards.

Not every citizen has a smartphone: offices pin notices at the kelurahan. A notice carries the message in
large type, its validity in the office's zone, contacts per service, and QR codes that subscribe (the
Telegram bot's deep link, the office's public page) beside the SMS keyword written out.

``announcement_notice`` and ``office_notice`` give the PDF and its version (an ETag); the CLI
(``hub notice``), the staff API and the public pages all call them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from hub.clock import utcnow
from hub.context import Hub
from hub.errors import NotFound
from hub.notices import content
from hub.notices.pdf import SIZES, Size, pdf
from hub.public.announced import public_one
from hub.store.models import Announcement, Office

__all__ = ["SIZES", "Notice", "NoticeNotFound", "announcement_notice", "office_notice"]


class NoticeNotFound(NotFound):
    """No such announcement or office (or one the caller may not print): nothing to learn from ids."""


@dataclass(frozen=True)
class Notice:
    pdf: bytes
    version: str
    filename: str
    #: When what it says may change by itself (a status notice: the status's next boundary).
    changes_at: datetime | None = None


async def announcement_notice(
    hub: Hub,
    announcement_id: int,
    *,
    size: Size = "a4",
    locale: str | None = None,
    office_id: str | None = None,
    at: datetime | None = None,
) -> Notice:
    """The notice of one announcement.

    ``office_id``: as the office's public pages show it (``hub.public.announced.public_one``: published
    or cancelled, addressed to the office or a region above it; a draft is nobody's business yet).
    Without it, as staff print it: any state, under the announcement's own office.
    """
    at = at or utcnow()
    async with hub.db.session() as session:
        if office_id is not None:
            office = await session.get(Office, office_id)
            ann = await public_one(session, office, announcement_id) if office is not None else None
        else:
            ann = await session.get(Announcement, announcement_id)
            office = await session.get(Office, ann.office_id) if ann is not None else None
        if ann is None or office is None:
            raise NoticeNotFound(f"announcement {announcement_id} not found")
        shown = content.reading_locale(hub, ann, locale or hub.settings.hub.default_locale)
        view = await content.announcement_view(hub, session, ann, office, shown, at)
    data, version = await pdf(view, size)
    return Notice(data, version, f"pengumuman-{ann.id}-{size}.pdf")


async def office_notice(
    hub: Hub, office_id: str, *, size: Size = "a4", locale: str | None = None, at: datetime | None = None
) -> Notice:
    """The notice of an office's status at ``at`` (now): today, the week, services and contacts."""
    at = at or utcnow()
    wanted = locale or hub.settings.hub.default_locale
    if wanted not in hub.settings.hub.locales:
        wanted = hub.settings.hub.default_locale
    async with hub.db.session() as session:
        office = await session.get(Office, office_id)
        if office is None:
            raise NoticeNotFound(f"office {office_id} not found")
        view = await content.status_view(hub, session, office, wanted, at)
    data, version = await pdf(view, size)
    return Notice(data, version, f"{office.id}-{size}.pdf", view["changes_at_utc"])
