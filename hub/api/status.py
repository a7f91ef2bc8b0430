"""Office status over the API (issue 11): read the status in force, replace the base, read its history.

Staff keys act within their office's subtree like the other routes: an office outside it answers 403, an
unknown one 404. A replacement is validated whole (the error names the field), kept in the status's
history and in the audit log.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, HTTPException, Path, Query, Response

from hub.api.deps import HubDep, StaffKey, refuse_bad_text
from hub.api.errors import KEYED, documented
from hub.clock import local_iso, to_utc, utcnow
from hub.context import Hub
from hub.regions import office_in_scope
from hub.status.model import dump
from hub.status.store import base_of, changed_fields, history, office_or_404, set_status, status_at
from hub.store.models import ApiKey, Office

router = APIRouter(dependencies=[Depends(refuse_bad_text)], tags=["status"])
OfficeId = Annotated[
    str, Path(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9-]*$", description="An office id")
]
Lang = Annotated[str, Query(pattern="^(id|en)$", description="Language of the texts: id or en")]

#: The same bounds as hub.api.app's times: beyond them a time cannot be converted.
EARLIEST, LATEST = datetime(1970, 1, 2), datetime(9998, 12, 30)


async def _office(hub: Hub, key: ApiKey, office_id: str) -> Office:
    async with hub.db.session() as session:
        office = await office_or_404(session, office_id)
        if not await office_in_scope(session, key.office_id, office_id):
            raise HTTPException(403, f"office {office_id} is outside this key's office")
        return office


def _moment(at: datetime | None, tz: str) -> datetime:
    if at is None:
        return utcnow()
    if not EARLIEST <= at.replace(tzinfo=None) <= LATEST:
        raise HTTPException(422, "query.at: must fall between 1970-01-01 and 9998-12-31")
    return to_utc(at, tz)


@router.get("/v1/offices/{office}/status", responses=documented(*KEYED, 404))
async def get_status(
    office: OfficeId,
    hub: HubDep,
    key: StaffKey,
    response: Response,
    at: Annotated[
        datetime | None, Query(description="The moment (ISO 8601; without an offset, the office's zone)")
    ] = None,
    lang: Lang = "id",
) -> dict[str, Any]:
    """The status in force (now, or ``at``): the base with the announcements in force laid over it, plus
    the base itself under ``base`` (what ``PUT`` takes). ``ETag`` is the status's version."""
    row = await _office(hub, key, office)
    async with hub.db.session() as session:
        eff = await status_at(session, row, _moment(at, row.timezone))
        base, _ = await base_of(session, row)
    response.headers["ETag"] = f'"{eff.version}"'
    return {**eff.as_dict(lang), "base": dump(base)}


@router.put("/v1/offices/{office}/status", responses=documented(*KEYED, 404))
async def put_status(
    office: OfficeId,
    hub: HubDep,
    key: StaffKey,
    body: Annotated[
        dict[str, Any],
        Body(description="The whole base status, as GET returns it under `base` (see docs/design.md)"),
    ],
    lang: Lang = "id",
) -> dict[str, Any]:
    """Replace the office's base status. Refused (422, naming the field) when it contradicts itself:
    hours outside the day or ending before they start, a quota below zero, an unknown day, an exception
    for a service the office does not offer. The same status again changes nothing (``changed``: false)."""
    row = await _office(hub, key, office)
    from hub.console import audit

    async with hub.db.transaction() as session:
        before, _ = await base_of(session, row)
        stored, changed = await set_status(session, row, body, f"api-key:{key.prefix}")
        if changed:
            await audit.record(
                session,
                None,
                "status.set",
                f"office:{office}",
                {"api_key": key.id, "changed": changed_fields(dump(before), stored)},
                email=f"api-key:{key.prefix}",
                office_id=office,
            )
    async with hub.db.session() as session:
        eff = await status_at(session, row)
    return {**eff.as_dict(lang), "base": stored, "changed": changed}


@router.get("/v1/offices/{office}/status/history", responses=documented(*KEYED, 404))
async def status_history(
    office: OfficeId,
    hub: HubDep,
    key: StaffKey,
    limit: Annotated[int, Query(ge=1, le=200, description="How many changes, newest first")] = 50,
) -> dict[str, Any]:
    """Who changed the base status, when (office's zone), which parts, the whole status before and after."""
    row = await _office(hub, key, office)
    async with hub.db.session() as session:
        rows = await history(session, office, limit)
    return {
        "items": [
            {
                "id": r.id,
                "at": local_iso(r.at, row.timezone),
                "by": r.by,
                "changed": changed_fields(r.before, r.after),
                "before": r.before,
                "after": r.after,
            }
            for r in rows
        ]
    }
