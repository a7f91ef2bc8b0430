"""Fan-out: keyset pages of endpoints into delivery rows; memory stays flat whatever the audience."""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import (
    BigInteger,
    DateTime,
    Integer,
    cast,
    column,
    func,
    literal,
    select,
    true,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.types import ARRAY

from hub import freshness
from hub.clock import utcnow
from hub.context import Hub
from hub.store.models import (
    Announcement,
    Delivery,
    Endpoint,
    Message,
    MessageEndpoint,
    MessageTopic,
    Subscription,
)

#: A plan job that arq runs this little ahead of the send time (it keeps milliseconds only) waits for it.
EARLY_GRACE = timedelta(seconds=2)


@dataclass
class PlannedChunk:
    batches: list[tuple[str, list[int]]]
    done: bool
    inserted: int
    lane: str = "bulk"


async def start_if_due(hub: Hub, message_id: int) -> None:
    """Move a scheduled message to ``planning`` once its time has come; the plan job starts it on time.

    The move is one conditional UPDATE, so the reconciler and this job never both start a message. A job
    that arq runs a moment early (it rounds the time to milliseconds) waits for the send time.
    """
    table = Message.__table__
    async with hub.db.session() as session:
        send_at = await session.scalar(
            select(table.c.send_at).where(table.c.id == message_id, table.c.state == "scheduled")
        )
    if send_at is None:
        return
    ahead = (send_at - utcnow()).total_seconds()
    if ahead > EARLY_GRACE.total_seconds():
        return  # moved later: the job queued for the new time (or the reconciler) starts it
    if ahead > 0:
        await asyncio.sleep(ahead)
    async with hub.db.transaction() as session:
        started = await session.execute(
            update(table)
            .where(table.c.id == message_id, table.c.state == "scheduled", table.c.send_at <= utcnow())
            .values(state="planning")
            .returning(table.c.announcement_id)
        )
        await publish_started(session, started.scalars())


async def publish_started(session: Any, announcement_ids: Iterable[int | None]) -> None:
    """Scheduled announcements whose message just started are ``published``, in the message's transaction.

    Only a ``scheduled`` one moves: one cancelled meanwhile stays cancelled.
    """
    ids = sorted({i for i in announcement_ids if i is not None})
    if ids:
        await session.execute(
            update(Announcement)
            .where(Announcement.id.in_(ids), Announcement.state == "scheduled")
            .values(state="published")
        )
        await freshness.touch(session)


async def plan_and_enqueue(hub: Hub, message_id: int) -> int:
    """Plan a message page by page (the ``plan_message`` job); returns how many deliveries were made.

    Each page's send jobs go to Redis while the next page is planned: on PostgreSQL the two wait on
    different servers, and one after the other added the enqueue's 2-2.5 s to a million deliveries (on
    SQLite both are this process's CPU and little is gained). A page is enqueued only after
    its transaction committed, and before the next page's enqueue starts; a page whose enqueue never
    happens (a crash, Redis gone) is queued again by the reconciler, as it always was.
    """
    total = 0
    enqueue: asyncio.Task[None] | None = None
    try:
        while True:
            chunk = await plan_chunk(hub, message_id, hub.channels)
            if enqueue is not None:
                await enqueue
                enqueue = None
            if chunk.batches:
                enqueue = asyncio.create_task(hub.queue.send_many(chunk.lane, chunk.batches))
            total += chunk.inserted
            if chunk.done:
                break
        if enqueue is not None:
            await enqueue
    finally:
        if enqueue is not None and not enqueue.done():
            enqueue.cancel()
    return total


async def plan_chunk(hub: Hub, message_id: int, enabled: Iterable[str]) -> PlannedChunk:
    """Insert the next page of deliveries for a message; safe to repeat (no row is made twice).

    A scheduled message whose time has come is started here (``start_if_due``), not left for the
    reconciler's next tick; a message already planning skips that read. On PostgreSQL a page goes in
    with a plain ``INSERT``: ``ON CONFLICT DO NOTHING`` costs a speculative insertion per row (about a
    third more time for a million rows). A row of the page can only exist already when a fallback made
    it meanwhile (``hub.delivery.fallback``); the unique constraint then rolls the page back, and it is
    done again skipping the rows that exist.
    """
    channels = set(enabled)
    planned = await _plan_page(hub, message_id, channels)
    if planned is None:  # still scheduled
        await start_if_due(hub, message_id)
        planned = await _plan_page(hub, message_id, channels)
    return planned or PlannedChunk([], True, 0)


async def _plan_page(hub: Hub, message_id: int, enabled: set[str]) -> PlannedChunk | None:
    if hub.db.dialect != "postgresql":  # SQLite's ON CONFLICT DO NOTHING costs nothing per row
        return await _page_in_transaction(hub, message_id, enabled, skip_existing=True)
    try:
        return await _page_in_transaction(hub, message_id, enabled, skip_existing=False)
    except IntegrityError:
        return await _page_in_transaction(hub, message_id, enabled, skip_existing=True)


async def _page_in_transaction(
    hub: Hub, message_id: int, enabled: set[str], *, skip_existing: bool
) -> PlannedChunk | None:
    """One page in one transaction: its rows and the message's cursor move together. None: scheduled."""
    chunk = hub.settings.queue.plan_chunk
    async with hub.db.transaction() as session:
        message = await session.get(Message, message_id, with_for_update=hub.db.dialect == "postgresql")
        if message is not None and message.state == "scheduled":
            return None
        if message is None or message.state != "planning":
            return PlannedChunk([], True, 0)
        now = utcnow()
        if message.not_after is not None and message.not_after <= now:
            message.state = "expired"
            return PlannedChunk([], True, 0)
        page = await _page(session, message, chunk)
        if page.last is None:
            message.state = "planned"
            message.planned_at = now
            return PlannedChunk([], True, 0)
        created: dict[str, list[int]] = {}
        if page.rows:
            window = (message.plan_cursor, page.last)
            insert = _Insert(hub.db.dialect, message, window, enabled, now, skip_existing)
            created = await insert.run(session, page.rows)
        message.plan_cursor = page.last
        message.plan_touched_at = now
        lane = message.lane
        done = not page.full
        if done:
            message.state = "planned"
            message.planned_at = now
    inserted = sum(len(ids) for ids in created.values())
    return PlannedChunk(_batches(hub, created), done, inserted, lane)


@dataclass
class _Page:
    """One page of the audience after the cursor: who (endpoint, topic) and where the cursor goes."""

    rows: list[tuple[int, int | None]]
    #: The cursor after this page (the last endpoint id looked at); None: nothing is left.
    last: int | None
    #: There may be more after this page.
    full: bool


#: A window that finds fewer than chunk / SPARSE recipients makes the next one SPARSE times wider.
SPARSE = 4


async def _page(session: Any, message: Message, chunk: int) -> _Page:
    """The next recipients after the cursor (about ``chunk``), by windows of endpoint ids.

    Each statement asks one table for the rows of one window of endpoint ids (``_window``), and
    ``_insert`` reads endpoints by primary key, so whatever plan the database picks reads one window,
    never the rest of the table: right after a bulk import, before any ``ANALYZE``, PostgreSQL picks
    plans by guesses, and a walk written as ``ORDER BY endpoint_id LIMIT chunk`` was planned as "fetch
    every remaining row of the topic, sort, keep 2,000" (960,000 rows read for one page of a 1M
    broadcast: 244 ms instead of under 1 ms), or along the endpoint index filtering the topic (every
    row after the cursor read per page when the statistics said the topic held the whole table). A
    window that finds few recipients (a sparse audience) makes the next one wider, so a small topic
    among many endpoints still takes few pages. All the message's topics are read in one statement per
    window, each endpoint keeping its lowest topic (the one-click link leaves that one).
    """
    cursor = message.plan_cursor
    top = await session.scalar(select(func.max(Endpoint.id)))
    if top is None or cursor >= top:
        return _Page([], None, False)
    topic_ids: list[int] = []
    if message.corrects_message_id is not None:
        topic_ids = await _topics(session, message.corrects_message_id)
    elif message.kind == "announcement":
        topic_ids = await _topics(session, message.id)
    reached: dict[int, int | None] = {}  # endpoint -> the lowest topic that reaches it
    low, width = cursor, chunk
    while low < top and len(reached) < max(1, chunk // 2):
        high = min(low + width, top)
        if message.corrects_message_id is not None:
            reached.update(
                await _correction_window(session, message.corrects_message_id, topic_ids, low, high)
            )
        elif message.kind == "announcement":
            reached.update(await _followers(session, topic_ids, low, high))
        else:  # applicant updates, confirmations, replies: their endpoints are named
            where = (MessageEndpoint.message_id == message.id,)
            reached.update(
                (i, None) for i in await _window(session, MessageEndpoint.endpoint_id, where, low, high)
            )
        if len(reached) < max(1, chunk // SPARSE):
            width *= SPARSE
        low = high
    ids = sorted(reached)
    if len(ids) > chunk:  # a dense window after a wide one: cut it, the rest is the next page's
        ids, low = ids[:chunk], ids[chunk - 1]
    return _Page([(i, reached[i]) for i in ids], low, low < top)


async def _window(session: Any, column: Any, where: tuple[Any, ...], low: int, high: int) -> list[int]:
    """``column`` of the rows matching ``where`` with ``low < column <= high`` (no order, no limit).

    The ids come back as one value (an array, or a JSON array on SQLite), not a row each: a page's
    thousands of rows through the driver and SQLAlchemy's result cost more than the query itself.
    """
    connection = await session.connection()
    postgres = connection.dialect.name == "postgresql"
    found = func.array_agg(column) if postgres else func.json_group_array(column)
    value = await connection.scalar(select(found).where(*where, column > low, column <= high))
    if postgres:
        return list(value or ())
    return list(json.loads(value))


async def _followers(session: Any, topic_ids: list[int], low: int, high: int) -> dict[int, int]:
    """Who in the window follows one of the topics, each with the lowest of them (its link leaves that one).

    One statement for all the message's topics (a message names a topic and its ancestors: one per topic
    was most of a page's statements); the pairs come back as two arrays built in the same pass.
    """
    if not topic_ids:
        return {}
    connection = await session.connection()
    postgres = connection.dialect.name == "postgresql"
    together = func.array_agg if postgres else func.json_group_array
    endpoint_id, topic_id = Subscription.endpoint_id, Subscription.topic_id
    query = select(together(endpoint_id), together(topic_id)).where(
        topic_id.in_(topic_ids), Subscription.state == "confirmed", endpoint_id > low, endpoint_id <= high
    )
    endpoints, topics = (await connection.execute(query)).one()
    if not postgres:
        endpoints, topics = json.loads(endpoints), json.loads(topics)
    reached: dict[int, int] = {}
    for endpoint, topic in zip(endpoints or (), topics or (), strict=True):
        if reached.get(endpoint, topic) >= topic:
            reached[endpoint] = topic
    return reached


async def _correction_window(
    session: Any, original: int, topic_ids: list[int], low: int, high: int
) -> dict[int, int | None]:
    """Those in the window who received the original and still follow one of its topics.

    DESIGN.md: a correction informs; it does not reach someone who has since left.
    """
    where = (Delivery.message_id == original, Delivery.state.in_(("sent", "delivered", "read")))
    received = await _window(session, Delivery.endpoint_id, where, low, high)
    if not received or not topic_ids:
        return {}
    follows = await session.execute(
        select(Subscription.endpoint_id, func.min(Subscription.topic_id))
        .where(
            Subscription.endpoint_id.in_(received),
            Subscription.topic_id.in_(topic_ids),
            Subscription.state == "confirmed",
        )
        .group_by(Subscription.endpoint_id)
    )
    return {endpoint_id: topic_id for endpoint_id, topic_id in follows.all()}


async def _topics(session: Any, message_id: int) -> list[int]:
    query = select(MessageTopic.topic_id).where(MessageTopic.message_id == message_id)
    return list((await session.execute(query)).scalars())


@dataclass
class _Insert:
    """One ``INSERT … SELECT`` per topic of the page: the endpoints named by id, through their primary key.

    The ids go in as one array (PostgreSQL) or one JSON text (SQLite's ``json_each``), so the statement
    is the same for every page and its plan is a primary-key lookup per id, whatever the statistics say:
    the channel is compared as an expression (``channel || ''``) so that no index on it can be chosen
    instead (SQLite without statistics takes any equality on an index for selective, and PostgreSQL
    with statistics older than a channel's subscribers would too: a scan of the whole channel per page).
    The page's id window bounds the primary key as well: a table PostgreSQL takes for small (never
    analysed, or smaller than a few hundred thousand rows) would otherwise be read whole for every page.
    A confirmation goes to an inactive (bounced) address too: a fresh confirmation is how it returns.

    On PostgreSQL the new ids come back as one array per channel (the ``INSERT`` in a ``WITH``), not a
    row each: turning 2,000 rows into Python tuples cost more than the rest of the page's Python.
    """

    dialect: str
    message: Message
    window: tuple[int, int]
    enabled: set[str]
    now: Any
    #: ``ON CONFLICT DO NOTHING``; without it a row that exists fails the statement (``plan_chunk``).
    skip_existing: bool

    async def run(self, session: Any, rows: list[tuple[int, int | None]]) -> dict[str, list[int]]:
        by_topic: dict[int | None, list[int]] = defaultdict(list)
        for endpoint_id, topic_id in rows:
            by_topic[topic_id].append(endpoint_id)
        connection = await session.connection()  # Core rows: the ORM's per-row work is not needed here
        created: dict[str, list[int]] = defaultdict(list)
        for topic_id, ids in by_topic.items():
            if self.dialect == "postgresql":
                made = self._statement(topic_id, ids).cte("made")
                query = select(made.c.channel, func.array_agg(made.c.id)).group_by(made.c.channel)
                for channel, new_ids in (await connection.execute(query)).all():
                    created[channel] += new_ids
            else:
                for delivery_id, channel in (await connection.execute(self._statement(topic_id, ids))).all():
                    created[channel].append(delivery_id)
        return created

    def _statement(self, topic_id: int | None, ids: list[int]) -> Any:
        endpoints = Endpoint.__table__
        deliveries = Delivery.__table__
        active = [] if self.message.kind == "confirmation" else [endpoints.c.active == true()]
        if self.dialect == "postgresql":
            named = endpoints.c.id == func.any(cast(literal(ids, ARRAY(BigInteger)), ARRAY(BigInteger)))
        else:
            named = endpoints.c.id.in_(select(column("value")).select_from(func.json_each(json.dumps(ids))))
        chosen = select(
            literal(self.message.id, BigInteger),
            endpoints.c.id,
            literal(topic_id, Integer),
            endpoints.c.channel,
            literal(self.message.lane),
            literal("queued"),
            literal(self.now, DateTime),
            literal(self.now, DateTime),
            literal(0),
        ).where(
            named,
            endpoints.c.id > self.window[0],
            endpoints.c.id <= self.window[1],
            (endpoints.c.channel + "").in_(sorted(self.enabled)),
            *active,
        )
        dialect_insert = postgresql.insert if self.dialect == "postgresql" else sqlite.insert
        insert = dialect_insert(deliveries).from_select(
            [
                "message_id",
                "endpoint_id",
                "topic_id",
                "channel",
                "lane",
                "state",
                "next_attempt_at",
                "enqueued_at",
                "attempts",
            ],
            chosen,
        )
        if self.skip_existing:
            insert = insert.on_conflict_do_nothing(index_elements=["message_id", "endpoint_id"])
        return insert.returning(deliveries.c.id, deliveries.c.channel)


def _batches(hub: Hub, by_channel: dict[str, list[int]]) -> list[tuple[str, list[int]]]:
    out: list[tuple[str, list[int]]] = []
    for channel, ids in by_channel.items():
        ids.sort()
        size = min(hub.settings.queue.batch_size, hub.channel(channel).capabilities.batch_size)
        out.extend((channel, ids[i : i + size]) for i in range(0, len(ids), size))
    return out
