"""Real worker processes that die, a Redis that forgets, a broadcast that must not hold up an applicant.

Workers are `hub worker` subprocesses sharing the test's database and Redis; mail goes to a real SMTP
server (aiosmtpd) that takes a few milliseconds per message, so a broadcast is still draining when the
test strikes.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
import httpx
import pytest
import redis.asyncio as aioredis

from hub import announcements, delivery, subscriptions
from hub.api.app import create_app
from hub.keys import create_key
from tests.conftest import PG_URL, make_settings, start_hub
from tests.workers import kill, worker_processes, write_settings

QUEUE = {
    "lease_seconds": 2,
    "reconcile_every_seconds": 1,
    "stale_after_seconds": 3,
    "flush_every": 5,
    "bulk_jobs": 10,
    "urgent_jobs": 10,
}
#: docs/design.md, "Crashes": each running job has at most ``flush_every`` sends not yet recorded.
CRASH_BOUND = QUEUE["bulk_jobs"] * QUEUE["flush_every"]


@pytest.fixture
async def chub(database, redis_url, smtp, tmp_path):
    url, schema = database
    smtp[0].delay = 0.01  # type: ignore[attr-defined]
    settings = make_settings(url, redis_url, smtp[1], schema, **QUEUE)
    hub = await start_hub(settings)
    hub.settings_file = write_settings(settings, tmp_path / "settings.toml")  # type: ignore[attr-defined]
    try:
        yield hub
    finally:
        await hub.close()


async def _broadcast(hub, count: int) -> tuple[list[str], int]:
    addresses = [f"warga{i:04d}@mail.example.com" for i in range(count)]
    await subscriptions.import_csv(hub, "email\n" + "\n".join(addresses), "kota-pekalongan", confirmed=True)
    req = announcements.AnnouncementInput(
        template="restriction", topics=["kota-pekalongan"], data={"period_days": 14}
    )
    _, message = await announcements.create(hub, req, publish=True)
    return addresses, message.id


async def _until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def _done(hub, message_id: int) -> bool:
    status = await delivery.status(hub, message_id)
    return bool(status and status["done"])


async def test_two_workers_drain_one_broadcast_without_doubling(chub, mailbox):
    addresses, message_id = await _broadcast(chub, 600)
    with worker_processes(chub.settings_file, count=2):
        await _until(lambda: _done(chub, message_id), 60, "two workers to drain the broadcast")
    received = Counter(m["To"] for m in mailbox.messages)
    assert set(received) == set(addresses) and max(received.values()) == 1


async def test_sigkill_mid_broadcast_loses_nothing(chub, mailbox):
    addresses, message_id = await _broadcast(chub, 400)

    async def some_sent() -> bool:
        return len(mailbox.messages) >= 80

    with worker_processes(chub.settings_file) as (first,):
        await _until(some_sent, 30, "the first worker to send")
        kill(first)
    killed_at = len(mailbox.messages)
    assert killed_at < len(addresses), "the broadcast finished before the kill: nothing was tested"
    with worker_processes(chub.settings_file):
        await _until(lambda: _done(chub, message_id), 60, "the restarted worker to finish")

    received = Counter(m["To"] for m in mailbox.messages)
    assert set(received) == set(addresses), "somebody got nothing"
    # Duplicates come only from sends the killed worker made but had not yet recorded: at most
    # ``flush_every`` per running job, the send under way included (docs/design.md, "Crashes").
    duplicates = sum(n - 1 for n in received.values())
    assert duplicates <= CRASH_BOUND
    status = await delivery.status(chub, message_id)
    assert status["totals"]["sent"] == len(addresses)


@asynccontextmanager
async def stalled(url: str, schema: str | None) -> AsyncIterator[None]:
    """The database takes no writes to deliveries meanwhile: a SQLite write lock held by another
    connection (as a long import would), or a PostgreSQL ``LOCK TABLE`` (as a migration would)."""
    if url.startswith("sqlite"):
        conn = sqlite3.connect(url.split("///", 1)[1], isolation_level=None, timeout=30)
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            conn.rollback()
            conn.close()
        return
    pg = await asyncpg.connect(PG_URL.replace("+asyncpg", ""), server_settings={"search_path": schema or ""})
    try:
        async with pg.transaction():
            await pg.execute("LOCK TABLE deliveries IN EXCLUSIVE MODE")
            yield
    finally:
        await pg.close()


async def test_sigkill_while_the_database_stalls_stays_within_the_bound(chub, mailbox, database):
    """Defect 18: outcomes that cannot be written stop the sending; a kill then costs at most the bound."""
    addresses, message_id = await _broadcast(chub, 400)

    async def some_sent() -> bool:
        return len(mailbox.messages) >= 60

    with worker_processes(chub.settings_file) as (first,):
        await _until(some_sent, 30, "the first worker to send")
        async with stalled(*database):
            before = len(mailbox.messages)
            await asyncio.sleep(3.0)  # a worker that sends on regardless gets through hundreds here
            during = len(mailbox.messages) - before
            kill(first)
    assert len(mailbox.messages) < len(addresses), "the broadcast finished: nothing was tested"
    with worker_processes(chub.settings_file):
        await _until(lambda: _done(chub, message_id), 90, "the restarted worker to finish")

    received = Counter(m["To"] for m in mailbox.messages)
    assert set(received) == set(addresses), "somebody got nothing"
    duplicates = sum(n - 1 for n in received.values())
    assert duplicates <= CRASH_BOUND, f"{duplicates} duplicates ({during} sent while the database stalled)"
    assert during <= CRASH_BOUND


async def test_redis_flushed_mid_broadcast_reconciler_completes_it(chub, mailbox, redis_url):
    addresses, message_id = await _broadcast(chub, 300)

    async def some_sent() -> bool:
        return len(mailbox.messages) >= 60

    with worker_processes(chub.settings_file):
        await _until(some_sent, 30, "the worker to send")
        client = aioredis.Redis.from_url(redis_url)
        await client.flushdb()  # queue, jobs, rate counters: all gone
        await client.aclose()
        flushed_at = len(mailbox.messages)
        await _until(lambda: _done(chub, message_id), 60, "the reconciler to complete the broadcast")

    assert flushed_at < len(addresses), "the broadcast finished before the flush: nothing was tested"
    received = Counter(m["To"] for m in mailbox.messages)
    assert set(received) == set(addresses)
    assert max(received.values()) == 1, "a flush must not double anything: claims still hold"


async def test_applicant_update_overtakes_a_draining_broadcast(chub, mailbox):
    addresses, message_id = await _broadcast(chub, 2000)
    key = await create_key(chub, "kota-pekalongan", "intake", "siak")
    transport = httpx.ASGITransport(app=create_app(chub))
    async with httpx.AsyncClient(
        transport=transport, base_url="http://hub.test", headers={"Authorization": f"Bearer {key}"}
    ) as api:
        opened = await api.post(
            "/v1/applicants",
            json={
                "reference": "KK-2020-0042",
                "document": "KK",
                "contacts": [{"channel": "email", "address": "pemohon@mail.example.com"}],
            },
        )
        assert opened.status_code == 201, opened.text

        async def broadcast_started() -> bool:
            return len(mailbox.messages) >= 50

        with worker_processes(chub.settings_file):
            await _until(broadcast_started, 30, "the broadcast to start")
            posted = time.monotonic()
            update = await api.post(
                "/v1/applicants/KK-2020-0042/updates",
                json={"status": "ready", "pickup_place": "loket 3 Dindukcapil Kota Pekalongan"},
            )
            assert update.status_code == 202, update.text

            async def applicant_heard() -> bool:
                return bool(mailbox.to("pemohon@mail.example.com"))

            await _until(applicant_heard, 10, "the applicant's update")
            latency = time.monotonic() - posted
            status = await delivery.status(chub, message_id)

    assert status["pending"] > len(addresses) / 2, "most of the broadcast should still be waiting"
    assert latency < 2.0
    body = mailbox.to("pemohon@mail.example.com")[0].get_body(preferencelist=("plain",)).get_content()
    assert "siap diambil di loket 3 Dindukcapil Kota Pekalongan" in body


async def test_a_killed_workers_batches_are_queued_again_once_within_a_lease(
    database, redis_url, smtp, tmp_path, mailbox
):
    """Defect 3: recovery after a kill takes one lease, not ``stale_after_seconds``; each dead batch is
    queued again once, not on every reconciler tick."""
    url, schema = database
    smtp[0].delay = 0.01  # type: ignore[attr-defined]
    settings = make_settings(url, redis_url, smtp[1], schema, **{**QUEUE, "stale_after_seconds": 300})
    hub = await start_hub(settings)
    settings_file = write_settings(settings, tmp_path / "settings.toml")
    try:
        addresses, message_id = await _broadcast(hub, 400)

        async def some_sent() -> bool:
            return len(mailbox.messages) >= 60

        with worker_processes(settings_file) as (first,):
            await _until(some_sent, 30, "the first worker to send")
            kill(first)
        await asyncio.sleep(QUEUE["lease_seconds"] + 0.5)  # every claim of the dead worker has run out
        first_tick = await delivery.reconcile({"hub": hub})
        later_ticks = [await delivery.reconcile({"hub": hub}) for _ in range(3)]
        assert first_tick["batches"] > 0
        assert [t["batches"] for t in later_ticks] == [0, 0, 0], "a dead batch was queued again on every tick"

        restarted = time.monotonic()
        with worker_processes(settings_file):
            await _until(lambda: _done(hub, message_id), 60, "the restarted worker to finish")
        took = time.monotonic() - restarted
        received = Counter(m["To"] for m in mailbox.messages)
        assert set(received) == set(addresses)
        assert took < 45, f"recovery took {took:.0f} s: it waited for stale_after_seconds"
    finally:
        await hub.close()
