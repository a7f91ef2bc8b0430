"""The audit log for admins: their subtree's entries, newest first, fifty a page, and a CSV export."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response, StreamingResponse
from sqlalchemy import select

from hub.clock import utcnow
from hub.console import audit, sessions, web
from hub.console.auth import Role, Staff, need
from hub.store.models import AuditEntry

router = APIRouter()
ADMIN = need(Role.ADMIN)
#: The export streams at most this many rows (newest first); older ones are there to page to.
EXPORT_LIMIT = 100_000


def _before(request: Request) -> int | None:
    raw = request.query_params.get("sebelum", "")
    return int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= 18 else None


@router.get("/audit")
async def audit_log(request: Request, staff: Staff = Depends(ADMIN)) -> HTMLResponse:
    before = _before(request)
    async with sessions.hub_of(request).db.session() as session:
        rows = await audit.entries(session, staff.offices, before=before, limit=audit.PAGE_SIZE + 1)
    older = rows[audit.PAGE_SIZE - 1].id if len(rows) > audit.PAGE_SIZE else None
    return web.page(
        request, "audit.html.j2", staff, rows=rows[: audit.PAGE_SIZE], older=older, paged=before is not None
    )


@router.get("/audit.csv")
async def audit_csv(request: Request, staff: Staff = Depends(ADMIN)) -> Response:
    hub = sessions.hub_of(request)
    async with hub.db.transaction() as session:
        rows = list(
            (
                await session.execute(
                    select(AuditEntry)
                    .where(AuditEntry.office_id.in_(sorted(staff.offices)))
                    .order_by(AuditEntry.id.desc())
                    .limit(EXPORT_LIMIT)
                )
            ).scalars()
        )
        await audit.record(session, staff, "audit.export", detail={"rows": len(rows)})
    name = f"audit-{staff.office_id}-{utcnow():%Y%m%d-%H%M}.csv"
    return StreamingResponse(
        audit.csv_rows(rows),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}"', "Cache-Control": "no-store"},
    )
