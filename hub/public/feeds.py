"""Public feeds (issue 11): Atom and JSON Feed 1.1 per office and per region subtree.

A feed lists an office's (or a region's offices') public announcements, newest first, each under a
tag URI that never changes; a cancellation or correction updates the entry it concerns and the
correction is an entry of its own. An office's feed also carries its current status as an entry whose
id changes with the status (``status_entry``). Bahasa Indonesia by default, ``?lang=en`` for English
where an announcement has its English texts. Served through the public cache (ETag, 304).
"""

from __future__ import annotations

import html
import re
from typing import Any

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import Response

from hub.api.deps import HubDep
from hub.clock import local_iso, utcnow
from hub.context import Hub
from hub.public import entries
from hub.public.cache import Rendered, serve
from hub.public.entries import Item, base_url, say, wanted_locale, with_lang
from hub.public.feed_docs import ATOM_TYPE, JSON_TYPE, Entry, Feed, atom, json_feed
from hub.public.status_entry import status_entry
from hub.render import format_moment
from hub.status import status_at
from hub.store.models import Office, Region

router = APIRouter(include_in_schema=False)

#: Office ids and region codes as the regions file allows them; anything else is no such page.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
WRITERS = {"atom": (atom, ATOM_TYPE), "json": (json_feed, JSON_TYPE)}


def known_name(value: str) -> str:
    if not NAME.fullmatch(value):
        raise HTTPException(404, "no such office or region")
    return value


@router.get("/kantor/{office}/feed.atom")
async def office_atom(request: Request, hub: HubDep, office: str, lang: str | None = Query(None)) -> Response:
    return await _office_feed(request, hub, known_name(office), wanted_locale(lang), "atom")


@router.get("/kantor/{office}/feed.json")
async def office_json(request: Request, hub: HubDep, office: str, lang: str | None = Query(None)) -> Response:
    return await _office_feed(request, hub, known_name(office), wanted_locale(lang), "json")


@router.get("/wilayah/{region}/feed.atom")
async def region_atom(request: Request, hub: HubDep, region: str, lang: str | None = Query(None)) -> Response:
    return await _region_feed(request, hub, known_name(region), wanted_locale(lang), "atom")


@router.get("/wilayah/{region}/feed.json")
async def region_json(request: Request, hub: HubDep, region: str, lang: str | None = Query(None)) -> Response:
    return await _region_feed(request, hub, known_name(region), wanted_locale(lang), "json")


async def _office_feed(request: Request, hub: Hub, office_id: str, locale: str, fmt: str) -> Response:
    async def build() -> Rendered:
        now = utcnow()
        async with hub.db.session() as session:
            office = await session.get(Office, office_id)
            if office is None:
                raise HTTPException(404, f"no such office: {office_id}")
            items = await entries.for_office(session, office)
            eff = await status_at(session, office, now)
        base = base_url(hub)
        feed = Feed(
            id=entries.tag(hub, f"kantor/{office_id}/feed"),
            title=say(locale, "office_feed", office=office.name),
            subtitle=say(locale, "office_subtitle", office=office.name),
            locale=locale,
            home_url=with_lang(f"{base}/kantor/{office_id}", locale),
            atom_url=with_lang(f"{base}/kantor/{office_id}/feed.atom", locale),
            json_url=with_lang(f"{base}/kantor/{office_id}/feed.json", locale),
            author=office.name,
            entries=[
                status_entry(hub, office, eff, locale),
                *(announcement_entry(hub, item, locale, office.id) for item in items),
            ],
        )
        write, media = WRITERS[fmt]
        return Rendered(write(feed), media, changes_at=eff.changes_at)

    return await serve(request, ("feed", "kantor", office_id, fmt, locale), build)


async def _region_feed(request: Request, hub: Hub, code: str, locale: str, fmt: str) -> Response:
    async def build() -> Rendered:
        async with hub.db.session() as session:
            region = await session.get(Region, code)
            if region is None:
                raise HTTPException(404, f"no such region: {code}")
            items = await entries.for_offices(session, region_path=region.path)
        base = base_url(hub)
        feed = Feed(
            id=entries.tag(hub, f"wilayah/{code}/feed"),
            title=say(locale, "region_feed", region=region.name),
            subtitle=say(locale, "region_subtitle", region=region.name),
            locale=locale,
            home_url=with_lang(f"{base}/kantor", locale),
            atom_url=with_lang(f"{base}/wilayah/{code}/feed.atom", locale),
            json_url=with_lang(f"{base}/wilayah/{code}/feed.json", locale),
            author=region.name,
            entries=[announcement_entry(hub, item, locale) for item in items],
        )
        write, media = WRITERS[fmt]
        return Rendered(write(feed), media)

    return await serve(request, ("feed", "wilayah", code, fmt, locale), build)


def announcement_entry(hub: Hub, item: Item, locale: str, page_office: str | None = None) -> Entry:
    """One announcement as a feed entry, in ``locale`` where it is written in it; its page is that of
    ``page_office`` (the feed's office) or else of the office it is stored under.

    What happened to it since comes first: cancelled (the title says so too), corrected (with a link to
    the correction), or what it corrects.
    """
    ann, office = item.announcement, item.office
    texts = entries.texts(hub, item, locale)
    lang, tz, page = texts.locale, office.timezone, page_office or office.id
    notes = []
    if item.cancelled:
        notes.append(
            say(lang, "cancelled_note", when=format_moment(item.cancelled_at or item.updated, lang, tz))
        )
    for correction, sent in item.corrected_by:
        url = entries.page_url(hub, page, correction, lang)
        notes.append(say(lang, "corrected_note", when=format_moment(sent, lang, tz), url=url))
    if item.corrects:
        notes.append(say(lang, "corrects_note", url=entries.page_url(hub, page, item.corrects[0][0], lang)))
    cap = entries.cap_url(hub, office.id, ann.id)
    tags = (
        [ann.template] + (["cancelled"] if item.cancelled else []) + (["correction"] if item.corrects else [])
    )
    facts: dict[str, Any] = {
        "kind": "announcement",
        "office": office.id,
        "state": ann.state,
        "valid_from": local_iso(ann.valid_from, tz),
        "valid_until": local_iso(ann.valid_until, tz),
        "cap": cap,
    }
    if item.cancelled:
        facts["cancelled_at"] = local_iso(item.cancelled_at or item.updated, tz)
    if item.corrects:
        facts["corrects"] = entries.page_url(hub, page, item.corrects[0][0], lang)
    if item.corrected_by:
        facts["corrected_by"] = [entries.page_url(hub, page, c, lang) for c, _ in item.corrected_by]
    return Entry(
        id=entries.tag(hub, f"kantor/{office.id}/pengumuman/{ann.id}"),
        title=say(lang, "cancelled_title", title=texts.title) if item.cancelled else texts.title,
        updated=item.updated,
        published=item.sent,
        url=entries.page_url(hub, page, ann.id, lang),
        text="\n\n".join([*notes, texts.text]),
        html="\n\n".join([*(html.escape(n, quote=False) for n in notes), texts.html]),
        locale=lang,
        author=office.name,
        tags=tags,
        links=[(cap, "related", "application/cap+xml")],
        facts=facts,
    )
