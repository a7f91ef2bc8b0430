"""Announcements as the public sees them: which ones, when they went out, and their texts per language.

Feeds and CAP documents (and anything else public) read announcements through here, so that they all
agree: only announcements that went out are public (published ones, and cancelled ones that had been
published), a correction names what it corrects, and an announcement's time is when it went out, not
when it was drafted. Texts are the announcement's own templates rendered for the web (no channel
layout), in Bahasa Indonesia and, when the announcement has all its texts in English, in English.
"""

from __future__ import annotations

import tomllib
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession

from hub import kinds
from hub.announcements import build_context
from hub.context import Hub
from hub.public import announced
from hub.regions import concerns, nearby_offices
from hub.render import RenderError
from hub.store.models import Announcement, Message, Office, Region

#: Announcements per feed, newest first.
FEED_LIMIT = 50
#: Kinds of message that carry an announcement to its audience (one per announcement).
CARRIERS = ("announcement", "correction")
#: A tag URI's date: any day the hub's host name was its operator's (RFC 4151); fixed, so ids never move.
TAG_DATE = "2020"
_TEXTS_DIR = Path(__file__).parent / "texts"


@cache
def phrases(locale: str) -> dict[str, str]:
    """The feeds' own sentences (``texts/feeds.<locale>.toml``); Indonesian for an unknown language."""
    path = _TEXTS_DIR / f"feeds.{locale}.toml"
    if not path.is_file():
        path = _TEXTS_DIR / "feeds.id.toml"
    return tomllib.loads(path.read_text(encoding="utf-8"))


def say(locale: str, key: str, **values: Any) -> str:
    return phrases(locale)[key].format(**values)


def wanted_locale(lang: str | None) -> str:
    """``?lang=en`` gives English; anything else (or nothing) Bahasa Indonesia."""
    return "en" if lang == "en" else "id"


# ---------------------------------------------------------------------------------------------------------
# Addresses


def base_url(hub: Hub) -> str:
    return hub.settings.hub.public_url.rstrip("/")


def authority(hub: Hub) -> str:
    """The public host (with its port, if any): the CAP sender and the tag URIs' authority."""
    return urlsplit(base_url(hub)).netloc or "localhost"


def tag(hub: Hub, specific: str) -> str:
    return f"tag:{urlsplit(base_url(hub)).hostname or 'localhost'},{TAG_DATE}:{specific}"


def page_url(hub: Hub, office_id: str, announcement_id: int, locale: str = "id") -> str:
    url = f"{base_url(hub)}/kantor/{office_id}/pengumuman/{announcement_id}"
    return url + ("?lang=en" if locale == "en" else "")


def cap_url(hub: Hub, office_id: str, announcement_id: int) -> str:
    return f"{base_url(hub)}/kantor/{office_id}/cap/{announcement_id}.xml"


def with_lang(url: str, locale: str) -> str:
    return url + ("?lang=en" if locale == "en" else "")


# ---------------------------------------------------------------------------------------------------------
# Which announcements, and their history


@dataclass
class Item:
    """One public announcement with what its readers need to know about its history (times naive UTC)."""

    announcement: Announcement
    office: Office
    #: When it went out (its message's send time).
    sent: datetime
    cancelled_at: datetime | None = None
    #: Corrections of this one that went out: (id, sent), oldest first.
    corrected_by: list[tuple[int, datetime]] = field(default_factory=list)
    #: What this one corrects, nearest first, back to the first announcement: (id, sent).
    corrects: list[tuple[int, datetime]] = field(default_factory=list)

    @property
    def id(self) -> int:
        return self.announcement.id

    @property
    def cancelled(self) -> bool:
        return self.announcement.state == "cancelled"

    @property
    def updated(self) -> datetime:
        """The last time anything about it changed: sent, corrected or cancelled."""
        times = [self.sent, *(sent for _, sent in self.corrected_by)]
        if self.cancelled_at is not None:
            times.append(self.cancelled_at)
        return max(times)


def _carried() -> Select[Any]:
    return (
        select(Announcement, Message.send_at, Message.planned_at)
        .join(Message, Message.announcement_id == Announcement.id)
        .where(Message.kind.in_(CARRIERS), Announcement.state.in_(("published", "cancelled")))
    )


async def for_offices(
    session: AsyncSession,
    *,
    office_id: str | None = None,
    region_path: str | None = None,
    limit: int = FEED_LIMIT,
) -> list[Item]:
    """The newest public announcements stored under one office or under any office below a region."""
    query = _carried().order_by(Announcement.id.desc()).limit(limit)
    if office_id is not None:
        query = query.where(Announcement.office_id == office_id)
    if region_path is not None:
        query = query.join(Office, Office.id == Announcement.office_id).join(
            Region, Region.code == Office.region_code
        )
        query = query.where(Region.path.startswith(region_path, autoescape=True))
    return await _items(session, (await session.execute(query)).all())


async def for_office(session: AsyncSession, office: Office, limit: int = FEED_LIMIT) -> list[Item]:
    """The newest public announcements that concern ``office``, newest first: its own, and those
    addressed to a region above it (a province's closure), as its page shows them
    (``hub.public.announced.concerns``); a correction goes wherever what it corrects went."""
    regions, nearby = await nearby_offices(session, office)
    query = _carried().where(Announcement.office_id.in_(nearby))
    rows = (await session.execute(query.order_by(Announcement.id.desc()).limit(announced.CANDIDATES))).all()
    kept: set[int] = set()
    for row in sorted(rows, key=lambda r: r[0].id):  # originals before their corrections
        ann = row[0]
        if concerns(ann, office, regions) or ann.corrects_id in kept:
            kept.add(ann.id)
    chosen = [row for row in rows if row[0].id in kept][:limit]
    return await _items(session, chosen)


async def one(session: AsyncSession, office_id: str, announcement_id: int) -> Item | None:
    """One public announcement of this office; None for a draft, another office's, or no such one."""
    query = _carried().where(Announcement.id == announcement_id, Announcement.office_id == office_id)
    items = await _items(session, (await session.execute(query)).all())
    return items[0] if items else None


async def in_force(
    session: AsyncSession, office: Office, now: datetime
) -> tuple[list[Item], datetime | None]:
    """The announcements in force for ``office`` at ``now``, as its page lists them
    (``hub.public.announced.in_force``: its own, its topics', a region's above it, corrections in place of
    what they correct), and the next time that list changes by itself (a start or an end)."""
    current, changes_at = await announced.in_force(session, office, now)
    if not current:
        return [], changes_at
    query = _carried().where(Announcement.id.in_([a.id for a in current]))
    items = [item for item in await _items(session, (await session.execute(query)).all()) if item.sent <= now]
    return items, changes_at


async def _items(session: AsyncSession, rows: list[Any]) -> list[Item]:
    ids = [row[0].id for row in rows]
    offices = {
        o.id: o
        for o in (
            await session.execute(select(Office).where(Office.id.in_({row[0].office_id for row in rows})))
        ).scalars()
    }
    corrections: dict[int, list[tuple[int, datetime]]] = {}
    if ids:
        found = await session.execute(
            _carried()
            .with_only_columns(Announcement.corrects_id, Announcement.id, Message.send_at)
            .where(Announcement.corrects_id.in_(ids))
            .order_by(Message.send_at)
        )
        for corrected, correction, sent in found.all():
            corrections.setdefault(corrected, []).append((correction, sent))
    items = []
    for ann, sent, planned_at in rows:
        at = ann.cancelled_at if ann.state == "cancelled" else None
        # A cancelled announcement is public only if it went out before it was cancelled.
        if ann.state == "cancelled" and planned_at is None and (at is None or at < sent):
            continue
        chain = await _chain(session, ann.corrects_id)
        items.append(Item(ann, offices[ann.office_id], sent, at, corrections.get(ann.id, []), chain))
    items.sort(key=lambda item: (item.sent, item.id), reverse=True)
    return items


async def _chain(session: AsyncSession, corrects_id: int | None) -> list[tuple[int, datetime]]:
    chain: list[tuple[int, datetime]] = []
    seen: set[int] = set()
    while corrects_id is not None and corrects_id not in seen and len(chain) < 20:
        seen.add(corrects_id)
        row = (
            await session.execute(
                select(Announcement.corrects_id, Message.send_at)
                .join(Message, Message.announcement_id == Announcement.id)
                .where(Announcement.id == corrects_id, Message.kind.in_(CARRIERS))
            )
        ).first()
        if row is None:
            break
        chain.append((corrects_id, row[1]))
        corrects_id = row[0]
    return chain


# ---------------------------------------------------------------------------------------------------------
# Texts


@dataclass(frozen=True)
class Texts:
    """An announcement in one language: ``locale`` is the language it is really in."""

    locale: str
    title: str
    text: str
    #: The body as HTML (inline tags and line breaks, as the templates write it).
    html: str


#: Rendered texts by announcement (id and creation time: another database may reuse an id), language
#: and office name: an announcement never changes once public.
_RENDERED: OrderedDict[tuple[Any, ...], Texts] = OrderedDict()
_RENDERED_MAX = 5_000


def languages(hub: Hub, announcement: Announcement) -> list[str]:
    """The languages it can be read in: the default one, plus each its texts all exist in."""
    locales = list(hub.settings.hub.locales)
    default = hub.settings.hub.default_locale
    try:
        _, missing = kinds.validate(announcement.template, announcement.data, locales)
    except kinds.KindError:
        missing = {loc: ["?"] for loc in locales}
    return [loc for loc in locales if loc == default or loc not in missing]


def texts(hub: Hub, item: Item, locale: str) -> Texts:
    """The announcement in ``locale`` if it is written in it, else in the default language."""
    ann, office = item.announcement, item.office
    if locale not in languages(hub, ann):
        locale = hub.settings.hub.default_locale
    key = (ann.id, ann.created_at, locale, office.name)
    cached = _RENDERED.get(key)
    if cached is not None:
        return cached
    context = build_context(
        ann.template,
        ann.data,
        {"id": office.id, "name": office.name, "timezone": office.timezone, "profile": office.profile},
        ann.services,
        ann.valid_from,
        ann.valid_until,
    )
    if ann.corrects_id is not None:
        context["correction"] = True
    try:
        rendered = hub.renderer.render(
            "announcements", ann.template, channel="web", locale=locale, context=context
        )
        text, body, subject = rendered.text, rendered.html or "", rendered.subject
    except RenderError:  # a template removed since: the office's name still says whose it was
        text, body, subject = "", "", None
    title = subject or (text.splitlines() or [office.name])[0][:120]
    result = Texts(locale, title, text, body)
    _RENDERED[key] = result
    while len(_RENDERED) > _RENDERED_MAX:
        _RENDERED.popitem(last=False)
    return result
