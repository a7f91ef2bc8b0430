"""What the public reads has changed: one stamp in the database that every `hub run` watches.

Public pages and feeds are kept rendered in each process (``hub.public.cache``). A change that alters
them (a publication, a cancellation, a correction, a scheduled announcement starting, a status edit)
writes a new stamp in the same transaction as the change itself, whichever process makes it; each
process serving pages reads the stamp at most once a second and drops what it rendered when it moved.
So a change shows within about a second everywhere, with no message that could be lost, and pages stay
cached for long (``[public] cache_seconds``) while nothing changes.
"""

from __future__ import annotations

import secrets

from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from hub.store.models import KeyValue

KEY = "public_stamp"


async def touch(session: AsyncSession) -> None:
    """Within the transaction that changes what the public reads: a new stamp."""
    stamp = secrets.token_hex(8)
    done = await session.execute(update(KeyValue).where(KeyValue.key == KEY).values(value=stamp))
    if done.rowcount == 0:  # a database made before the stamp (migration 0010 adds its row)
        dialect = session.bind.dialect.name if session.bind is not None else "sqlite"
        insert = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(KeyValue)
        await session.execute(insert.values(key=KEY, value=stamp).on_conflict_do_nothing())


async def stamp(session: AsyncSession) -> str | None:
    return await session.scalar(select(KeyValue.value).where(KeyValue.key == KEY))
