"""What the console's announcement pages read: the dashboard's pages, one announcement's outcome, audiences.

Every query is bounded by an office subtree (the staff member's ``offices``) and by a page: the dashboard
reads one page of one phase and the progress of that page's messages only, in a fixed number of queries
whatever the number of announcements (no query per row).

An announcement's phase is what staff follow: ``draft``, ``awaiting_approval`` and ``cancelled`` are its
state; once published (or scheduled) its message says ``scheduled``, ``sending`` (being fanned out or
deliveries still pending) or ``done``.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select

from hub import audience
from hub.context import Hub
from hub.delivery.retention import counts_table
from hub.delivery.states import PENDING, STATES, deliveries
from hub.queue import REDIS_DOWN
from hub.store.models import Announcement, Endpoint, Message, Topic

PHASES = ("draft", "awaiting_approval", "scheduled", "sending", "done", "cancelled")
#: Messages announcements make (a correction is an announcement of its own with one message).
ANNOUNCING = ("announcement", "correction")
PAGE_SIZE = 20


@dataclass
class Row:
    """One announcement as the dashboard lists it."""

    id: int
    office_id: str
    template: str
    title: str
    phase: str
    created_at: datetime
    publish_at: datetime | None
    message_id: int | None = None
    #: Per channel: delivery state -> count; and the totals over channels.
    channels: dict[str, dict[str, int]] = field(default_factory=dict)
    totals: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.totals.values())

    @property
    def finished(self) -> int:
        return self.total - sum(self.totals.get(s, 0) for s in (*PENDING, "sending"))

    @property
    def percent(self) -> int:
        return 100 if not self.total else int(100 * self.finished / self.total)


def title_of(template: str, data: dict[str, Any]) -> str:
    """A short Indonesian label for lists: the title or service staff wrote ('': the page names the kind)."""
    for name in ("title", "service", "link_name"):
        value = data.get(name)
        if isinstance(value, dict) and value.get("id"):
            return str(value["id"])[:120]
        if isinstance(value, str) and value:
            return value[:120]
    return ""


def _sending_window(hub: Hub) -> datetime:
    """Older than this a published message has nothing pending any more: retries stop at the horizon."""
    from hub.clock import utcnow

    return utcnow() - timedelta(seconds=hub.settings.queue.retry_horizon_seconds) - timedelta(hours=1)


async def _sending_ids(session: Any, hub: Hub, offices: Iterable[str]) -> set[int]:
    """Announcements of these offices still sending: fanning out, or deliveries pending."""
    recent = (
        await session.execute(
            select(Announcement.id, Message.id, Message.state)
            .join(Message, Message.announcement_id == Announcement.id)
            .where(
                Announcement.office_id.in_(list(offices)),
                Announcement.state.in_(("scheduled", "published")),
                Message.kind.in_(ANNOUNCING),
                Message.state.in_(("planning", "planned")),
                Message.send_at >= _sending_window(hub),
            )
        )
    ).all()
    sending = {ann for ann, _, state in recent if state == "planning"}
    planned = {message: ann for ann, message, state in recent if state == "planned"}
    if planned:
        pending = await session.execute(
            select(deliveries.c.message_id)
            .where(deliveries.c.message_id.in_(list(planned)), deliveries.c.state.in_((*PENDING, "sending")))
            .distinct()
        )
        sending |= {planned[m] for m in pending.scalars()}
    return sending


def _phase_filter(phase: str, sending: set[int]) -> Any:
    """The WHERE clause of a phase, over announcements joined (outer) to their message."""
    published = Announcement.state.in_(("scheduled", "published"))
    if phase in ("draft", "awaiting_approval"):
        return Announcement.state == phase
    if phase == "cancelled":
        return or_(Announcement.state == "cancelled", and_(published, Message.state == "cancelled"))
    if phase == "scheduled":
        return and_(published, Message.state == "scheduled")
    if phase == "sending":
        return Announcement.id.in_(sorted(sending)) if sending else Announcement.id.is_(None)
    if phase == "done":
        done = and_(published, Message.state.in_(("planned", "expired", "planning")))
        return and_(done, Announcement.id.not_in(sorted(sending))) if sending else done
    raise ValueError(f"unknown phase {phase!r}")


def _phase_of_states(announcement_state: str, message_state: str | None) -> str | None:
    """``_phase_filter``'s rule for one (announcement state, message state) pair; sending counted as done."""
    if announcement_state in ("draft", "awaiting_approval", "cancelled"):
        return announcement_state
    if announcement_state not in ("scheduled", "published"):
        return None
    if message_state in ("scheduled", "cancelled"):
        return message_state
    return "done" if message_state in ("planned", "expired", "planning") else None


async def _phase_counts(session: Any, offices: list[str]) -> dict[str, int]:
    """Announcements per phase (the sending ones still in done) in one grouped query, not one per phase."""
    query = (
        _base(offices)
        .with_only_columns(Announcement.state, Message.state, func.count())
        .group_by(Announcement.state, Message.state)
    )
    counts = dict.fromkeys(PHASES, 0)
    for ann_state, message_state, n in (await session.execute(query)).all():
        phase = _phase_of_states(ann_state, message_state)
        if phase is not None:
            counts[phase] += int(n)
    return counts


def _base(offices: Iterable[str]) -> Any:
    return (
        select(Announcement, Message.id, Message.state)
        .outerjoin(Message, and_(Message.announcement_id == Announcement.id, Message.kind.in_(ANNOUNCING)))
        .where(Announcement.office_id.in_(list(offices)))
    )


async def dashboard(
    hub: Hub, offices: Iterable[str], phase: str | None = None, page: int = 1, per_page: int = PAGE_SIZE
) -> dict[str, Any]:
    """Counts per phase and one page of rows per phase asked (all phases' first page when none is)."""
    offices = sorted(offices)
    async with hub.db.session() as session:
        sending = await _sending_ids(session, hub, offices)
        counts = await _phase_counts(session, offices)
        # Done is counted with the sending ones and they are taken off: no long NOT IN to count.
        counts["done"] -= len(sending)
        counts["sending"] = len(sending)
        wanted = [phase] if phase else list(PHASES)
        rows: dict[str, list[Row]] = {}
        for name in wanted:
            size = per_page if phase else min(per_page, 5)
            start = (max(page, 1) - 1) * size
            query = _base(offices).where(_phase_filter(name, sending)).order_by(Announcement.id.desc())
            if name == "sending":  # the page's ids only, newest first
                query = _base(offices).where(
                    Announcement.id.in_(sorted(sending, reverse=True)[start : start + size])
                )
                query = query.order_by(Announcement.id.desc())
            else:
                query = query.limit(size).offset(start)
            result = await session.execute(query)
            rows[name] = [
                Row(
                    ann.id,
                    ann.office_id,
                    ann.template,
                    title_of(ann.template, ann.data),
                    name,
                    ann.created_at,
                    ann.publish_at,
                    message_id,
                )
                for ann, message_id, _ in result.all()
            ]
        await _progress(session, hub, [row for page_rows in rows.values() for row in page_rows])
    return {"counts": counts, "rows": rows, "page": page, "per_page": per_page, "live": bool(sending)}


def _progress_key(hub: Hub, message_id: int) -> str:
    return f"{hub.settings.redis.key_prefix}:console:progress:{message_id}"


async def _progress(session: Any, hub: Hub, rows: list[Row]) -> None:
    """Fill each row's delivery counts per channel and state: two queries for the whole page.

    A finished message's counts (phase done or cancelled: nothing pending) are kept in Redis for
    ``console.count_refresh_seconds``: the newest city-wide send holds 372k rows to group, and only a late
    receipt (sent -> delivered -> read) still changes them. Messages still sending are counted on every view.
    """
    by_message = {row.message_id: row for row in rows if row.message_id is not None}
    if not by_message:
        return
    settled = sorted(m for m, row in by_message.items() if row.phase in ("done", "cancelled"))
    found: list[tuple[int, str, str, int]] = []
    cached: set[int] = set()
    with contextlib.suppress(*REDIS_DOWN):
        if settled and hub.redis is not None:
            values = await hub.redis.mget([_progress_key(hub, m) for m in settled])
            for message_id, value in zip(settled, values, strict=True):
                if value is not None:
                    cached.add(message_id)
                    found += [(message_id, c, s, n) for c, s, n in json.loads(value)]
    ids = [m for m in by_message if m not in cached]
    if ids:
        held = await session.execute(
            select(deliveries.c.message_id, deliveries.c.channel, deliveries.c.state, func.count())
            .where(deliveries.c.message_id.in_(ids))
            .group_by(deliveries.c.message_id, deliveries.c.channel, deliveries.c.state)
        )
        kept = await session.execute(
            select(
                counts_table.c.message_id,
                counts_table.c.channel,
                counts_table.c.state,
                counts_table.c["count"],
            ).where(counts_table.c.message_id.in_(ids))
        )
        counted = [(m, c, s, int(n)) for m, c, s, n in [*held.all(), *kept.all()]]
        found += counted
        keep: dict[int, list[tuple[str, str, int]]] = {m: [] for m in settled if m not in cached}
        for message_id, channel, state, n in counted:
            if message_id in keep:
                keep[message_id].append((channel, state, n))
        with contextlib.suppress(*REDIS_DOWN):
            if keep and hub.redis is not None:
                ttl = hub.settings.console.count_refresh_seconds
                async with hub.redis.pipeline(transaction=False) as pipe:
                    for message_id, parts in keep.items():
                        pipe.set(_progress_key(hub, message_id), json.dumps(parts), ex=ttl)
                    await pipe.execute()
    for message_id, channel, state, count in found:
        row = by_message[message_id]
        row.channels.setdefault(channel, dict.fromkeys(STATES, 0))[state] += int(count)
        row.totals[state] = row.totals.get(state, 0) + int(count)


async def phase_of(hub: Hub, announcement: Announcement) -> tuple[str, Message | None]:
    """One announcement's phase and its message (the dashboard's rule, for one row)."""
    async with hub.db.session() as session:
        message = await session.scalar(
            select(Message).where(Message.announcement_id == announcement.id, Message.kind.in_(ANNOUNCING))
        )
        if announcement.state in ("draft", "awaiting_approval", "cancelled") or message is None:
            return announcement.state, message
        if message.state in ("scheduled", "cancelled"):
            return message.state, message
        if message.state == "planning":
            return "sending", message
        pending = await session.scalar(
            select(deliveries.c.id)
            .where(deliveries.c.message_id == message.id, deliveries.c.state.in_((*PENDING, "sending")))
            .limit(1)
        )
    return ("sending" if pending else "done"), message


async def outcome(hub: Hub, message_id: int, limit: int = 50) -> dict[str, Any]:
    """Failures grouped by reason, and the endpoints found gone (masked), for the detail page."""
    from hub.privacy import mask

    async with hub.db.session() as session:
        reasons = (
            await session.execute(
                select(deliveries.c.channel, deliveries.c.error, func.count())
                .where(deliveries.c.message_id == message_id, deliveries.c.state.in_(("failed", "gone")))
                .group_by(deliveries.c.channel, deliveries.c.error)
                .order_by(func.count().desc())
                .limit(limit)
            )
        ).all()
        gone = (
            await session.execute(
                select(Endpoint.channel, Endpoint.address, Endpoint.deactivated_reason)
                .join(deliveries, deliveries.c.endpoint_id == Endpoint.id)
                .where(deliveries.c.message_id == message_id, deliveries.c.state == "gone")
                .order_by(Endpoint.id)
                .limit(limit)
            )
        ).all()
    return {
        "failures": [
            {"channel": channel, "reason": error or "-", "count": int(n)} for channel, error, n in reasons
        ],
        "gone": [
            {"channel": channel, "address": mask(address, hub.channels.get(channel)), "reason": reason or "-"}
            for channel, address, reason in gone
        ],
    }


async def report_rows(hub: Hub, message_id: int) -> list[tuple[str, str, int]]:
    """``(channel, state, count)`` of one message, held rows and kept counts, for the CSV report."""
    async with hub.db.session() as session:
        held = (
            await session.execute(
                select(deliveries.c.channel, deliveries.c.state, func.count())
                .where(deliveries.c.message_id == message_id)
                .group_by(deliveries.c.channel, deliveries.c.state)
            )
        ).all()
        kept = (
            await session.execute(
                select(counts_table.c.channel, counts_table.c.state, counts_table.c["count"]).where(
                    counts_table.c.message_id == message_id
                )
            )
        ).all()
    merged: dict[tuple[str, str], int] = {}
    for channel, state, n in [*held, *kept]:
        merged[(channel, state)] = merged.get((channel, state), 0) + int(n)
    return [(channel, state, n) for (channel, state), n in sorted(merged.items())]


async def region_counts(hub: Hub, codes: Iterable[str]) -> dict[str, dict[str, int]]:
    """Recipients per region and channel, as the reconciler last counted them (``hub.audience``)."""
    await audience.ensure(hub)
    found = await audience.stored(hub, "region", codes)
    return {code: audience.per_channel(counts) for code, counts in found.items()}


async def targets(hub: Hub, offices: Iterable[str]) -> dict[str, Any]:
    """The topics of the subtree's offices and the regions of those offices, for the composer's choices."""
    from hub.store.models import Office, Region

    offices = sorted(offices)
    async with hub.db.session() as session:
        topics = (
            await session.execute(
                select(Topic.slug, Topic.name, Topic.office_id, Topic.service)
                .where(Topic.office_id.in_(offices))
                .order_by(Topic.office_id, Topic.service.is_not(None), Topic.slug)
            )
        ).all()
        regions = (
            await session.execute(
                select(Region.code, Region.name)
                .join(Office, Office.region_code == Region.code)
                .where(Office.id.in_(offices))
                .distinct()
                .order_by(Region.code)
            )
        ).all()
    return {
        "topics": [{"slug": s, "name": n, "office_id": o, "service": sv} for s, n, o, sv in topics],
        "regions": [{"code": c, "name": n} for c, n in regions],
    }


async def topic_counts(hub: Hub, offices: Iterable[str]) -> tuple[dict[str, dict[str, int]], datetime]:
    """Confirmed, active endpoints per topic slug and channel as last counted, and when (``hub.audience``)."""
    return await audience.topic_counts(hub, offices)
