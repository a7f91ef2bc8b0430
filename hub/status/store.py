"""Reading and writing an office's base status, with its history, and the status at a moment.

The base lives in ``office_status`` (one row per office, validated JSON); each change appends the whole
status before and after to ``office_status_history``. ``status_at`` lays the announcements in force over it.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from hub import freshness
from hub.announcements import went_out
from hub.clock import utcnow
from hub.errors import NotFound
from hub.regions import concerns, nearby_offices
from hub.status.effective import Effective
from hub.status.model import OfficeStatusModel, dump, validate_status
from hub.status.overlay import SHAPING, Fact, effective_at
from hub.status.seed import from_profile
from hub.store.models import Announcement, Office, OfficeStatus, OfficeStatusHistory

#: How far back announcements are read to find when the current status began.
LOOKBACK = timedelta(days=15)


async def base_of(session: AsyncSession, office: Office) -> tuple[OfficeStatusModel, OfficeStatus | None]:
    """The office's base status and its row; without a row, what its profile implies (``seed``)."""
    row = await session.get(OfficeStatus, office.id)
    if row is None:
        return validate_status(from_profile(office.profile)), None
    return validate_status(row.status), row


async def facts_of(session: AsyncSession, office: Office, at: datetime) -> list[Fact]:
    """The published structured announcements addressed to the office that may matter around ``at``:
    its own, and those to its topics or a region above it (a province's closure shapes every office in
    the province, ``hub.regions.concerns``).

    Published, or scheduled whose publish time has passed by the moment asked (the reconciler marks them
    published when their message starts; the status does not wait for it); not cancelled; an
    announcement a correction replaces is left out: the correction speaks instead, and cancelling the
    correction withdraws both (as a CAP Cancel of an Update cancels what it references).
    """
    regions, nearby = await nearby_offices(session, office)
    rows = (
        await session.execute(
            select(Announcement).where(
                Announcement.office_id.in_(nearby),
                Announcement.state.in_(("published", "scheduled")),
                Announcement.template.in_(SHAPING),
                or_(Announcement.valid_until.is_(None), Announcement.valid_until > at - LOOKBACK),
            )
        )
    ).scalars()
    anns = [ann for ann in rows if concerns(ann, office, regions)]
    replaced = set(
        (
            await session.execute(
                select(Announcement.corrects_id).where(
                    Announcement.corrects_id.in_([ann.id for ann in anns]),
                    went_out(),
                )
            )
        ).scalars()
    )
    facts = []
    for ann in anns:
        if ann.id in replaced:
            continue
        published = ann.publish_at or ann.approved_at or ann.created_at
        start = ann.valid_from
        if ann.publish_at is not None and (start is None or ann.publish_at > start):
            start = ann.publish_at  # in force only once published
        facts.append(
            Fact(
                id=ann.id,
                template=ann.template,
                data=ann.data or {},
                services=list(ann.services or []),
                start=start,
                end=ann.valid_until,
                order=(published or datetime.min, ann.id),
            )
        )
    return facts


async def status_at(session: AsyncSession, office: Office, at: datetime | None = None) -> Effective:
    """The office's status at ``at`` (naive UTC; now by the hub's clock when not given)."""
    at = at or utcnow()
    base, row = await base_of(session, office)
    facts = await facts_of(session, office, at)
    since = row.updated_at if row is not None and row.updated_at <= at else None
    return effective_at(office.id, office.timezone, base, facts, at, base_since=since)


async def office_or_404(session: AsyncSession, office_id: str) -> Office:
    office = await session.get(Office, office_id)
    if office is None:
        raise NotFound(f"unknown office {office_id!r}")
    return office


async def set_status(
    session: AsyncSession, office: Office, data: Any, by: str, *, at: datetime | None = None
) -> tuple[dict[str, Any], bool]:
    """Validate and store an office's base status, appending history; (stored JSON, changed?).

    Storing the same status again changes nothing and adds no history row (the first store always does:
    it is when the status became the office's own).
    """
    status = dump(validate_status(data))
    row = await session.get(OfficeStatus, office.id)
    # Without a row the office's status was the one its profile implies: that is what changes.
    before = row.status if row is not None else from_profile(office.profile)
    if row is not None and before == status:
        return status, False
    now = at or utcnow()
    if row is None:
        session.add(OfficeStatus(office_id=office.id, status=status, updated_at=now, updated_by=by))
    else:
        row.status, row.updated_at, row.updated_by = status, now, by
    session.add(OfficeStatusHistory(office_id=office.id, at=now, by=by, before=before, after=status))
    await session.flush()
    await freshness.touch(session)
    return status, True


async def history(session: AsyncSession, office_id: str, limit: int = 50) -> list[OfficeStatusHistory]:
    """The latest changes first."""
    rows = await session.execute(
        select(OfficeStatusHistory)
        .where(OfficeStatusHistory.office_id == office_id)
        .order_by(OfficeStatusHistory.id.desc())
        .limit(limit)
    )
    return list(rows.scalars())


def changed_fields(before: dict[str, Any] | None, after: dict[str, Any]) -> list[str]:
    """The top-level parts a change touched (``hours``, ``services``...), for history and audit lines."""
    before = before or {}
    return sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))


async def seed_missing(session: AsyncSession) -> list[str]:
    """Store, for every office without a base status, the one its profile implies (``hub init --sample``)."""
    have = set((await session.execute(select(OfficeStatus.office_id))).scalars())
    offices = (await session.execute(select(Office).order_by(Office.id))).scalars().all()
    seeded = []
    for office in offices:
        if office.id not in have:
            await set_status(session, office, from_profile(office.profile), "seed")
            seeded.append(office.id)
    return seeded
