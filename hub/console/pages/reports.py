"""An announcement's delivery report as CSV (no addresses): counts per channel and state, failures."""

from __future__ import annotations

import csv
import io

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from hub.console import audit, queries
from hub.console.auth import Role, Staff, need
from hub.console.pages.announcements import own

router = APIRouter()


@router.get("/pengumuman/{raw_id}/laporan.csv")
async def report(raw_id: str, request: Request, staff: Staff = Depends(need(Role.VIEWER))) -> Response:
    """Deliveries per channel and state, and failures by reason, as CSV (no addresses)."""
    hub = request.app.state.hub
    ann = await own(request, staff, raw_id)
    _, message = await queries.phase_of(hub, ann)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["announcement", "message", "channel", "state", "count", "reason"])
    if message is not None:
        for channel, state, count in await queries.report_rows(hub, message.id):
            writer.writerow([ann.id, message.id, channel, state, count, ""])
        for failure in (await queries.outcome(hub, message.id, limit=1000))["failures"]:
            writer.writerow(
                [
                    ann.id,
                    message.id,
                    failure["channel"],
                    "failed_or_gone",
                    failure["count"],
                    failure["reason"],
                ]
            )
    async with hub.db.transaction() as session:
        await audit.record(session, staff, "announcement.report", f"announcement:{ann.id}")
    response = Response(out.getvalue(), media_type="text/csv; charset=utf-8")
    response.headers["Content-Disposition"] = f'attachment; filename="pengumuman-{ann.id}.csv"'
    response.headers["Cache-Control"] = "no-store"
    return response
