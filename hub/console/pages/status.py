"""An office's status (issue 11): what citizens see now, and the base status editors set, with its history.

Anyone signed in reads it for the offices of their subtree; editors change it. A change is validated whole
(a refusal marks the field), stored with its history (``office_status_history``) and an audit entry in
the same transaction. Plain forms: it works without JavaScript.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import select

from hub.clock import utcnow
from hub.console import audit, sessions, web
from hub.console.auth import Role, Staff, need
from hub.render import WEEK
from hub.status import StatusError, base_of, changed_fields, history, set_status, status_at
from hub.status.effective import pick, week_rows
from hub.status.form import FIELDS, form_field, from_form, to_form
from hub.status.model import MODES, dump
from hub.store.models import Office

router = APIRouter()
#: Error codes with their own text under ``status.error.``; others show the English message after a lead-in.
KNOWN_ERRORS = (
    "span",
    "span_outside_day",
    "span_order",
    "span_overlap",
    "greater_than_equal",
    "int_parsing",
    "unknown_service",
    "exception_line",
    "json",
    "text_no_id",
)


async def _office(request: Request, staff: Staff) -> Office | None:
    wanted = request.query_params.get("kantor") or staff.office_id
    if wanted not in staff.offices:
        return None
    async with sessions.hub_of(request).db.session() as session:
        return await session.get(Office, wanted)


async def _page(
    request: Request,
    staff: Staff,
    office: Office,
    values: dict[str, str] | None = None,
    error: StatusError | None = None,
) -> HTMLResponse:
    hub = sessions.hub_of(request)
    locale = web.locale_of(request)
    async with hub.db.session() as session:
        eff = await status_at(session, office, utcnow())
        base, _ = await base_of(session, office)
        changes = await history(session, office.id, 10)
        offices = (
            await session.execute(
                select(Office.id, Office.name).where(Office.id.in_(sorted(staff.offices))).order_by(Office.id)
            )
        ).all()
    field = form_field(error) if error else ""
    message = ""
    if error is not None:
        message = f"status.error.{error.code}" if error.code in KNOWN_ERRORS else ""
    return web.page(
        request,
        "status/page.html.j2",
        staff,
        status_code=400 if error else 200,
        office=office,
        offices=[tuple(row) for row in offices],
        eff=eff,
        today=eff.today_line(locale),
        week=week_rows(eff.weekly, locale),
        services=[_service(s, locale) for s in eff.services],
        urgent=[pick(u, locale) for u in eff.urgent],
        values=values or to_form(dump(base)),
        week_days=WEEK,
        modes=MODES,
        error_field=field,
        error_key=message,
        error_params=error.params if error else {},
        error_text=str(error) if error else "",
        changes=[(c, changed_fields(c.before, c.after)) for c in changes],
        can_edit=staff.role >= Role.EDITOR,
        notice="saved" if request.query_params.get("ok") == "saved" else "",
    )


def _service(svc: Any, locale: str) -> dict[str, Any]:
    return {
        "name": pick(svc.name, locale),
        "mode": svc.mode,
        "today": ", ".join(svc.today.spans) if svc.today and svc.today.open else "",
        "contacts": [f"{c.label + ': ' if c.label else ''}{c.value}" for c in svc.contacts],
        "note": pick(svc.note, locale),
    }


@router.get("/status")
async def show(request: Request, staff: Staff = Depends(need(Role.VIEWER))) -> HTMLResponse:
    office = await _office(request, staff)
    if office is None:
        return web.not_found(request, staff)
    return await _page(request, staff, office)


@router.post("/status")
async def save(request: Request, staff: Staff = Depends(need(Role.EDITOR))) -> Response:
    posted = await web.form(request)
    office = await _office(request, staff)
    if office is None:
        return web.not_found(request, staff)
    values = {name: web.field(posted, name) for name in FIELDS}
    hub = sessions.hub_of(request)
    try:
        async with hub.db.transaction() as session:
            base, _ = await base_of(session, office)
            before = dump(base)
            stored, changed = await set_status(
                session, office, from_form(values, before), f"console:{staff.email}"
            )
            if changed:
                await audit.record(
                    session,
                    staff,
                    "status.set",
                    f"office:{office.id}",
                    {"changed": changed_fields(before, stored)},
                )
    except StatusError as error:
        return await _page(request, staff, office, values, error)
    return web.redirect(request, f"/console/status?kantor={office.id}&ok=saved")
