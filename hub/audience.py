"""Audience counts kept in ``audience_counts``: counted by the reconciler, read by the console's pages.

Counting who a province's announcement reaches is a DISTINCT over every confirmed subscription below it
(820k rows for Banten: seconds on either database), too slow for a page view. The reconciler counts every
topic, office and region in three set-based statements at most every ``console.count_refresh_seconds``,
and only when subscriptions or endpoints changed since (or the last count is ``MAX_AGE_FACTOR`` intervals
old: a subscriber's language change leaves no trace to compare), and replaces the rows in one transaction.
Pages read the rows and say when they were counted; a hub with no count yet counts once, at once.

Publishing and the two-person rule do not read these: the planner and ``hub.approvals`` count for real.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from hub.clock import utcnow
from hub.context import Hub
from hub.logs import log
from hub.queue import REDIS_DOWN
from hub.store.models import AudienceCount, Endpoint, Office, Region, Subscriber, Subscription, Topic

#: A count is redone after this many intervals even when nothing seen changed.
MAX_AGE_FACTOR = 10
#: The row that says "counted" even when nothing is subscribed (an empty hub does not count per view).
MARK = ("hub", "-", "-", "-")

Row = tuple[str, str, str, str, int]
table = AudienceCount.__table__


def _joined(*columns: Any) -> Any:
    """Confirmed subscriptions of active endpoints, with their topic and subscriber (for the language)."""
    return (
        select(*columns)
        .select_from(Subscription)
        .join(Topic, Topic.id == Subscription.topic_id)
        .join(Endpoint, Endpoint.id == Subscription.endpoint_id)
        .join(Subscriber, Subscriber.id == Endpoint.subscriber_id)
        .where(Subscription.state == "confirmed", Endpoint.active)
    )


def _region_office_pairs(*columns: Any) -> Any:
    """``(region, office)``: every region with an office at or below it (offices times tree depth rows)."""
    below = aliased(Region)
    return (
        select(*columns)
        .select_from(Office)
        .join(below, below.code == Office.region_code)
        .join(Region, below.path.startswith(Region.path))
    )


async def region_offices(session: AsyncSession) -> dict[str, set[str]]:
    """Every region with an office at or below it, and those offices."""
    rows = await session.execute(_region_office_pairs(Region.code, Office.id))
    out: dict[str, set[str]] = {}
    for code, office in rows.all():
        out.setdefault(code, set()).add(office)
    return out


async def count_all(session: AsyncSession) -> list[Row]:
    """``(scope, scope_id, channel, locale, count)`` of every topic, office and region, counted now."""
    out: list[Row] = []
    per_topic = _joined(Topic.slug, Endpoint.channel, Subscriber.locale, func.count()).group_by(
        Topic.slug, Endpoint.channel, Subscriber.locale
    )
    out += [("topic", s, c, loc, int(n)) for s, c, loc, n in (await session.execute(per_topic)).all()]
    distinct = func.count(Endpoint.id.distinct())
    per_office = _joined(Topic.office_id, Endpoint.channel, Subscriber.locale, distinct).group_by(
        Topic.office_id, Endpoint.channel, Subscriber.locale
    )
    offices: dict[str, list[tuple[str, str, int]]] = {}
    for office, channel, locale, n in (await session.execute(per_office)).all():
        offices.setdefault(office, []).append((channel, locale, int(n)))
        out.append(("office", office, channel, locale, int(n)))
    regions = await region_offices(session)
    # A region with one office below it has that office's audience; only the others need a DISTINCT.
    for code, under in sorted(regions.items()):
        if len(under) == 1:
            out += [("region", code, c, loc, n) for c, loc, n in offices.get(next(iter(under)), [])]
    if any(len(under) > 1 for under in regions.values()):
        # The (region, office) pairs of regions with several offices, joined in the database: one statement
        # whatever the number of offices (literal rows, one UNION ALL term each, broke SQLite's 500 terms).
        # MATERIALIZED: the pairs are built once (a prefix match per office), not once per subscription.
        pairs = (
            _region_office_pairs(Region.code.label("code"), Office.id.label("office_id"))
            .cte("region_offices")
            .prefix_with("MATERIALIZED")
        )
        shared = select(pairs.c.code).group_by(pairs.c.code).having(func.count() > 1)
        per_region = (
            _joined(pairs.c.code, Endpoint.channel, Subscriber.locale, distinct)
            .join(pairs, pairs.c.office_id == Topic.office_id)
            .where(pairs.c.code.in_(shared))
            .group_by(pairs.c.code, Endpoint.channel, Subscriber.locale)
        )
        out += [("region", r, c, loc, int(n)) for r, c, loc, n in (await session.execute(per_region)).all()]
    return out


async def refresh(hub: Hub) -> int:
    """Count everything now and replace the stored rows in one transaction; the number of rows."""
    async with hub.db.session() as session:
        rows = await count_all(session)
    now = utcnow()
    records = [
        {"scope": s, "scope_id": i, "channel": c, "locale": loc, "count": n, "counted_at": now}
        for s, i, c, loc, n in [*rows, (*MARK, 0)]
    ]
    async with hub.db.transaction() as session:
        await session.execute(delete(table))
        for start in range(0, len(records), 1000):
            insert = hub.db.insert(table).values(records[start : start + 1000])
            # Two first views of a fresh hub may count at once: the later one's figures win.
            await session.execute(
                insert.on_conflict_do_update(
                    index_elements=["scope", "scope_id", "channel", "locale"],
                    set_={"count": insert.excluded["count"], "counted_at": insert.excluded.counted_at},
                )
            )
    return len(records)


async def _fingerprint(hub: Hub) -> str:
    """What a change to the audience leaves behind: row counts and the latest change of both tables."""
    async with hub.db.session() as session:
        row = (
            await session.execute(
                select(
                    select(func.count()).select_from(Subscription).scalar_subquery(),
                    select(func.max(Subscription.state_changed_at)).scalar_subquery(),
                    select(func.count()).select_from(Endpoint).scalar_subquery(),
                    select(func.max(Endpoint.state_changed_at)).scalar_subquery(),
                )
            )
        ).one()
    return "|".join(str(v) for v in row)


async def counted_at(hub: Hub) -> datetime | None:
    """When the stored counts were made (None: never)."""
    async with hub.db.session() as session:
        return await session.scalar(
            select(table.c.counted_at).where(
                table.c.scope == MARK[0], table.c.scope_id == MARK[1], table.c.channel == MARK[2]
            )
        )


async def refresh_if_due(hub: Hub) -> bool:
    """The reconciler's step: count again when the interval passed and something changed; True if it did."""
    every = hub.settings.console.count_refresh_seconds
    prefix = hub.settings.redis.key_prefix
    last = await counted_at(hub)
    if last is not None and utcnow() - last < timedelta(seconds=every):
        return False
    remembered = None
    with contextlib.suppress(*REDIS_DOWN):  # no Redis: the interval alone decides
        if hub.redis is not None:
            # One look per interval for the whole hub, whatever the number of workers.
            if not await hub.redis.set(f"{prefix}:audience:due", "1", nx=True, ex=every):
                return False
            remembered = await hub.redis.get(f"{prefix}:audience:seen")
    seen = await _fingerprint(hub)
    old = remembered.decode() if isinstance(remembered, bytes) else remembered
    too_old = last is None or utcnow() - last >= timedelta(seconds=every * MAX_AGE_FACTOR)
    if old == seen and not too_old:
        return False
    rows = await refresh(hub)
    with contextlib.suppress(*REDIS_DOWN):
        if hub.redis is not None:
            await hub.redis.set(f"{prefix}:audience:seen", seen, ex=every * MAX_AGE_FACTOR)
    log.info("audience_counted", rows=rows)
    return True


async def ensure(hub: Hub) -> datetime:
    """When the stored counts were made; a hub that never counted counts now (a fresh install is right)."""
    at = await counted_at(hub)
    if at is None:
        await refresh(hub)
        at = await counted_at(hub)
    return at or utcnow()


# -- reading --------------------------------------------------------------------------------------------


async def stored(hub: Hub, scope: str, ids: Iterable[str]) -> dict[str, dict[tuple[str, str], int]]:
    """Per scope id: ``(channel, locale) -> count`` as last counted (ids never counted are absent)."""
    wanted = sorted(set(ids))
    if not wanted:
        return {}
    async with hub.db.session() as session:
        rows = await session.execute(
            select(table.c.scope_id, table.c.channel, table.c.locale, table.c["count"]).where(
                table.c.scope == scope, table.c.scope_id.in_(wanted)
            )
        )
        out: dict[str, dict[tuple[str, str], int]] = {}
        for scope_id, channel, locale, n in rows.all():
            out.setdefault(scope_id, {})[(channel, locale)] = int(n)
    return out


def per_channel(counts: dict[tuple[str, str], int]) -> dict[str, int]:
    out: dict[str, int] = {}
    for (channel, _), n in counts.items():
        out[channel] = out.get(channel, 0) + n
    return out


async def topic_counts(hub: Hub, offices: Iterable[str]) -> tuple[dict[str, dict[str, int]], datetime]:
    """Per topic slug of these offices: channel -> confirmed, active endpoints; and when counted."""
    at = await ensure(hub)
    async with hub.db.session() as session:
        rows = await session.execute(
            select(table.c.scope_id, table.c.channel, func.sum(table.c["count"]))
            .join(Topic, Topic.slug == table.c.scope_id)
            .where(table.c.scope == "topic", Topic.office_id.in_(sorted(offices)))
            .group_by(table.c.scope_id, table.c.channel)
        )
        out: dict[str, dict[str, int]] = {}
        for slug, channel, n in rows.all():
            out.setdefault(slug, {})[channel] = int(n)
    return out, at


@dataclass
class Estimate:
    """A selection's recipients from the stored counts.

    ``exact``: the selection is one stored scope (one region, or one office's topics); otherwise
    ``counts`` adds up ``parts`` (an endpoint in two parts is counted twice): at most this many.
    """

    counts: dict[tuple[str, str], int]
    exact: bool
    counted_at: datetime
    parts: list[tuple[str, str, dict[str, int]]] = field(default_factory=list)


async def estimate(hub: Hub, regions: list[str], topic_ids: list[int]) -> Estimate:
    """The stored counts of a resolved selection (``announcements.resolve_topics``' topic ids)."""
    at = await ensure(hub)
    async with hub.db.session() as session:
        chosen = (
            await session.execute(select(Topic.slug, Topic.office_id).where(Topic.id.in_(topic_ids)))
        ).all()
        offices = sorted({office for _, office in chosen})
        every = await session.scalar(
            select(func.count()).select_from(Topic).where(Topic.office_id.in_(offices))
        )
        under = await region_offices(session) if regions else {}
    whole = every == len(chosen)  # every topic of these offices: an office's or a region's audience
    if whole and len(regions) == 1 and under.get(regions[0], set()) == set(offices):
        scope, ids = "region", [regions[0]]
    elif whole:
        scope, ids = "office", offices
    else:
        scope, ids = "topic", sorted(slug for slug, _ in chosen)
    found = await stored(hub, scope, ids)
    total: dict[tuple[str, str], int] = {}
    for counts in found.values():
        for key, n in counts.items():
            total[key] = total.get(key, 0) + n
    parts = [(scope, i, per_channel(found.get(i, {}))) for i in ids]
    return Estimate(total, exact=len(ids) == 1, counted_at=at, parts=parts)
