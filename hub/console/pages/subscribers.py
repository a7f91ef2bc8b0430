"""Subscribers (viewer+): counts per topic and channel over the subtree, one topic's subscribers masked.

The list pages by keyset (``?setelah=<endpoint id>``) along the index on (topic, state, endpoint): each page
is one index range and one join by primary key, however many subscribers there are; no OFFSET, no query per
row. Addresses are masked by their channel's adapter (``hub.privacy.mask``); nothing shows one in full.

The counts are the reconciler's (``hub.audience``, the ``audience_counts`` table, at most
``console.count_refresh_seconds`` old plus one count's run; an import counts again at once): the page reads
them and says when they were counted, instead of grouping every confirmed subscription of the subtree.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse
from sqlalchemy import select

from hub.console import queries, sessions, web
from hub.console.auth import Role, Staff, need
from hub.privacy import mask
from hub.store.models import Endpoint, Subscription, Topic

router = APIRouter()
VIEWER = need(Role.VIEWER)
PAGE_SIZE = 50
STATES = ("confirmed", "pending", "unsubscribed")


@dataclass(frozen=True)
class Listed:
    """One subscriber as the page shows it: never the address itself."""

    endpoint_id: int
    channel: str
    masked: str
    kind: str
    active: bool
    since: datetime


async def topics_of(request: Request, staff: Staff) -> list[Topic]:
    """The subtree's topics, the user's own office first, each office's general topic before its services."""
    async with sessions.hub_of(request).db.session() as session:
        rows = list(
            (
                await session.execute(
                    select(Topic)
                    .where(Topic.office_id.in_(sorted(staff.offices)))
                    .order_by(
                        Topic.office_id != staff.office_id,
                        Topic.office_id,
                        Topic.service.is_not(None),
                        Topic.slug,
                    )
                )
            ).scalars()
        )
    return rows


def _after(request: Request) -> int:
    raw = request.query_params.get("setelah", "")
    return int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= 18 else 0


async def page_of(request: Request, topic_id: int, state: str, after: int) -> tuple[list[Listed], int | None]:
    """One page of a topic's subscribers in ``state`` after endpoint ``after``, and the next page's cursor."""
    hub = sessions.hub_of(request)
    async with hub.db.session() as session:
        rows = (
            await session.execute(
                select(
                    Endpoint.id,
                    Endpoint.channel,
                    Endpoint.address,
                    Endpoint.kind,
                    Endpoint.active,
                    Subscription.created_at,
                )
                .join(Endpoint, Endpoint.id == Subscription.endpoint_id)
                .where(Subscription.topic_id == topic_id, Subscription.state == state)
                # Both sides of the join start at the cursor: PostgreSQL's merge join otherwise walks
                # the endpoints' key from the first row (140 ms at 900,000 instead of 0.1 ms).
                .where(Subscription.endpoint_id > after, Endpoint.id > after)
                .order_by(Subscription.endpoint_id)
                .limit(PAGE_SIZE + 1)
            )
        ).all()
    listed = [
        Listed(eid, channel, mask(address, hub.channels.get(channel)), kind, active, since)
        for eid, channel, address, kind, active, since in rows[:PAGE_SIZE]
    ]
    more = listed[-1].endpoint_id if len(rows) > PAGE_SIZE else None
    return listed, more


@router.get("/pelanggan")
async def subscribers(request: Request, staff: Staff = Depends(VIEWER)) -> HTMLResponse:
    hub = sessions.hub_of(request)
    topics = await topics_of(request, staff)
    wanted = request.query_params.get("topik", "")
    chosen = (
        next((t for t in topics if t.slug == wanted), None) if wanted else (topics[0] if topics else None)
    )
    if wanted and chosen is None:  # unknown, or another office's topic: the same page
        return web.not_found(request, staff)
    state = request.query_params.get("status", "confirmed")
    if state not in STATES:
        state = "confirmed"
    counts, counted_at = await queries.topic_counts(hub, staff.offices)
    channels = sorted({*hub.channels, *(c for per in counts.values() for c in per)})
    listed, more = await page_of(request, chosen.id, state, _after(request)) if chosen else ([], None)
    return web.page(
        request,
        "subscribers/list.html.j2",
        staff,
        topics=topics,
        counts=counts,
        counted_at=counted_at,
        channels=channels,
        chosen=chosen,
        state=state,
        states=STATES,
        rows=listed,
        more=more,
        paged=_after(request) > 0,
    )
