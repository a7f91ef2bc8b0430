"""Applicant cases (viewer+): find one of the user's offices' cases by reference, see its update timeline.

A reference of another office answers exactly as an unknown one (the same page, the same status). The
page never shows the PIN or the deep-link code (only their hashes are stored) and masks every contact
through its channel's adapter. Opening a case is recorded in the audit log: it is a citizen's record.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import select

from hub.console import audit, sessions, web
from hub.console.auth import Role, Staff, need
from hub.privacy import mask
from hub.store.models import ApplicantCase, CaseEndpoint, CaseUpdate, Endpoint

router = APIRouter()
VIEWER = need(Role.VIEWER)
#: The update's fields staff read on the timeline (the receipt's secrets are never among them).
DETAIL_FIELDS = ("missing_documents", "pickup_place", "pickup_hours", "reason", "note")


@router.get("/kasus")
async def find(request: Request, staff: Staff = Depends(VIEWER)) -> Response:
    reference = request.query_params.get("referensi", "").strip()[:64]
    if not reference:
        return web.page(request, "cases/find.html.j2", staff, reference="", found=[], missing=False)
    async with sessions.hub_of(request).db.session() as session:
        found = list(
            (
                await session.execute(
                    select(
                        ApplicantCase.id,
                        ApplicantCase.office_id,
                        ApplicantCase.document,
                        ApplicantCase.status,
                    )
                    .where(
                        ApplicantCase.reference == reference,
                        ApplicantCase.office_id.in_(sorted(staff.offices)),
                    )
                    .order_by(ApplicantCase.office_id)
                )
            ).all()
        )
    if len(found) == 1:
        return web.redirect(request, f"/console/kasus/{found[0].id}")
    return web.page(
        request,
        "cases/find.html.j2",
        staff,
        status_code=200 if found else 404,
        reference=reference,
        found=found,
        missing=not found,
    )


@router.get("/kasus/{case_id}")
async def case(case_id: str, request: Request, staff: Staff = Depends(VIEWER)) -> HTMLResponse:
    if not case_id.isascii() or not case_id.isdigit() or len(case_id) > 18:
        return web.not_found(request, staff)
    hub = sessions.hub_of(request)
    async with hub.db.transaction() as session:
        row = await session.get(ApplicantCase, int(case_id))
        if row is None or row.office_id not in staff.offices:
            return web.not_found(request, staff)
        updates = list(
            (
                await session.execute(
                    select(CaseUpdate)
                    .where(CaseUpdate.case_id == row.id)
                    .order_by(CaseUpdate.created_at, CaseUpdate.id)
                )
            ).scalars()
        )
        contacts = (
            await session.execute(
                select(Endpoint.channel, Endpoint.address, Endpoint.active)
                .join(CaseEndpoint, CaseEndpoint.endpoint_id == Endpoint.id)
                .where(CaseEndpoint.case_id == row.id)
                .order_by(Endpoint.id)
            )
        ).all()
        await audit.record(session, staff, "case.view", f"case:{row.id}", {"office": row.office_id})
    masked = [
        (channel, mask(address, hub.channels.get(channel)), active) for channel, address, active in contacts
    ]
    timeline = [
        (update, [(name, update.detail[name]) for name in DETAIL_FIELDS if update.detail.get(name)])
        for update in updates
    ]
    return web.page(request, "cases/case.html.j2", staff, case=row, timeline=timeline, contacts=masked)
