"""What the sender does with whatever an adapter says or raises, on SQLite and PostgreSQL alike.

The adapter is ``channels.testing.ScriptedChannel``: a double of an adapter, so the hub's side is tested
with an adapter that breaks in ways a real one might (docs/design.md: "The path of a message", "Retries").
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from channels.base import RetryLater, Sent
from channels.testing import ScriptedChannel
from hub import announcements, delivery, subscriptions
from hub.clock import utcnow
from hub.delivery import drain, sender
from hub.store.models import Claim, Delivery, Endpoint, Message
from tests.conftest import make_settings, start_hub


@pytest.fixture
async def shub(database, redis_url, smtp):
    url, schema = database
    channel = ScriptedChannel()
    settings = make_settings(
        url, redis_url, smtp[1], schema, retry_base_seconds=0.05, retry_max_seconds=0.2, max_attempts=2
    )
    hub = await start_hub(settings, extra_channels={"scripted": channel})
    hub.scripted = channel  # type: ignore[attr-defined]
    try:
        yield hub
    finally:
        await hub.close()


async def _broadcast(hub, addresses: list[str]) -> int:
    for address in addresses:
        await subscriptions.subscribe(hub, "kota-serang", "scripted", address, confirmed=True)
    req = announcements.AnnouncementInput(
        template="free_text", topics=["kota-serang"], data={"title": "Uji", "text": "Pesan uji."}
    )
    _, message = await announcements.create(hub, req, publish=True)
    return message.id


async def _states(hub, message_id: int) -> dict[str, tuple[str, str | None, int]]:
    async with hub.db.session() as session:
        rows = await session.execute(
            select(Endpoint.address, Delivery.state, Delivery.error, Delivery.attempts)
            .join(Endpoint, Endpoint.id == Delivery.endpoint_id)
            .where(Delivery.message_id == message_id)
        )
        return {r.address: (r.state, r.error, r.attempts) for r in rows.all()}


async def test_an_adapter_that_raises_mid_batch_ends_as_outcomes(shub):
    """Defect 13: an exception for one item is that item's outcome; the rest of the batch goes on."""
    addresses = [f"warga-{i}" for i in range(6)]
    shub.scripted.script("warga-2", ValueError("header cannot contain a line break"))
    shub.scripted.script("warga-4", ConnectionResetError("peer reset"))  # transient: tried again
    message_id = await _broadcast(shub, addresses)
    await drain(shub)

    states = await _states(shub, message_id)
    assert states["warga-2"][:2] == (
        "failed",
        "adapter error: ValueError: header cannot contain a line break",
    )
    assert states["warga-4"][0] == "sent"
    assert {a: s for a, (s, _, _) in states.items() if a not in ("warga-2", "warga-4")} == {
        a: "sent" for a in addresses if a not in ("warga-2", "warga-4")
    }
    assert sorted(i.address for i in shub.scripted.sent) == [a for a in addresses if a != "warga-2"]


async def test_provider_trouble_spends_no_attempt(shub):
    """Defect 16: a provider's "retry after" is not the recipient's fault: max_attempts = 2 is no limit."""
    flood = [RetryLater("flood control", 0.05, provider=True)] * 5
    shub.scripted.script("warga-0", *flood, Sent("p-0"))
    shub.scripted.script("warga-1", RetryLater("mailbox busy"), RetryLater("mailbox busy"), Sent("never"))
    message_id = await _broadcast(shub, ["warga-0", "warga-1"])
    await drain(shub)

    states = await _states(shub, message_id)
    assert states["warga-0"] == ("sent", None, 1)
    assert states["warga-1"] == ("failed", "gave up after 2 attempts: mailbox busy", 2)


async def test_retrying_stops_at_the_retry_horizon(shub):
    shub.settings.queue.retry_horizon_seconds = 0.3
    shub.scripted.script("warga-0", *[RetryLater("gateway down", 0.2, provider=True)] * 20)
    message_id = await _broadcast(shub, ["warga-0"])
    await drain(shub)

    state, error, _ = (await _states(shub, message_id))["warga-0"]
    assert (state, error) == ("failed", "gave up at the message's retry deadline: gateway down")


async def test_cancel_clears_rows_stuck_in_sending(shub):
    """Defect 13: rows a dead worker left `sending` are cleared by cancel, not left for ever."""
    message_id = await _broadcast(shub, ["warga-0", "warga-1"])
    async with shub.db.session() as session:
        ids = list(
            (await session.execute(select(Delivery.id).where(Delivery.message_id == message_id))).scalars()
        )
    while not ids:  # the planner runs in the worker; plan it here
        await delivery.plan_message({"hub": shub}, message_id)
        async with shub.db.session() as session:
            ids = list(
                (
                    await session.execute(select(Delivery.id).where(Delivery.message_id == message_id))
                ).scalars()
            )
    claimed = await delivery.claim(shub, ids)
    assert len(claimed.items) == 2
    async with shub.db.transaction() as session:  # the worker died: its lease ran out
        await session.execute(update(Claim.__table__).values(lease_until=utcnow() - timedelta(seconds=1)))
    ann_id = await _announcement_of(shub, message_id)
    await announcements.cancel(shub, ann_id)

    states = await _states(shub, message_id)
    assert {s for s, _, _ in states.values()} == {"skipped"}


async def _announcement_of(hub, message_id: int) -> int:
    async with hub.db.session() as session:
        return (await session.get(Message, message_id)).announcement_id


async def test_a_worker_whose_lease_ran_out_stops_sending_those_rows(shub, monkeypatch):
    """Defect 3: renewals stall (a slow database) until the lease runs out and another worker takes the
    rows; the first worker must not send any of them (no duplicates without a crash).

    The worker trusts its lease until a third of it is left (1 s here): a loaded machine that stalls this
    process for longer between the check and the send is outside what the margin covers (production's
    60 s lease leaves 20 s).
    """
    shub.settings.queue.lease_seconds = 3.0
    shub.scripted.delay = 0.2
    addresses = [f"warga-{i:02d}" for i in range(30)]
    message_id = await _broadcast(shub, addresses)
    await delivery.plan_message({"hub": shub}, message_id)
    async with shub.db.session() as session:
        ids = sorted(
            (await session.execute(select(Delivery.id).where(Delivery.message_id == message_id))).scalars()
        )
    real_renew = sender.renew_lease

    async def stalled_renewal(hub, token):
        await asyncio.sleep(6.0)  # the database answers too late: the lease runs out meanwhile
        return await real_renew(hub, token)

    monkeypatch.setattr(sender, "renew_lease", stalled_renewal)
    first = asyncio.create_task(delivery.send_batch({"hub": shub, "lane": "bulk"}, "scripted", ids))
    await asyncio.sleep(3.0)
    for _ in range(100):  # another worker takes the rows as soon as the lease has run out
        second = await delivery.claim(shub, ids)
        if second.items:
            break
        await asyncio.sleep(0.1)
    await first

    taken = {i.address for i in second.items}
    sent_by_first = {i.address for i in shub.scripted.calls}
    assert taken, "the lease never ran out: nothing was tested"
    assert not taken & sent_by_first, "the first worker sent rows another worker had claimed"
    assert len(sent_by_first) + len(taken) == len(addresses)
