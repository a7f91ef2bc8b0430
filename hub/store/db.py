"""Engine, sessions and migrations for SQLite and PostgreSQL alike."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from hub.store.models import KeyValue

MIGRATIONS = Path(__file__).parent / "migrations"


class Database:
    """One engine per process; ``schema`` isolates a PostgreSQL test run in its own schema."""

    def __init__(self, url: str, *, echo: bool = False, schema: str | None = None) -> None:
        self.url = url
        self.schema = schema
        parsed = make_url(url)
        self.dialect = parsed.get_backend_name()
        # hide_parameters: with `database.echo` SQLAlchemy logs statements itself; never their values.
        kwargs: dict[str, Any] = {"echo": echo, "hide_parameters": True}
        if self.dialect == "sqlite":
            kwargs["connect_args"] = {"timeout": 30}
        elif schema:
            kwargs["connect_args"] = {"server_settings": {"search_path": schema}}
        if self.dialect == "postgresql":
            kwargs.update(pool_size=10, max_overflow=10, pool_pre_ping=True)
        self.engine: AsyncEngine = create_async_engine(url, **kwargs)
        if self.dialect == "sqlite":
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        async with self.sessions() as session:
            yield session

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        async with self.sessions() as session, session.begin():
            yield session

    def insert(self, table: Any) -> Any:
        """A dialect ``INSERT`` that knows ``on_conflict_do_nothing``."""
        return (postgresql.insert if self.dialect == "postgresql" else sqlite.insert)(table)

    async def migrate(self) -> None:
        """Bring the schema to the newest Alembic revision (idempotent)."""
        from alembic import command
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        async with self.engine.begin() as conn:
            if self.schema:
                await conn.exec_driver_sql(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')

            def upgrade(sync_conn: Any) -> None:
                config.attributes["connection"] = sync_conn
                command.upgrade(config, "head")

            await conn.run_sync(upgrade)

    async def secret_key(self, configured: str = "") -> bytes:
        """The deployment's signing key: from settings, else the one ``hub init`` stored."""
        if configured:
            return configured.encode()
        async with self.transaction() as session:
            value = await session.scalar(select(KeyValue.value).where(KeyValue.key == "secret_key"))
            if value is None:
                value = secrets.token_urlsafe(32)
                await session.execute(
                    self.insert(KeyValue)
                    .values(key="secret_key", value=value)
                    .on_conflict_do_nothing(index_elements=["key"])
                )
                value = await session.scalar(select(KeyValue.value).where(KeyValue.key == "secret_key"))
        return str(value).encode()

    async def installation_id(self) -> str:
        """This installation's own id, made once (by ``hub init`` or the first start) and kept."""
        async with self.transaction() as session:
            value = await session.scalar(select(KeyValue.value).where(KeyValue.key == "installation_id"))
            if value is None:
                await session.execute(
                    self.insert(KeyValue)
                    .values(key="installation_id", value=secrets.token_hex(16))
                    .on_conflict_do_nothing(index_elements=["key"])
                )
                value = await session.scalar(select(KeyValue.value).where(KeyValue.key == "installation_id"))
        return str(value)

    async def dispose(self) -> None:
        await self.engine.dispose()


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()
