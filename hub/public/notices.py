"""Printable notices on the public pages (issue 11): what a kelurahan prints for its notice board.

``/kantor/{office}/pengumuman/{id}/cetak.pdf`` prints an announcement the office's page shows (published
or cancelled); ``/kantor/{office}/cetak.pdf`` the office's status now. ``?ukuran=a4|a5`` picks the
paper, ``?lang=en`` the language. A PDF costs about half a second to render: responses go through
``hub.public.cache`` (ETag, 304) and ``hub.notices`` keeps the bytes per notice version, so a notice is
rendered again only when what it says changed.
"""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, Path, Request
from fastapi.responses import Response

from hub import notices
from hub.api.deps import HubDep
from hub.clock import utcnow
from hub.public import web
from hub.public.cache import Rendered, serve

router = APIRouter(include_in_schema=False)

OfficeParam = Annotated[str, Path(alias="office")]
IdParam = Annotated[str, Path(alias="id")]
OFFICE_ID = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")
PDF = "application/pdf"


def _size(request: Request) -> notices.Size:
    asked = request.query_params.get("ukuran", "a4").lower()
    return asked if asked in notices.SIZES else "a4"  # type: ignore[return-value]


def _not_found(locale: str, path: str) -> Rendered:
    return Rendered(web.render("not_found.html.j2", locale=locale, path=path), status_code=404)


def _finish(response: Response) -> Response:
    for name, value in web.SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


@router.get("/kantor/{office}/pengumuman/{id}/cetak.pdf")
async def announcement_notice(
    office_id: OfficeParam, announcement_id: IdParam, request: Request, hub: HubDep
) -> Response:
    locale, size = web.locale_of(request), _size(request)
    path = request.url.path

    async def build() -> Rendered:
        number = int(announcement_id) if announcement_id.isdigit() and len(announcement_id) < 19 else None
        if not OFFICE_ID.fullmatch(office_id) or number is None:
            return _not_found(locale, path)
        try:
            made = await notices.announcement_notice(
                hub, number, size=size, locale=locale, office_id=office_id
            )
        except notices.NoticeNotFound:
            return _not_found(locale, path)
        return _pdf(made)

    key = ("notice", office_id[:64], announcement_id[:20], size, locale)
    return _finish(await serve(request, key, build))


@router.get("/kantor/{office}/cetak.pdf")
async def status_notice(office_id: OfficeParam, request: Request, hub: HubDep) -> Response:
    locale, size = web.locale_of(request), _size(request)
    path = request.url.path

    async def build() -> Rendered:
        if not OFFICE_ID.fullmatch(office_id):
            return _not_found(locale, path)
        at = utcnow()
        try:
            made = await notices.office_notice(hub, office_id, size=size, locale=locale, at=at)
        except notices.NoticeNotFound:
            return _not_found(locale, path)
        return _pdf(made, changes_at=made.changes_at)

    return _finish(await serve(request, ("status-notice", office_id[:64], size, locale), build))


def _pdf(made: notices.Notice, **extra: object) -> Rendered:
    headers = {"Content-Disposition": f'inline; filename="{made.filename}"'}
    return Rendered(made.pdf, media_type=PDF, headers=headers, **extra)  # type: ignore[arg-type]
