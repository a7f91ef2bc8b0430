"""Which announcements concern an office, and how one reads on the web.

An announcement names its audience by topics (``kota-serang``, ``kota-serang/kk``) or regions (``36``);
its ``office_id`` is only the first office that audience reaches. An office's page therefore shows
what targets the office itself, one of its topics or a region above it, and a correction in place of
what it corrects. Candidates are read per province (the office's top region): a region-wide
announcement is stored under some office of that region, so never outside it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from hub import kinds
from hub.announcements import build_context, went_out
from hub.context import Hub
from hub.regions import ancestors, concerns, nearby_offices
from hub.render import RenderError
from hub.store.models import Announcement, Office, Region

#: Announcements read per office page at most (newest first); an office rarely has more than a few.
CANDIDATES = 200
PUBLIC_STATES = ("published", "cancelled")


@dataclass(frozen=True)
class WebText:
    """An announcement rendered for a page: its title, its HTML body, and the language it is in."""

    title: str
    html: str
    locale: str


async def in_force(
    session: AsyncSession, office: Office, now: datetime, also: list[int] = ()
) -> tuple[list[Announcement], datetime | None]:
    """Published announcements for ``office`` valid at ``now`` (newest first), and the next time that
    list changes by itself (one starts or ends). ``also``: ids the status says shape it."""
    regions, nearby = await nearby_offices(session, office)
    rows = (
        await session.execute(
            select(Announcement)
            .where(
                Announcement.state == "published",
                Announcement.office_id.in_(nearby),
                or_(Announcement.valid_until.is_(None), Announcement.valid_until > now),
            )
            .order_by(Announcement.id.desc())
            .limit(CANDIDATES)
        )
    ).scalars()
    rows = list(rows)
    known = {a.id for a in rows}
    missing = [i for i in also if i not in known]
    if missing:
        extra = await session.execute(
            select(Announcement).where(Announcement.id.in_(missing), Announcement.state == "published")
        )
        rows.extend(extra.scalars())
    chosen = {a.id: a for a in rows if concerns(a, office, regions) or a.id in also}
    # A correction stands where its original stood (and takes its place); a cancelled one withdraws both.
    withdrawn = await session.execute(
        select(Announcement.corrects_id).where(
            Announcement.corrects_id.in_(list(chosen)), Announcement.state == "cancelled", went_out()
        )
    )
    for original in withdrawn.scalars():
        chosen.pop(original, None)
    for a in sorted(rows, key=lambda a: a.id):
        if a.corrects_id is not None and a.corrects_id in chosen:
            chosen.pop(a.corrects_id)
            chosen[a.id] = a
    current, boundaries = [], []
    for a in chosen.values():
        if a.valid_from is not None and a.valid_from > now:
            boundaries.append(a.valid_from)
            continue
        current.append(a)
        if a.valid_until is not None:
            boundaries.append(a.valid_until)
    current.sort(key=lambda a: a.id, reverse=True)
    return current, min(boundaries, default=None)


async def public_one(session: AsyncSession, office: Office, announcement_id: int) -> Announcement | None:
    """The announcement if the public may read it on this office's pages: published or cancelled, and
    addressed to the office (or a correction of one that was)."""
    announcement = await session.get(Announcement, announcement_id)
    if announcement is None or announcement.state not in PUBLIC_STATES:
        return None
    regions = ancestors(await session.get(Region, office.region_code))
    original, hops = announcement, 0
    while original.corrects_id is not None and hops < 20:
        found = await session.get(Announcement, original.corrects_id)
        if found is None:
            break
        original, hops = found, hops + 1
    return announcement if concerns(original, office, regions) else None


def render_web(hub: Hub, announcement: Announcement, office: Office, locale: str) -> WebText:
    """The announcement as its subscribers read it, in ``locale`` when all its texts are given in it,
    else in the hub's default language (``WebText.locale`` says which)."""
    locales = list(hub.settings.hub.locales)
    try:
        data, missing = kinds.validate(announcement.template, announcement.data, locales)
    except kinds.KindError:
        data, missing = announcement.data, {}
    default = hub.settings.hub.default_locale
    chosen = locale if locale in locales and locale not in missing else default
    office_ctx: dict[str, Any] = {
        "id": office.id,
        "name": office.name,
        "timezone": office.timezone,
        "profile": office.profile,
    }
    context = build_context(
        announcement.template,
        data,
        office_ctx,
        list(announcement.services or []),
        announcement.valid_from,
        announcement.valid_until,
    )
    context["unsubscribable"] = False
    context["correction"] = announcement.corrects_id is not None
    try:
        rendered = hub.renderer.render(
            "announcements", announcement.template, channel="web", locale=chosen, context=context
        )
    except RenderError:
        if chosen == default:
            raise
        chosen = default
        rendered = hub.renderer.render(
            "announcements", announcement.template, channel="web", locale=chosen, context=context
        )
    title = rendered.subject or (rendered.text.splitlines() or [""])[0][:120]
    return WebText(title=title, html=rendered.html or "", locale=chosen)
