"""The audit log: who did what in the console, appended and never changed.

``record`` adds a row in the caller's transaction (the record and the change it describes commit
together). No code path in the hub updates or deletes an ``AuditEntry``: the ORM refuses it outright
(``_refuse``), and the console offers only reading and CSV export.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable
from typing import Any

from sqlalchemy import event, select
from sqlalchemy.ext.asyncio import AsyncSession

from hub.clock import utcnow
from hub.console.auth import Staff
from hub.store.models import AuditEntry

PAGE_SIZE = 50


async def record(
    session: AsyncSession,
    staff: Staff | None,
    action: str,
    target: str = "",
    detail: dict[str, Any] | None = None,
    *,
    email: str = "",
    office_id: str | None = None,
) -> None:
    """Append one entry; without ``staff`` (a failed sign-in, the CLI) ``email``/``office_id`` say who."""
    session.add(
        AuditEntry(
            at=utcnow(),
            staff_id=staff.id if staff else None,
            staff_email=(staff.email if staff else email)[:320],
            office_id=staff.office_id if staff else office_id,
            action=action[:64],
            target=target[:200],
            detail=detail or {},
        )
    )


@event.listens_for(AuditEntry, "before_update")
@event.listens_for(AuditEntry, "before_delete")
def _refuse(mapper: Any, connection: Any, target: AuditEntry) -> None:
    raise PermissionError("the audit log is append-only")


async def entries(
    session: AsyncSession, offices: Iterable[str], *, before: int | None = None, limit: int = PAGE_SIZE
) -> list[AuditEntry]:
    """Entries of ``offices``, newest first; ``before`` an id pages back."""
    query = select(AuditEntry).where(AuditEntry.office_id.in_(sorted(offices)))
    if before is not None:
        query = query.where(AuditEntry.id < before)
    return list((await session.execute(query.order_by(AuditEntry.id.desc()).limit(limit))).scalars())


CSV_COLUMNS = ("id", "at_utc", "staff_id", "staff_email", "office_id", "action", "target", "detail")


def csv_rows(rows: Iterable[AuditEntry]) -> Iterable[str]:
    """CSV text, header first; cells that a spreadsheet would run as a formula are quoted with ``'``."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    yield buffer.getvalue()
    for row in rows:
        buffer.seek(0)
        buffer.truncate()
        cells = [
            row.id,
            row.at.isoformat(timespec="seconds"),
            row.staff_id or "",
            row.staff_email,
            row.office_id or "",
            row.action,
            row.target,
            json.dumps(row.detail, ensure_ascii=False, sort_keys=True),
        ]
        writer.writerow([_defuse(str(cell)) for cell in cells])
        yield buffer.getvalue()


def _defuse(cell: str) -> str:
    return "'" + cell if cell[:1] in ("=", "+", "-", "@", "\t", "\r") else cell
