"""Is this hub ready to serve? The checks behind ``/readyz`` and ``hub doctor``, each a few milliseconds.

``/healthz`` answers from the process alone (liveness: restart me if I stop answering); readiness asks
the parts the hub cannot work without: the database answers, Redis answers, and the database's schema
is the one this release expects (``hub run`` migrates at start; a worker or API process of a newer
release against an older database is not ready until ``hub init``/``hub run`` migrated it).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hub.context import Hub
    from hub.store.db import Database

#: Each check gives up after this long: a readiness probe must answer before the prober gives up.
TIMEOUT = 3.0


@dataclass(frozen=True)
class Check:
    """One part's verdict: ``ok``, and a short line saying what was found (never a secret)."""

    part: str
    ok: bool
    detail: str


@cache
def head_revisions() -> tuple[str, ...]:
    """The newest Alembic revision(s) this release ships (read once per process)."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from hub.store.db import MIGRATIONS

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return tuple(sorted(ScriptDirectory.from_config(config).get_heads()))


async def current_revisions(db: Database) -> tuple[str, ...]:
    """The revision(s) the database says it is at; empty for a database never initialised."""
    from alembic.runtime.migration import MigrationContext

    def read(sync_conn: Any) -> tuple[str, ...]:
        return tuple(sorted(MigrationContext.configure(sync_conn).get_current_heads()))

    async with db.engine.connect() as conn:
        return await conn.run_sync(read)


async def database(db: Database) -> Check:
    from sqlalchemy import text

    try:
        async with asyncio.timeout(TIMEOUT), db.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except Exception as exc:  # any failure is "down"; the detail names its kind only (no URL, no password)
        return Check("database", False, f"does not answer ({type(exc).__name__})")
    return Check("database", True, f"{db.dialect} answers")


async def redis(hub: Hub) -> Check:
    from hub.queue import REDIS_DOWN

    if hub.redis is None:
        return Check("redis", False, "not connected")
    try:
        async with asyncio.timeout(TIMEOUT):
            await hub.redis.ping()
    except (*REDIS_DOWN, ConnectionError) as exc:
        return Check("redis", False, f"does not answer ({type(exc).__name__})")
    return Check("redis", True, "answers")


async def migrations(db: Database) -> Check:
    try:
        async with asyncio.timeout(TIMEOUT):
            current = await current_revisions(db)
    except Exception as exc:
        return Check("migrations", False, f"could not be read ({type(exc).__name__})")
    wanted = head_revisions()
    if current == wanted:
        return Check("migrations", True, f"at {', '.join(wanted)}")
    if not current:
        return Check("migrations", False, "the database is not initialised: run `hub init`")
    return Check(
        "migrations",
        False,
        f"the database is at {', '.join(current)}, this release needs {', '.join(wanted)}: "
        "run `hub init` (or start `hub run`, which migrates)",
    )


async def readiness(hub: Hub) -> list[Check]:
    """Database, Redis and migrations, checked at once (a probe waits for the slowest, not the sum)."""
    db_check, redis_check = await asyncio.gather(database(hub.db), redis(hub))
    if db_check.ok:
        migration_check = await migrations(hub.db)
    else:
        migration_check = Check("migrations", False, "not checked: the database does not answer")
    return [db_check, redis_check, migration_check]
