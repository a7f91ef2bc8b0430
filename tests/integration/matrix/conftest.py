"""Matrix end to end: the real hub (Redis, SQLite or PostgreSQL) against a real Synapse on loopback.

One Synapse serves the whole session (users and rooms are new in every test). The hub's Matrix channel
logs in with the bot's password on a fixed device, keeps its crypto store in the test's tmp directory and
is exempt from Synapse's message limits, as a production bot should be; the hub paces it itself.

Synapse and its user fixtures come from tests/services/synapse.py; Redis from tests/conftest.py.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from nio import AsyncClient, AsyncClientConfig, MegolmEvent, RoomMessageNotice, SyncResponse

from channels.base import Inbound
from hub import delivery
from hub.context import Hub
from hub.delivery import drain
from hub.inbound import handle_inbound
from hub.settings import Settings
from tests.conftest import PG_URL, _drop_schema, make_settings, start_hub
from tests.services.synapse import MatrixUser, Person, SynapseServer

DEVICE = "HUBMATRIX1"


# ---------------------------------------------------------------------------------------------------------
# Services


@pytest.fixture
def pg_database() -> Iterator[tuple[str, str | None]]:
    """A PostgreSQL schema of its own (the production store), dropped afterwards."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    yield PG_URL, schema
    asyncio.run(_drop_schema(schema))


class SlowProxy:
    """A TCP proxy in front of Synapse that holds every response ``delay`` seconds: a distant homeserver.

    Requests pass at once, so while a worker waits for its answers Synapse has already stored the events:
    a worker killed then has sent messages it never recorded, which is what transaction ids are for.
    """

    def __init__(self, target: str, delay: float) -> None:
        parts = urlsplit(target)
        self.host, self.port, self.delay = parts.hostname or "127.0.0.1", parts.port or 80, delay
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="slow-proxy", daemon=True)
        self.server: asyncio.Server | None = None
        self.listen_port = 0
        self.handlers: set[asyncio.Task[None]] = set()
        self.writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.listen_port}"

    def start(self) -> SlowProxy:
        self.thread.start()
        self.server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._handle, "127.0.0.1", 0), self.loop
        ).result(10)
        self.listen_port = self.server.sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        """Close every connection; the handlers then end by themselves (nothing is cancelled)."""

        async def shutdown() -> None:
            assert self.server is not None
            self.server.close()
            for writer in list(self.writers):
                writer.close()
            if self.handlers:
                await asyncio.wait(list(self.handlers), timeout=5)

        asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(15)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.handlers.add(task)
        self.writers.add(writer)
        try:
            up_reader, up_writer = await asyncio.open_connection(self.host, self.port)
        except OSError:
            writer.close()
            return
        self.writers.add(up_writer)
        try:
            await asyncio.gather(
                self._pipe(reader, up_writer, 0.0), self._pipe(up_reader, writer, self.delay)
            )
        finally:
            for w in (writer, up_writer):
                w.close()
                self.writers.discard(w)
            self.handlers.discard(task)

    @staticmethod
    async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, delay: float) -> None:
        """Forward each chunk ``delay`` seconds after it arrived (latency, not a cap on throughput)."""
        chunks: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def read() -> None:
            try:
                while data := await src.read(65536):
                    chunks.put_nowait((time.monotonic() + delay, data))
            except (ConnectionError, OSError):
                pass
            chunks.put_nowait((0.0, b""))

        async def write() -> None:
            # No half-close after EOF: Synapse must finish what a dead client asked for, as it would
            # behind a real network. Everything is closed when the other direction ends, or at stop().
            broken = False
            while True:
                due, data = await chunks.get()
                if not data:
                    break
                if broken:
                    continue
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                try:
                    dst.write(data)
                    await dst.drain()
                except (ConnectionError, OSError):
                    broken = True

        await asyncio.gather(read(), write())


@pytest.fixture
def slow_synapse(synapse: SynapseServer) -> Iterator[SlowProxy]:
    proxy = SlowProxy(synapse.base_url, delay=0.1).start()
    try:
        yield proxy
    finally:
        proxy.stop()


# ---------------------------------------------------------------------------------------------------------
# People and the bot


async def add_bot(owner: Person, bot_person: Person, room_id: str) -> None:
    await owner.invite(room_id, bot_person.user_id)
    await bot_person.join(room_id)


def matrix_conf(homeserver: str, bot: MatrixUser, store: Path, **overrides: Any) -> dict[str, Any]:
    return {
        "enabled": True,
        "homeserver": homeserver,
        "user_id": bot.user_id,
        "password": bot.password,
        "device_id": DEVICE,
        "store_path": str(store),
        "allowed_servers": ["localhost"],
        "poll_timeout": 2,
        "rate_per_second": 200,
        **overrides,
    }


def matrix_settings(
    database: tuple[str, str | None], redis_url: str, conf: dict[str, Any], **queue: Any
) -> Settings:
    url, schema = database
    settings = make_settings(url, redis_url, None, schema, reconcile_every_seconds=2, **queue)
    settings.channels = {"matrix": conf}
    settings.log.level = "WARNING"  # a worker subprocess' stderr is a pipe nobody reads until the end
    return settings


@pytest.fixture
async def mx_hub(
    sqlite_database: tuple[str, str | None],
    redis_url: str,
    synapse: SynapseServer,
    bot: MatrixUser,
    tmp_path: Path,
) -> AsyncIterator[Hub]:
    """A hub whose only channel is Matrix, on SQLite (the broadcast test runs on PostgreSQL)."""
    conf = matrix_conf(synapse.base_url, bot, tmp_path / "store")
    instance = await start_hub(matrix_settings(sqlite_database, redis_url, conf))
    try:
        yield instance
    finally:
        await instance.close()


# ---------------------------------------------------------------------------------------------------------
# Reading


class E2EReader:
    """A person with an encrypting client (matrix-nio[e2e]) that decrypts what the bot sent."""

    def __init__(self, synapse: SynapseServer, user: MatrixUser, store: Path) -> None:
        store.mkdir(parents=True, exist_ok=True)
        self.client = AsyncClient(
            synapse.base_url,
            user.user_id,
            device_id=user.device_id,
            store_path=str(store),
            config=AsyncClientConfig(encryption_enabled=True),
        )
        self.client.restore_login(user.user_id, user.device_id, user.access_token)

    async def start(self) -> None:
        await self.client.keys_upload()
        await self.client.sync(timeout=0)

    async def notices(self, room_id: str, sender: str, want: int, timeout: float = 20.0) -> list[str]:
        """Sync until ``want`` notices from ``sender`` decrypted (or time is up); then one more sync."""
        found: list[str] = []
        deadline = time.monotonic() + timeout
        settle = 0
        while settle < 2 and time.monotonic() < deadline:
            resp = await self.client.sync(timeout=500)
            assert isinstance(resp, SyncResponse), resp
            join = resp.rooms.join.get(room_id)
            for event in join.timeline.events if join else []:
                if getattr(event, "sender", "") != sender:
                    continue
                assert not isinstance(event, MegolmEvent), "could not decrypt the bot's message"
                if isinstance(event, RoomMessageNotice):
                    found.append(event.body)
            if len(found) >= want:
                settle += 1
        return found

    async def close(self) -> None:
        await self.client.close()


async def bot_bodies(person: Person, room_id: str, bot_id: str) -> list[tuple[str, str]]:
    """``(event_id, body)`` of every message the bot posted in a room, oldest first."""
    return [
        (e["event_id"], e["content"].get("body", ""))
        for e in await person.messages(room_id)
        if e["sender"] == bot_id
    ]


async def wait_until(
    predicate: Callable[[], Awaitable[Any]], timeout: float = 30.0, what: str = "condition"
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = await predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(0.1)


async def wait_done(
    hub: Hub, message_id: int, timeout: float = 60.0, check: Callable[[], None] | None = None
) -> dict[str, Any]:
    async def done() -> dict[str, Any] | None:
        if check is not None:
            check()
        status = await delivery.status(hub, message_id)
        return status if status and status["done"] else None

    return await wait_until(done, timeout, f"message {message_id} to finish")


# ---------------------------------------------------------------------------------------------------------
# The bot listening in this process, answers sent by draining the hub's queue here too


class Listening:
    """``listen`` with ``handle_inbound`` as its sink, as ``hub listen matrix`` runs it; records what it
    handled so a test knows when a command has been answered in the database and queued."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.handled: list[Inbound] = []
        self.task: asyncio.Task[None] | None = None

    async def sink(self, record: Inbound) -> None:
        try:
            await handle_inbound(self.hub, record)
        finally:
            self.handled.append(record)

    async def start(self) -> None:
        channel = await self.hub.open_channel("matrix")
        self.task = asyncio.create_task(channel.listen(self.sink))
        client = channel.client  # type: ignore[attr-defined]

        async def synced() -> bool:
            if self.task is not None and self.task.done():
                self.task.result()
            return bool(client.next_batch)

        await wait_until(synced, 20, "the bot's first sync")

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)

    async def handled_event(self, event_id: str, timeout: float = 20.0) -> Inbound:
        async def found() -> Inbound | None:
            if self.task is not None and self.task.done():
                self.task.result()
            return next((r for r in self.handled if r.reply_ref == event_id), None)

        return await wait_until(found, timeout, f"the bot to handle {event_id}")

    async def handled_kind(self, kind: str, address: str, timeout: float = 20.0) -> Inbound:
        async def found() -> Inbound | None:
            return next((r for r in self.handled if r.kind == kind and r.address == address), None)

        return await wait_until(found, timeout, f"a {kind} record for {address}")

    async def settle(self) -> None:
        """Send whatever the handled records queued (replies go out on the urgent lane)."""
        await drain(self.hub, idle_checks=1)


@pytest.fixture
async def listening(mx_hub: Hub) -> AsyncIterator[Listening]:
    bot_loop = Listening(mx_hub)
    await bot_loop.start()
    try:
        yield bot_loop
    finally:
        await bot_loop.stop()
