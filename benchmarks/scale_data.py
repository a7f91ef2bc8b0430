"""A province-sized PostgreSQL schema in minutes: offices, subscribers and millions of delivery rows.

``build(url, schema, deliveries)`` migrates a fresh schema with the hub's own Alembic migrations, then
fills it set-based: every big table is one ``INSERT … SELECT`` over ``generate_series``, loaded while its
indexes and constraints are dropped and rebuilt afterwards from the definitions PostgreSQL kept
(``pg_get_indexdef``, ``pg_get_constraintdef``), so the schema ends exactly as the migrations made it.
Then ``VACUUM (ANALYZE)``, as autovacuum would after such a load.

The rows are in the states a province hub holds: 27 kab/kota offices with a general topic each, one
endpoint per subscriber (half Telegram, 30% email, 15% SMS, 5% Matrix), broadcasts to one topic's
confirmed subscribers, oldest first, settled (sent, delivered, failed, gone, skipped), and the newest two
still draining: queued and due, retrying (half due, half later), sending under live claims and a few
under dead ones (a crashed worker), a few queued rows never enqueued (a lost enqueue), the newest still
being planned. One applicant update in a thousand deliveries goes on the urgent lane, the newest queued.

Used by ``tests/scale`` (``EXPLAIN`` of the hot queries at 10,000,000 rows) and ``benchmarks/metrics.py``.
``python -m benchmarks.scale_data --deliveries 10000000`` builds one, prints how long each step took and
drops it (``--keep`` keeps it).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from benchmarks.scale_rows import OFFICES, deliveries_and_claims, messages, offices, people
from hub.clock import utcnow
from hub.store.db import Database

PG_URL = os.environ.get("HUB_TEST_POSTGRES", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")
#: Broadcasts still draining (the newest ones); the rest are settled.
ACTIVE = 2
#: The oldest message was sent this long ago (inside the 90-day retention: every row is still held).
HISTORY = timedelta(days=60)
#: Big tables loaded with their indexes and constraints dropped.
LOADED = ("subscribers", "endpoints", "subscriptions", "messages", "deliveries")


def build(url: str, schema: str, deliveries: int, *, subscribers: int | None = None) -> None:
    """Make ``schema`` (migrated) in the PostgreSQL at ``url`` and fill it with ``deliveries`` rows.

    ``subscribers`` defaults to a tenth of the deliveries (at least 1,000, at most 2,000,000): each
    subscriber received about ten messages. Run it outside an event loop; ``build_async`` inside one.
    """
    asyncio.run(build_async(url, schema, deliveries, subscribers=subscribers))


def drop(url: str, schema: str) -> None:
    asyncio.run(drop_async(url, schema))


async def drop_async(url: str, schema: str) -> None:
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await engine.dispose()


async def build_async(
    url: str,
    schema: str,
    deliveries: int,
    *,
    subscribers: int | None = None,
    report: Callable[[str, float], None] | None = None,
) -> None:
    """``report(step, seconds)`` is called after each step (the command line prints them)."""
    if deliveries < 1:
        raise ValueError("deliveries must be at least 1")
    people = subscribers or min(max(deliveries // 10, 1000), 2_000_000)
    if people < OFFICES:
        raise ValueError(f"subscribers must be at least {OFFICES} (one topic per office)")
    db = Database(url, schema=schema)
    try:
        await db.migrate()
    finally:
        await db.dispose()
    engine = create_async_engine(url, connect_args={"server_settings": {"search_path": schema}})
    try:
        await _fill(engine, _Shape.of(deliveries, people), report or (lambda _step, _seconds: None))
    finally:
        await engine.dispose()


class _Shape:
    """How many of each: broadcasts of ``audience`` rows each (the last one partial), urgent updates."""

    def __init__(self, deliveries: int, people: int) -> None:
        self.people = people
        self.urgent = deliveries // 1000
        self.broadcast_rows = deliveries - self.urgent
        self.audience = people // OFFICES
        self.broadcasts = max(1, -(-self.broadcast_rows // self.audience))
        self.messages = self.broadcasts + self.urgent
        self.now = utcnow().replace(microsecond=0)

    @classmethod
    def of(cls, deliveries: int, people: int) -> _Shape:
        return cls(deliveries, people)

    def params(self) -> dict[str, Any]:
        return {
            "now": self.now,
            "people": self.people,
            "audience": self.audience,
            "broadcasts": self.broadcasts,
            "urgent": self.urgent,
            "rows": self.broadcast_rows,
            "active": min(ACTIVE, self.broadcasts),
            "offices": OFFICES,
            "step": HISTORY.total_seconds() / self.broadcasts,
            "ustep": HISTORY.total_seconds() / max(1, self.urgent),
        }


async def _fill(engine: AsyncEngine, shape: _Shape, report: Callable[[str, float], None]) -> None:
    params = shape.params()

    async def step(name: str, work: Callable[[AsyncConnection], Awaitable[Any]]) -> None:
        started = time.perf_counter()
        async with engine.begin() as conn:
            await _session(conn)
            await work(conn)
        report(name, time.perf_counter() - started)

    saved: dict[str, list[tuple[str, str, str]]] = {}

    async def unload(conn: AsyncConnection) -> None:
        saved.update(await _drop_indexes(conn))

    await step("drop indexes and constraints", unload)
    await step("offices and topics", lambda c: offices(c, params))
    await step("subscribers, endpoints, subscriptions", lambda c: people(c, params))
    await step("messages, renderings, audiences", lambda c: messages(c, params))
    await step("deliveries and claims", lambda c: deliveries_and_claims(c, params))
    started = time.perf_counter()
    await _restore(engine, saved)
    report("indexes and constraints", time.perf_counter() - started)
    await step("sequences", _sequences)
    started = time.perf_counter()
    await _vacuum(engine)
    report("vacuum analyze", time.perf_counter() - started)


async def _session(conn: AsyncConnection) -> None:
    # A bulk load's own settings: big sorts for index builds, no wait for the WAL flush at each commit.
    await conn.exec_driver_sql("SET maintenance_work_mem = '512MB'")
    await conn.exec_driver_sql("SET synchronous_commit = off")


async def _drop_indexes(conn: AsyncConnection) -> dict[str, list[tuple[str, str, str]]]:
    """Drop every index and key of the loaded tables (and keys pointing at them); return how to remake."""
    tables = list(LOADED)
    keys = (
        await conn.execute(
            text(
                "SELECT c.conname, c.conrelid::regclass::text, c.contype::text, pg_get_constraintdef(c.oid) "
                "FROM pg_constraint c WHERE c.contype IN ('p', 'u', 'f') AND ("
                " c.conrelid IN (SELECT oid FROM pg_class WHERE relname = ANY(:t) "
                "  AND relnamespace = current_schema()::regnamespace)"
                " OR c.confrelid IN (SELECT oid FROM pg_class WHERE relname = ANY(:t) "
                "  AND relnamespace = current_schema()::regnamespace))"
            ),
            {"t": tables},
        )
    ).all()
    indexes = (
        await conn.execute(
            text(
                "SELECT i.indexrelid::regclass::text, i.indrelid::regclass::text, "
                "pg_get_indexdef(i.indexrelid) FROM pg_index i "
                "WHERE i.indrelid IN (SELECT oid FROM pg_class WHERE relname = ANY(:t) "
                " AND relnamespace = current_schema()::regnamespace) "
                "AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid "
                " AND c.contype IN ('p', 'u'))"
            ),
            {"t": tables},
        )
    ).all()
    foreign = [(n, t, d) for n, t, kind, d in keys if kind == "f"]
    unique = [(n, t, d) for n, t, kind, d in keys if kind != "f"]
    for name, table, _ in foreign + unique:
        await conn.exec_driver_sql(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"')
    for name, _, _ in indexes:
        await conn.exec_driver_sql(f"DROP INDEX {name}")
    return {"indexes": [tuple(i) for i in indexes], "unique": unique, "foreign": foreign}


async def _restore(engine: AsyncEngine, saved: dict[str, list[tuple[str, str, str]]]) -> None:
    """Rebuild the indexes two at a time (the keys' as plain unique indexes, then attached), then keys."""
    builds = [definition for _, _, definition in saved["indexes"]]
    attach = []
    for name, table, definition in saved["unique"]:
        kind, _, columns = definition.partition(" (")
        unique = "UNIQUE" if kind.startswith(("PRIMARY KEY", "UNIQUE")) else ""
        builds.append(f'CREATE {unique} INDEX "{name}" ON {table} ({columns}')
        attach.append(f'ALTER TABLE {table} ADD CONSTRAINT "{name}" {kind} USING INDEX "{name}"')
    # The biggest first, so the two builders finish together.
    pending = sorted(builds, key=lambda d: (" deliveries " not in d, d))

    async def builder() -> None:
        async with engine.connect() as conn:
            await _session(conn)
            await conn.commit()
            while pending:
                await conn.exec_driver_sql(pending.pop(0))
                await conn.commit()

    await asyncio.gather(builder(), builder())
    async with engine.begin() as conn:
        await _session(conn)
        for statement in attach:
            await conn.exec_driver_sql(statement)
        for name, table, definition in saved["foreign"]:
            await conn.exec_driver_sql(f'ALTER TABLE {table} ADD CONSTRAINT "{name}" {definition}')


async def _sequences(conn: AsyncConnection) -> None:
    for table in ("subscribers", "endpoints", "subscriptions", "messages", "deliveries", "topics"):
        await conn.exec_driver_sql(
            f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))"
        )


async def _vacuum(engine: AsyncEngine) -> None:
    """What autovacuum does after a bulk insert: statistics, and the visibility map that lets index-only
    scans skip the table (https://www.postgresql.org/docs/15/routine-vacuuming.html). This schema's
    tables only: a bare VACUUM would visit every schema of the database."""
    async with engine.connect() as conn:
        conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
        tables = await conn.execute(
            text("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")
        )
        for (table,) in tables.all():
            await conn.exec_driver_sql(f'VACUUM (ANALYZE) "{table}"')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--database", default=PG_URL, help="a postgresql+asyncpg:// URL")
    parser.add_argument("--schema", default="", help="default: scale_<hex>")
    parser.add_argument("--deliveries", type=int, default=10_000_000)
    parser.add_argument("--subscribers", type=int, default=None)
    parser.add_argument("--keep", action="store_true", help="keep the schema (else it is dropped)")
    args = parser.parse_args()
    schema = args.schema or f"scale_{uuid.uuid4().hex[:8]}"
    started = time.perf_counter()

    def report(step: str, seconds: float) -> None:
        print(f"{step:40} {seconds:8.1f} s", flush=True)

    try:
        asyncio.run(
            build_async(args.database, schema, args.deliveries, subscribers=args.subscribers, report=report)
        )
        print(f"{'total':40} {time.perf_counter() - started:8.1f} s  (schema {schema})")
    finally:
        if not args.keep:
            drop(args.database, schema)


if __name__ == "__main__":
    main()


__all__ = ["build", "build_async", "drop", "drop_async"]
