"""Planning right after a bulk import reads one page per page on PostgreSQL, before any ANALYZE.

The traps (issue 12): statistics taken while a topic held every subscription say it still does after a
bulk import into another topic, so a walk written as ``topic_id = … AND endpoint_id > … ORDER BY
endpoint_id LIMIT n`` is served by the endpoint index, filtering the topic, and reads every row after the
cursor on every page; with no statistics at all the same walk is planned as "every remaining row of the
topic, sorted, keep n". Both are quadratic over a broadcast (64 s instead of 1 s for 20,000 measured
before the fix). Here every statement planning sends is run again under ``EXPLAIN ANALYZE`` with those
statistics, and no scan may read more than a page of rows or scan a whole table of the audience.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import event, func, select, text

from hub import announcements, delivery
from hub.context import Hub
from hub.store.models import Delivery, Topic
from tests.conftest import PG_URL, _drop_schema, make_settings, start_hub

pytestmark = pytest.mark.postgres

CHUNK = 250
OLD = 50  # subscribers of the general topic when the statistics were taken
IMPORTED = 10_000  # subscribers of a service topic imported after them
AUDIENCE_TABLES = {"subscriptions", "endpoints", "message_endpoints", "deliveries"}


@pytest.fixture
async def pg_hub(redis_url: str) -> AsyncIterator[Hub]:
    schema = f"t_{uuid.uuid4().hex[:12]}"
    hub = await start_hub(make_settings(PG_URL, redis_url, 2525, schema, plan_chunk=CHUNK))
    try:
        yield hub
    finally:
        await hub.close()
        await _drop_schema(schema)


async def _bulk(hub: Hub, topic: str, first: int, count: int) -> None:
    """Subscribers, endpoints and confirmed subscriptions ``first .. first + count - 1``, set-based."""
    async with hub.db.engine.begin() as conn:
        topic_id = (await conn.execute(select(Topic.id).where(Topic.slug == topic))).scalar_one()
        series = "generate_series(CAST(:first AS bigint), CAST(:last AS bigint)) AS n(i)"
        values = {"first": first, "last": first + count - 1}
        await conn.execute(
            text(f"INSERT INTO subscribers (id, locale, created_at) SELECT i, 'id', now() FROM {series}"),
            values,
        )
        await conn.execute(
            text(
                "INSERT INTO endpoints (id, subscriber_id, channel, address, kind, active, created_at) "
                "SELECT i, i, 'email', 'warga' || i || '@mail.example.com', 'person', true, now() "
                f"FROM {series}"
            ),
            values,
        )
        await conn.execute(
            text(
                "INSERT INTO subscriptions (id, topic_id, endpoint_id, state, created_at, updated_at) "
                f"SELECT i, :topic, i, 'confirmed', now(), now() FROM {series}"
            ),
            {**values, "topic": topic_id},
        )


def _scans(node: dict[str, Any]) -> list[dict[str, Any]]:
    found = [node] if "Relation Name" in node else []
    for child in node.get("Plans", []):
        found += _scans(child)
    return found


@pytest.mark.parametrize("statistics", ["stale", "none"])
async def test_planning_after_a_bulk_import_reads_a_page_per_page_without_analyze(
    pg_hub: Hub, statistics: str
) -> None:
    """``stale``: analysed while the general topic held every subscription; ``none``: never analysed."""
    hub = pg_hub
    await _bulk(hub, "kota-pekalongan", 1, OLD)
    if statistics == "stale":  # as autovacuum would have, while the hub was young
        async with hub.db.engine.connect() as conn:
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text("ANALYZE"))
    await _bulk(hub, "kota-pekalongan/ktp-el", OLD + 1, IMPORTED)  # no ANALYZE after this
    req = announcements.AnnouncementInput(
        template="free_text", topics=["kota-pekalongan"], data={"title": "Libur", "text": "Kantor tutup."}
    )
    message = await delivery.create_message(hub, (await announcements.prepare(hub, req)).draft)

    pages: list[list[tuple[str, Any]]] = [[]]

    def grab(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        pages[-1].append((statement, parameters))

    engine = hub.db.engine.sync_engine
    event.listen(engine, "before_cursor_execute", grab)
    started = time.perf_counter()
    try:
        while not (await delivery.plan_chunk(hub, message.id, hub.channels)).done:
            pages.append([])
    finally:
        event.remove(engine, "before_cursor_execute", grab)
    planning = time.perf_counter() - started

    async with hub.db.session() as session:
        planned = await session.scalar(
            select(func.count(func.distinct(Delivery.endpoint_id))).where(Delivery.message_id == message.id)
        )
    assert planned == OLD + IMPORTED

    worst: list[tuple[int, str, str]] = []
    async with hub.db.engine.connect() as conn:
        raw = (await conn.get_raw_connection()).driver_connection
        # the second page and one in the middle: each walk starts after the cursor, past the old topic
        for statement, parameters in pages[1] + pages[len(pages) // 2]:
            if not any(f" {table}" in statement for table in AUDIENCE_TABLES):
                continue
            if not statement.lstrip().upper().startswith(("SELECT", "INSERT", "WITH")):
                continue
            transaction = raw.transaction()
            await transaction.start()
            try:
                if statement.lstrip().upper().startswith("WITH"):  # the page's plain INSERT: undo its rows
                    await raw.execute("DELETE FROM deliveries WHERE message_id = $1", message.id)
                plan = await raw.fetchval("EXPLAIN (ANALYZE, FORMAT JSON) " + statement, *parameters)
            finally:
                await transaction.rollback()
            tree = json.loads(plan) if isinstance(plan, str) else plan  # SQLAlchemy's codec decodes it
            for scan in _scans(tree[0]["Plan"]):
                if scan["Relation Name"] not in AUDIENCE_TABLES:
                    continue
                read = scan["Actual Rows"] * scan["Actual Loops"] + scan.get("Rows Removed by Filter", 0)
                worst.append((read, scan["Node Type"], f"{scan['Relation Name']}: {statement[:120]}"))
    worst.sort(reverse=True)
    assert worst, "no statement of planning was captured"
    # The walks (subscriptions here) read one window of endpoint ids: about a page, never the rest of
    # the table. The endpoints of a page are looked up by primary key; PostgreSQL may read a table it
    # takes for small (never analysed, 10,000 rows) in one sequential pass instead, which its cost model
    # stops choosing as the table grows (a million rows: primary key), so that one is left to it.
    walks = [w for w in worst if not w[2].startswith("endpoints:")]
    assert walks and all("Seq Scan" not in node for _, node, _ in walks), walks[:3]
    assert walks[0][0] <= CHUNK, walks[:3]
    lookups = [w for w in worst if w[2].startswith("endpoints:") and w[1] != "Seq Scan"]
    assert all(read <= CHUNK for read, _, _ in lookups), lookups[:3]
    assert len(pages) >= (OLD + IMPORTED) // CHUNK
    assert planning < 30, f"planning {OLD + IMPORTED} deliveries took {planning:.1f} s"
