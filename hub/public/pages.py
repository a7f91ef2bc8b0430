"""Public pages (issue 11): the office index, each office's page, one announcement, QR codes, the email form.

No sign-in, no JavaScript, one inline stylesheet, under 50 KB of HTML. Pages are served through
``hub.public.cache`` (in-memory bytes, strong ETags, 304s) and end their cache life when the office's
status next changes. The email form feeds the double opt-in of ``hub.subscriptions``, limited per
client like the API's ``POST /v1/subscriptions/email``.
"""

from __future__ import annotations

import io
import re
from typing import Annotated, Any

import segno
from fastapi import APIRouter, Path, Request
from fastapi.responses import Response
from sqlalchemy import select

from hub import subscriptions
from hub.api import limits
from hub.api.deps import HubDep, unusable_text
from hub.clock import to_local, utcnow
from hub.logs import log
from hub.public import announced, view, web
from hub.public.cache import Rendered, serve
from hub.queue import REDIS_DOWN
from hub.render import RenderError, format_day, zone_name
from hub.status import status_at
from hub.store.models import Announcement, Office, Region

router = APIRouter(include_in_schema=False)

#: Path parameters named as the public addresses are written (``/kantor/{office}/pengumuman/{id}``).
OfficeParam = Annotated[str, Path(alias="office")]
IdParam = Annotated[str, Path(alias="id")]
OFFICE_ID = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")
#: The index lists every office below a region up to this many; above it, the region's parts instead.
MAX_LISTED = 300


def _finish(response: Response) -> Response:
    for name, value in web.SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def _not_found(locale: str, path: str) -> Rendered:
    body = web.render("not_found.html.j2", locale=locale, path=path)
    return Rendered(body, status_code=404)


async def _serve(request: Request, key: tuple[Any, ...], build: Any) -> Response:
    """Through the cache; keys hold the parameters whole (only a 200 is kept, so junk keeps nothing)."""
    return _finish(await serve(request, key, build))


# -- /kantor --------------------------------------------------------------------------------------------


@router.get("/kantor")
async def office_index(request: Request, hub: HubDep) -> Response:
    locale = web.locale_of(request)
    wanted = request.query_params.get("wilayah") or ""

    async def build() -> Rendered:
        async with hub.db.session() as session:
            regions = list((await session.execute(select(Region).order_by(Region.path))).scalars())
            offices = list((await session.execute(select(Office).order_by(Office.name))).scalars())
        tree = _tree(regions, offices, wanted)
        if tree is None:
            return _not_found(locale, request.url.path)
        body = web.render("index.html.j2", locale=locale, path=request.url.path, **tree)
        return Rendered(body)

    return await _serve(request, ("index", wanted, locale), build)


def _tree(regions: list[Region], offices: list[Office], wanted: str) -> dict[str, Any] | None:
    """The regions below ``wanted`` (all when empty) that hold offices, each with its offices."""
    by_code = {r.code: r for r in regions}
    top = by_code.get(wanted) if wanted else None
    if wanted and top is None:
        return None
    prefix = top.path if top else ""
    below = [r for r in regions if r.path.startswith(prefix)]
    paths = {o.id: by_code[o.region_code].path for o in offices if o.region_code in by_code}
    inside = [o for o in offices if paths.get(o.id, "").startswith(prefix)]
    count = {r.code: sum(1 for p in paths.values() if p.startswith(r.path)) for r in below}
    if len(inside) > MAX_LISTED:  # too many for one light page: the parts, each a page of its own
        depth = prefix.count("/") + 1
        parts = [r for r in below if r.path.count("/") == depth and count[r.code]]
        rows = [{"name": r.name, "code": r.code, "count": count[r.code], "offices": []} for r in parts]
        return {"region": top, "rows": rows, "total": len(inside), "collapsed": True}
    rows = []
    for region in below:
        own = [o for o in inside if o.region_code == region.code]
        if own:
            rows.append({"name": region.name, "code": region.code, "count": len(own), "offices": own})
    return {"region": top, "rows": rows, "total": len(inside), "collapsed": False}


# -- /kantor/{office} -----------------------------------------------------------------------------------


@router.get("/kantor/{office}")
async def office_page(office_id: OfficeParam, request: Request, hub: HubDep) -> Response:
    locale = web.locale_of(request)
    path = request.url.path

    async def build() -> Rendered:
        if not OFFICE_ID.fullmatch(office_id):
            return _not_found(locale, path)
        now = utcnow()
        async with hub.db.session() as session:
            office = await session.get(Office, office_id)
            if office is None:
                return _not_found(locale, path)
            eff = await status_at(session, office, now)
            current, boundary = await announced.in_force(session, office, now, list(eff.in_force))
            trail = await _trail(session, office)
        tz = office.timezone
        items = []
        for announcement in current:
            try:
                text = announced.render_web(hub, announcement, office, locale)
            except RenderError as exc:
                log.warning("public_render_failed", announcement=announcement.id, error=str(exc))
                continue
            items.append({"id": announcement.id, "title": text.title, "until": announcement.valid_until})
        changes = [c for c in (eff.changes_at, boundary) if c is not None]
        context = {
            "office": office,
            "trail": trail,
            "eff": _status_context(eff, locale, tz),
            "announcements": items,
            "day": lambda v: format_day(v, locale, tz),
            "ways": view.ways_to_subscribe(hub, office),
            "zone": zone_name(tz),
        }
        body = web.render("office.html.j2", locale=locale, path=path, **context)
        return Rendered(body, changes_at=min(changes, default=None))

    return await _serve(request, ("office", office_id, locale), build)


def _status_context(eff: Any, locale: str, tz: str) -> dict[str, Any]:
    """The status as the page shows it; a service repeats the office's mode, hours and quota only where
    they differ."""
    services = view.services_of(eff, locale, tz)
    for service, source in zip(services, eff.services, strict=True):
        if service["mode"] == eff.mode:
            service["mode"] = None
        if source.hours == eff.weekly:
            service["hours"] = []
        if service["quota"] == eff.quota:
            service["quota"] = None
    return {
        "today": eff.today_line(locale),
        "date": format_day(eff.today.day or to_local(eff.at, tz).date(), locale, tz),
        "mode": eff.mode,
        "quota": eff.quota,
        "week": view.week_rows(eff.weekly, locale, tz),
        "services": services,
        "urgent": [view.localized(u, locale) for u in eff.urgent],
        "contacts": [view.contact(c) for c in eff.contacts],
        "note": view.localized(eff.note, locale),
        "exceptions": [view.exception_text(e, locale, tz) for e in eff.exceptions],
    }


async def _trail(session: Any, office: Office) -> list[Region]:
    region = await session.get(Region, office.region_code)
    codes = announced.ancestors(region)
    found = {
        r.code: r for r in (await session.execute(select(Region).where(Region.code.in_(codes)))).scalars()
    }
    return [found[c] for c in codes if c in found]


# -- /kantor/{office}/pengumuman/{id} ---------------------------------------------------------------------


@router.get("/kantor/{office}/pengumuman/{id}")
async def announcement_page(
    office_id: OfficeParam, announcement_id: IdParam, request: Request, hub: HubDep
) -> Response:
    locale = web.locale_of(request)
    path = request.url.path

    async def build() -> Rendered:
        number = int(announcement_id) if announcement_id.isdigit() and len(announcement_id) < 19 else None
        if not OFFICE_ID.fullmatch(office_id) or number is None:
            return _not_found(locale, path)
        now = utcnow()
        async with hub.db.session() as session:
            office = await session.get(Office, office_id)
            announcement = await announced.public_one(session, office, number) if office else None
            if office is None or announcement is None:
                return _not_found(locale, path)
            corrected_by = await session.scalar(
                select(Announcement.id)
                .where(Announcement.corrects_id == number, Announcement.state == "published")
                .order_by(Announcement.id.desc())
                .limit(1)
            )
        try:
            text = announced.render_web(hub, announcement, office, locale)
        except RenderError as exc:  # stored data its template no longer takes: not shown, never a 500
            log.warning("public_render_failed", announcement=announcement.id, error=str(exc))
            return _not_found(locale, path)
        starts, ends = announcement.valid_from, announcement.valid_until
        future = [t for t in (starts, ends) if t is not None and t > now]
        context = {
            "office": office,
            "announcement": announcement,
            "text": text,
            "cancelled": announcement.state == "cancelled",
            "expired": ends is not None and ends <= now,
            "upcoming": starts is not None and starts > now,
            "corrected_by": corrected_by,
        }
        body = web.render("announcement.html.j2", locale=locale, path=path, **context)
        return Rendered(body, changes_at=min(future, default=None))

    return await _serve(request, ("announcement", office_id, announcement_id, locale), build)


# -- /kantor/{office}/qr/{what}.svg -----------------------------------------------------------------------


@router.get("/kantor/{office}/qr/{what}.svg")
async def qr_code(office_id: OfficeParam, what: str, request: Request, hub: HubDep) -> Response:
    async def build() -> Rendered:
        if not OFFICE_ID.fullmatch(office_id) or what not in view.QR_KINDS:
            return Rendered(b"", media_type="text/plain", status_code=404)
        async with hub.db.session() as session:
            office = await session.get(Office, office_id)
        payload = view.ways_to_subscribe(hub, office).qr_payload(what) if office else None
        if not payload:
            return Rendered(b"", media_type="text/plain", status_code=404)
        out = io.BytesIO()
        segno.make(payload, error="m", micro=False).save(out, kind="svg", scale=4, border=2, xmldecl=False)
        return Rendered(out.getvalue(), media_type="image/svg+xml")

    return await serve(request, ("qr", office_id, what), build)


# -- POST /kantor/{office}/langganan ----------------------------------------------------------------------


@router.post("/kantor/{office}/langganan")
async def subscribe_email(office_id: OfficeParam, request: Request, hub: HubDep) -> Response:
    """The email form: starts a double opt-in for the office's general topic; the answer is the same
    whether the address was new, pending or already subscribed."""
    try:
        form = await request.form()
    except Exception:  # a malformed body
        form = {}
    lang = str(form.get("lang") or "")
    locale = lang if lang in web.LOCALES else "id"
    email = str(form.get("email") or "").strip()
    path = request.url.path
    async with hub.db.session() as session:
        office = await session.get(Office, office_id) if OFFICE_ID.fullmatch(office_id) else None
    if office is None or "email" not in hub.channels:
        return _no_store(_not_found(locale, path))
    status, outcome, detail, retry = 200, "sent", "", None
    if not email or len(email) > 320 or unusable_text(email):
        status, outcome = 422, "invalid"
    else:
        try:
            await limits.email_subscribe(hub, limits.client(hub, request), locale)
            await subscriptions.subscribe(hub, office.id, "email", email, locale=locale)
        except limits.TooManyRequests as exc:
            status, outcome, detail, retry = 429, "too_many", str(exc), exc.retry_after
        except subscriptions.SubscriptionError:
            status, outcome = 422, "invalid"
        except REDIS_DOWN:
            status, outcome = 503, "unavailable"
    body = web.render(
        "subscribed.html.j2",
        locale=locale,
        path=f"/kantor/{office.id}",
        office=office,
        outcome=outcome,
        detail=detail,
        email=email if outcome == "invalid" else "",
    )
    response = _no_store(Rendered(body, status_code=status))
    if retry is not None:
        response.headers["Retry-After"] = str(retry)
    return response


def _no_store(rendered: Rendered) -> Response:
    """The form's answers: about one request, kept by no cache."""
    response = Response(rendered.body, rendered.status_code, media_type=rendered.media_type)
    response.headers["Cache-Control"] = "no-store"
    return _finish(response)
