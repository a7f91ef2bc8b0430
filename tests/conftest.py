"""Fixtures for the real services: Redis, SQLite, PostgreSQL and an SMTP server, all on loopback."""

from __future__ import annotations

import asyncio
import email
import email.policy
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
import redis as redis_sync
from aiosmtpd.controller import Controller

from hub.context import Hub, build_hub
from hub.regions import load, read_file
from hub.settings import Settings, load_settings
from tests import log_audit
from tests.fakes.telegram_api import FakeTelegram

#: Matrix fixtures (one Synapse per session, started only when a test asks for it); the log audit.
pytest_plugins = ["tests.services.synapse", "tests.log_audit"]

ROOT = Path(__file__).resolve().parent.parent
REDIS_URL = os.environ.get("HUB_TEST_REDIS", "redis://127.0.0.1:6379/15")
PG_URL = os.environ.get("HUB_TEST_POSTGRES", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")
SAMPLE = ROOT / "data" / "offices.toml"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------------------------------------
# SMTP: a real server (aiosmtpd) that keeps what it receives


@dataclass
class Mailbox:
    messages: list[EmailMessage] = field(default_factory=list)
    refuse: dict[str, tuple[int, str]] = field(default_factory=dict)
    #: Seconds the server takes per message, so a broadcast is still draining when a test strikes.
    delay: float = 0.0
    #: While set (e.g. ``"421 4.3.2 Service not available"``), every MAIL FROM gets this reply: an outage.
    outage: str | None = None

    def to(self, address: str) -> list[EmailMessage]:
        return [m for m in self.messages if m["To"].strip("<>") == address]


class _Handler:
    def __init__(self, box: Mailbox) -> None:
        self.box = box

    async def handle_MAIL(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        if self.box.outage:
            return self.box.outage
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        if address in self.box.refuse:
            code, text = self.box.refuse[address]
            return f"{code} {text}"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.box.delay:
            await asyncio.sleep(self.box.delay)
        self.box.messages.append(email.message_from_bytes(envelope.content, policy=email.policy.default))
        return "250 Message accepted for delivery"


@pytest.fixture
def smtp() -> Iterator[tuple[Mailbox, int]]:
    box = Mailbox()
    port = free_port()
    controller = Controller(_Handler(box), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield box, port
    finally:
        controller.stop()


# ---------------------------------------------------------------------------------------------------------
# Redis and databases


@pytest.fixture(scope="session")
def redis_server() -> Iterator[str]:
    """A redis-server of the suite's own on a free loopback port (the shared one if the binary is absent).

    Tests flush their database freely; a private server keeps that from touching anything else on the
    machine, and other suites running at the same time from touching these tests.
    """
    binary = shutil.which("redis-server")
    if binary is None or os.environ.get("HUB_TEST_REDIS"):
        yield REDIS_URL
        return
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/15"
    try:
        client = redis_sync.Redis.from_url(url)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis_sync.ConnectionError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.02)
        client.close()
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture
def redis_url(redis_server: str) -> Iterator[str]:
    """Database 15 of the suite's Redis, empty at the start and end of each test."""
    client = redis_sync.Redis.from_url(redis_server)
    try:
        client.ping()
    except redis_sync.ConnectionError:
        pytest.fail(f"Redis is not running at {redis_server}")
    client.flushdb()
    try:
        yield redis_server
    finally:
        client.flushdb()
        client.close()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str | None]]:
    """A fresh database: a SQLite file, or a PostgreSQL schema dropped afterwards."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}", None
        return
    schema = f"t_{uuid.uuid4().hex[:12]}"
    yield PG_URL, schema
    asyncio.run(_drop_schema(schema))


@pytest.fixture
def sqlite_database(tmp_path: Path) -> tuple[str, str | None]:
    return f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}", None


async def _drop_schema(schema: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_URL.replace("+asyncpg", ""))
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


def make_settings(
    db_url: str, redis_url: str, smtp_port: int | None = None, schema: str | None = None, **queue: Any
) -> Settings:
    channels: dict[str, Any] = {}
    if smtp_port is not None:
        channels["email"] = {
            "enabled": True,
            "host": "127.0.0.1",
            "port": smtp_port,
            "start_tls": False,
            "sender": "Disdukcapil <no-reply@disdukcapil.example.go.id>",
            "pool_size": 4,
            "allow_test_domains": True,
        }
    settings = load_settings(
        ROOT / "settings.toml",
        database={"url": db_url, "schema": schema or ""},
        redis={"url": redis_url, "embedded_fallback": False, "key_prefix": f"t{uuid.uuid4().hex[:8]}"},
        hub={
            "public_url": "http://hub.test",
            "templates_dir": str(ROOT / "templates"),
            "secret_key": "test-key",
        },
        queue={"lease_seconds": 5, "stale_after_seconds": 30, "poll_delay": 0.01, **queue},
        channels=channels,
    )
    log_audit.forbid_settings(settings)
    return settings


async def start_hub(settings: Settings, **kwargs: Any) -> Hub:
    from hub.store.db import Database

    db = Database(settings.database.url, schema=settings.database.schema_name or None)
    await db.migrate()
    await db.dispose()
    log_audit.forbid_settings(settings)  # channels a test added after make_settings
    hub = await build_hub(settings, **kwargs)
    await load(hub, read_file(SAMPLE))
    return hub


@pytest.fixture
async def hub(
    database: tuple[str, str | None], redis_url: str, smtp: tuple[Mailbox, int]
) -> AsyncIterator[Hub]:
    url, schema = database
    instance = await start_hub(make_settings(url, redis_url, smtp[1], schema))
    try:
        yield instance
    finally:
        await instance.close()


@pytest.fixture
def mailbox(smtp: tuple[Mailbox, int]) -> Mailbox:
    return smtp[0]


@pytest.fixture
def fake() -> Iterator[FakeTelegram]:
    """The Bot API on a free port of 127.0.0.1, behaving as Telegram documents it, for one test."""
    server = FakeTelegram().start()
    try:
        yield server
    finally:
        server.stop()
