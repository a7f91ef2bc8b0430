"""Real worker processes that die, a Redis that forgets, a broadcast that must not hold up an applicant.

Workers are `hub worker` subprocesses sharing the test's database and Redis; mail goes to a real SMTP
server (aiosmtpd) that takes a few milliseconds per message, so a broadcast is still draining when the
test strikes.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import httpx
import pytest
import redis.asyncio as aioredis

from hub import announcements, delivery, subscriptions
from hub.api.app import create_app
from hub.keys import create_key
from tests.conftest import make_settings, start_hub
from tests.workers import kill, worker_processes, write_settings

QUEUE = {
    "lease_seconds": 2,
    "reconcile_every_seconds": 1,
    "stale_after_seconds": 3,
    "flush_every": 5,
    "bulk_jobs": 10,
    "urgent_jobs": 10,
}
POOL = 4


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
        template="closure", topics=["kota-pekalongan"], data={"mode": "restricted", "period_days": 14}
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
    # Duplicates come only from sends the killed worker made but had not yet recorded: at most what its
    # SMTP pool had in flight plus each running job's unflushed outcomes (docs/design.md, "Crashes").
    bound = POOL + QUEUE["bulk_jobs"] * (QUEUE["flush_every"] - 1)
    duplicates = sum(n - 1 for n in received.values())
    assert duplicates <= bound
    status = await delivery.status(chub, message_id)
    assert status["totals"]["sent"] == len(addresses)


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
