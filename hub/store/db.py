"""Engine, sessions and migrations for SQLite and PostgreSQL alike; the deployment key's file."""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import delete, event, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from hub.logs import log
from hub.settings import HubSection, SettingsError
from hub.store.models import KeyValue
from hub.store.writegate import Gates

MIGRATIONS = Path(__file__).parent / "migrations"
KEY_FILE_HEADER = (
    "# Deployment key of this hub: the first key signs links and keys the hashes of PINs and API keys;\n"
    "# the keys after it are previous ones, accepted to verify only. Keep this file 0600 and out of backups\n"
    "# of the database. `hub secret rotate` rewrites it.\n"
)


@dataclass(frozen=True)
class Keyring:
    """The key that signs and hashes now, and the previous keys that still verify (newest first)."""

    current: bytes
    previous: tuple[bytes, ...] = ()
    file: Path | None = None

    @property
    def verifying(self) -> tuple[bytes, ...]:
        return (self.current, *self.previous)


def new_key() -> str:
    return secrets.token_urlsafe(32)


def read_key_file(path: Path) -> list[str]:
    """The keys in a key file, in order; none if it does not exist."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def write_key_file(path: Path, keys: list[str]) -> None:
    """Replace the key file at once (no reader sees half of it), readable by its owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        file.write(KEY_FILE_HEADER + "".join(f"{key}\n" for key in dict.fromkeys(keys)))
    os.replace(temporary, path)


def _new_key_file(path: Path) -> str:
    """A new key in a new file; if another process made the file first, its key."""
    path.parent.mkdir(parents=True, exist_ok=True)
    key = new_key()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return read_key_file(path)[0]
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        file.write(f"{KEY_FILE_HEADER}{key}\n")
    return key


def _add_to_key_file(path: Path, key: str) -> None:
    """Keep a key found in the database: the file's key if there is no file, else a previous key."""
    keys = read_key_file(path)
    if key not in keys:
        write_key_file(path, [*keys, key])


#: Connections kept beyond one per job: the reconciler, a planner, API requests, lease renewals.
SPARE_CONNECTIONS = 4


def pool_sizes(jobs: int) -> dict[str, int]:
    """A pool that keeps a connection for every job a process runs at once, and a few more.

    SQLAlchemy's default (5 kept, 10 overflow) closes every connection beyond the fifth when it is given
    back: with 20 jobs that opened and closed connections all the time (an aiosqlite connection is a
    thread, a PostgreSQL one a server process). A few overflow connections cover a job that holds two at
    once (a flush while its lease is renewed); those are the only ones ever closed. The overflow stays
    small because every process's ceiling counts against PostgreSQL's ``max_connections``
    (docs/deploy.md): at the defaults a process opens at most 28.
    """
    return {"pool_size": jobs + SPARE_CONNECTIONS, "max_overflow": SPARE_CONNECTIONS}


class Database:
    """One engine per process; ``schema`` isolates a PostgreSQL test run in its own schema.

    ``jobs``: how many jobs this process runs at once (``queue.urgent_jobs + queue.bulk_jobs``); the
    connection pool keeps that many connections open (``pool_sizes``).
    """

    def __init__(self, url: str, *, echo: bool = False, schema: str | None = None, jobs: int = 20) -> None:
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
            kwargs.update(pool_sizes(jobs), pool_pre_ping=True)
        elif parsed.database not in (None, "", ":memory:") and "mode=memory" not in str(parsed):
            kwargs.update(pool_sizes(jobs))  # a file; an in-memory database has one connection
        self.engine: AsyncEngine = create_async_engine(url, **kwargs)
        if self.dialect == "sqlite":
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        #: SQLite: this process's write transactions wait in line, urgent lane first (hub.store.writegate).
        self.write_gates = Gates() if self.dialect == "sqlite" else None

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        async with self.sessions() as session:
            yield session

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        if self.write_gates is not None:
            async with self.write_gates.get().held(), self.sessions() as session, session.begin():
                yield session
            return
        async with self.sessions() as session, session.begin():
            yield session

    @asynccontextmanager
    async def connection(self, *, write: bool = False) -> AsyncIterator[AsyncConnection]:
        """A Core connection, no ORM session: for the delivery pipeline's hot statements.

        An ORM session costs its own bookkeeping and, on the way back to the pool, a second rollback (on
        SQLite each one is a round trip to the connection's thread). ``write``: one write transaction,
        behind this process's SQLite write gate like ``transaction``, committed at the end of the block;
        otherwise whatever was read is rolled back at the end.
        """
        if not write:
            async with self.engine.connect() as conn:
                yield conn
            return
        if self.write_gates is not None:
            async with self.write_gates.get().held(), self.engine.begin() as conn:
                yield conn
            return
        async with self.engine.begin() as conn:
            yield conn

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

    async def keyring(self, hub: HubSection, *, create: bool = False) -> Keyring:
        """The deployment key and the previous ones, from settings and the key file (never the database).

        An installation whose key an older release kept in the database has it moved to the key file
        (mode 0600) and deleted from the database, once. ``create`` (``hub init``) writes a new key file
        when there is no key at all; otherwise a missing key stops the hub with an error naming the setting.
        """
        path = Path(hub.secret_key_file)
        stored = await self._stored_key()
        if stored is not None:
            await asyncio.to_thread(_add_to_key_file, path, stored)
            async with self.transaction() as session:
                await session.execute(delete(KeyValue).where(KeyValue.key == "secret_key"))
            log.warning(
                "secret_key_moved_out_of_database",
                key_file=str(path),
                advice="copy the key file to every host that runs the hub; database copies made before "
                "now hold the key: run `hub secret rotate` if one may have left your hands",
            )
        keys = [hub.secret_key] if hub.secret_key else []
        keys += await asyncio.to_thread(read_key_file, path)
        if not keys and create:
            keys = [await asyncio.to_thread(_new_key_file, path)]
        if not keys:
            raise SettingsError(
                f"no deployment key: hub.secret_key is empty and the key file {path} (hub.secret_key_file) "
                "does not exist. Run `hub init` to create it, copy it from the host that has it, or set "
                "hub.secret_key (HUB_HUB__SECRET_KEY)"
            )
        keys += hub.previous_secret_keys
        unique = list(dict.fromkeys(k for k in keys if k))
        return Keyring(unique[0].encode(), tuple(k.encode() for k in unique[1:]), path)

    async def _stored_key(self) -> str | None:
        async with self.session() as session:
            value = await session.scalar(select(KeyValue.value).where(KeyValue.key == "secret_key"))
        return None if value is None else str(value)

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
