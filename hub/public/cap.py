"""CAP 1.2 (OASIS Common Alerting Protocol) documents of public announcements, and an index of those in force.

Governments exchange public alerts in CAP; a news site, a radio station's system or an alert
aggregator reads ours without knowing the hub. Each public announcement has one document at
``/kantor/{office}/cap/{announcement}.xml``: an ``Alert`` when published, an ``Update`` for a correction
(``references`` naming what it corrects), a ``Cancel`` once cancelled (referencing the alert it ends).
``/kantor/{office}/cap.atom`` lists the office's alerts in force now, each linking its document (the
OASIS "CAP feeds" shape). Identifiers are stable: the sender (the public host) plus the announcement's
id. Times carry the office's offset (CAP forbids "Z"). tests/data/cap/CAP-v1.2.xsd validates them.
"""

from __future__ import annotations

import re
from datetime import datetime

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import Response
from lxml import etree
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from hub.api.deps import HubDep
from hub.clock import to_local, utcnow
from hub.context import Hub
from hub.public import entries
from hub.public.cache import Rendered, serve
from hub.public.entries import Item, say, wanted_locale, with_lang
from hub.public.feed_docs import ATOM_TYPE, Entry, Feed, atom
from hub.public.feeds import known_name
from hub.store.models import Office, Region

router = APIRouter(include_in_schema=False)

CAP_NS = "urn:oasis:names:tc:emergency:cap:1.2"
CAP_TYPE = "application/cap+xml; charset=utf-8"
#: CAP's language codes for the hub's languages.
CAP_LANGUAGES = {"id": "id-ID", "en": "en-US"}
#: Kemendagri region codes (``36.73``); lower levels in the regions file carry names only.
KEMENDAGRI_CODE = re.compile(r"\d+(\.\d+)*")
#: How much an announcement of each kind disrupts service (CAP severity); the rest are ``Minor``.
SEVERITY = {"closure": "Moderate", "suspension": "Moderate"}
MAX_ID = 2**63 - 1


@router.get("/kantor/{office}/cap/{announcement}.xml")
async def cap_document(request: Request, hub: HubDep, office: str, announcement: str) -> Response:
    office_id = known_name(office)
    if not announcement.isdigit() or len(announcement) > 19 or int(announcement) > MAX_ID:
        raise HTTPException(404, "no such announcement")
    announcement_id = int(announcement)

    async def build() -> Rendered:
        async with hub.db.session() as session:
            item = await entries.one(session, office_id, announcement_id)
            if item is None:  # a draft, another office's, or none: the same answer
                raise HTTPException(404, f"no such announcement of {office_id}: {announcement_id}")
            regions = await _regions(session, item)
        return Rendered(document(hub, item, regions), CAP_TYPE)

    return await serve(request, ("cap", office_id, announcement_id), build)


@router.get("/kantor/{office}/cap.atom")
async def cap_index(request: Request, hub: HubDep, office: str, lang: str | None = Query(None)) -> Response:
    office_id, locale = known_name(office), wanted_locale(lang)

    async def build() -> Rendered:
        now = utcnow()
        async with hub.db.session() as session:
            row = await session.get(Office, office_id)
            if row is None:
                raise HTTPException(404, f"no such office: {office_id}")
            items, changes_at = await entries.in_force(session, row, now)
        feed = Feed(
            id=entries.tag(hub, f"kantor/{office_id}/cap"),
            title=say(locale, "cap_index", office=row.name),
            subtitle=say(locale, "cap_index", office=row.name),
            locale=locale,
            home_url=with_lang(f"{entries.base_url(hub)}/kantor/{office_id}", locale),
            atom_url=with_lang(f"{entries.base_url(hub)}/kantor/{office_id}/cap.atom", locale),
            json_url=None,
            author=row.name,
            entries=[_index_entry(hub, item, locale) for item in items],
        )
        return Rendered(atom(feed), ATOM_TYPE, changes_at=changes_at)

    return await serve(request, ("cap.atom", office_id, locale), build)


def _index_entry(hub: Hub, item: Item, locale: str) -> Entry:
    texts = entries.texts(hub, item, locale)
    office = item.office
    return Entry(
        id=entries.tag(hub, f"kantor/{office.id}/cap/{item.id}"),
        title=texts.title,
        updated=item.updated,
        published=item.sent,
        url=entries.cap_url(hub, office.id, item.id),
        url_type="application/cap+xml",
        text=texts.text,
        html=texts.html,
        locale=texts.locale,
        author=office.name,
        tags=[item.announcement.template],
        links=[(entries.page_url(hub, office.id, item.id, texts.locale), "related", "text/html")],
    )


# ---------------------------------------------------------------------------------------------------------
# The document


def identifier(hub: Hub, announcement_id: int, *, cancel: bool = False) -> str:
    """Unique per sender and stable; CAP forbids spaces, commas, ``<`` and ``&`` in it."""
    return f"{entries.authority(hub)}.pengumuman.{announcement_id}" + (".batal" if cancel else "")


def cap_time(value: datetime, tz: str) -> str:
    """``2020-03-23T08:00:00+07:00``: whole seconds and an offset, as the schema's pattern wants."""
    return to_local(value, tz).replace(microsecond=0).isoformat()


def document(hub: Hub, item: Item, regions: list[Region]) -> bytes:
    ann, office = item.announcement, item.office
    tz, sender = office.timezone, entries.authority(hub)
    earlier = list(reversed(item.corrects))  # what it corrects, oldest first
    if item.cancelled:
        msg_type, sent = "Cancel", item.cancelled_at or item.updated
        earlier += [(ann.id, item.sent), *item.corrected_by]
    elif item.corrects:
        msg_type, sent = "Update", item.sent
    else:
        msg_type, sent = "Alert", item.sent
    alert = etree.Element(f"{{{CAP_NS}}}alert", nsmap={None: CAP_NS})

    def add(parent: etree._Element, name: str, text: str | None) -> etree._Element:
        child = etree.SubElement(parent, f"{{{CAP_NS}}}{name}")
        child.text = text
        return child

    add(alert, "identifier", identifier(hub, ann.id, cancel=item.cancelled))
    add(alert, "sender", sender)
    add(alert, "sent", cap_time(sent, tz))
    add(alert, "status", "Actual")
    add(alert, "msgType", msg_type)
    add(alert, "scope", "Public")
    if earlier:
        add(
            alert,
            "references",
            " ".join(f"{sender},{identifier(hub, i)},{cap_time(t, tz)}" for i, t in earlier),
        )
    started = ann.valid_from is None or ann.valid_from <= item.sent
    for locale in entries.languages(hub, ann):
        if locale not in CAP_LANGUAGES:
            continue
        texts = entries.texts(hub, item, locale)
        info = add(alert, "info", None)
        add(info, "language", CAP_LANGUAGES[locale])
        add(info, "category", "Other")
        add(info, "event", _event(ann.template, locale))
        add(info, "urgency", "Immediate" if started else "Future")
        add(info, "severity", SEVERITY.get(ann.template, "Minor"))
        add(info, "certainty", "Observed" if started else "Likely")
        if ann.valid_from is not None:
            add(info, "effective", cap_time(ann.valid_from, tz))
        if ann.valid_until is not None:
            add(info, "expires", cap_time(ann.valid_until, tz))
        add(info, "senderName", office.name)
        title = say(locale, "cancelled_title", title=texts.title) if item.cancelled else texts.title
        add(info, "headline", title[:160])
        add(info, "description", texts.text)
        add(info, "web", entries.page_url(hub, office.id, ann.id, locale))
        for region in regions:
            area = add(info, "area", None)
            add(area, "areaDesc", region.name)
            if KEMENDAGRI_CODE.fullmatch(region.code):
                geocode = add(area, "geocode", None)
                add(geocode, "valueName", "KEMENDAGRI")
                add(geocode, "value", region.code)
    return etree.tostring(alert, xml_declaration=True, encoding="UTF-8", pretty_print=True)


def _event(template: str, locale: str) -> str:
    """What kind of event (CAP ``event``): the announcement's kind in words."""
    phrases = entries.phrases(locale)
    return phrases.get(f"event_{template}", phrases["event_free_text"])


async def _regions(session: AsyncSession, item: Item) -> list[Region]:
    """The regions it was announced for, or its office's region."""
    codes = [str(c) for c in (item.announcement.targets or {}).get("regions") or []] or [
        item.office.region_code
    ]
    found = {
        r.code: r for r in (await session.execute(select(Region).where(Region.code.in_(codes)))).scalars()
    }
    return [found[c] for c in codes if c in found]
