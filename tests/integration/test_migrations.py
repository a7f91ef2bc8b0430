"""Alembic migrations build exactly the schema the models describe, and run twice harmlessly."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from hub.store.db import Database
from hub.store.models import Base


async def test_migrated_schema_matches_models(database):
    url, schema = database
    db = Database(url, schema=schema)
    try:
        await db.migrate()
        await db.migrate()  # `hub init` twice
        async with db.engine.connect() as conn:
            diff = await conn.run_sync(
                lambda sync: compare_metadata(MigrationContext.configure(sync), Base.metadata)
            )
        assert diff == []
    finally:
        await db.dispose()
