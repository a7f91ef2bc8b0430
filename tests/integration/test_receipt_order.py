"""Delivery reports in any order never move a delivery backwards (DESIGN.md rule 2).

Providers send reports as they come: a chat app's "read" may arrive before its "delivered", and a late
"failed" after either. Every order of delivered / read / failed is applied to a sent delivery, on
SQLite and PostgreSQL alike; the message's status counts "read" as a state of its own.
"""

from __future__ import annotations

from itertools import permutations

import pytest
from sqlalchemy import select

from channels.base import Inbound
from channels.testing import ScriptedChannel
from hub import announcements, delivery, operate, subscriptions
from hub.delivery import drain
from hub.inbound import handle_inbound
from hub.store.models import Delivery, Endpoint
from tests.conftest import make_settings, start_hub

#: Each order of reports and the state the delivery ends in: "failed" only when it came first.
ORDERS = {
    ("delivered", "read", "failed"): ["delivered", "read", "read"],
    ("delivered", "failed", "read"): ["delivered", "delivered", "read"],
    ("read", "delivered", "failed"): ["read", "read", "read"],
    ("read", "failed", "delivered"): ["read", "read", "read"],
    ("failed", "delivered", "read"): ["failed", "failed", "failed"],
    ("failed", "read", "delivered"): ["failed", "failed", "failed"],
}


@pytest.fixture
async def rhub(database, redis_url, smtp):
    url, schema = database
    channel = ScriptedChannel()
    hub = await start_hub(
        make_settings(url, redis_url, smtp[1], schema), extra_channels={"scripted": channel}
    )
    try:
        yield hub
    finally:
        await hub.close()


async def _sent_broadcast(hub, addresses: list[str]) -> tuple[int, dict[str, int]]:
    for address in addresses:
        await subscriptions.subscribe(hub, "kota-serang", "scripted", address, confirmed=True)
    req = announcements.AnnouncementInput(
        template="free_text", topics=["kota-serang"], data={"title": "Uji", "text": "Pesan uji."}
    )
    _, message = await announcements.create(hub, req, publish=True)
    await drain(hub)
    async with hub.db.session() as session:
        rows = await session.execute(
            select(Endpoint.address, Delivery.id, Delivery.state)
            .join(Endpoint, Endpoint.id == Delivery.endpoint_id)
            .where(Delivery.message_id == message.id)
        )
        found = {r.address: (r.id, r.state) for r in rows.all()}
    assert {state for _, state in found.values()} == {"sent"}
    return message.id, {address: i for address, (i, _) in found.items()}


async def _state(hub, delivery_id: int) -> str:
    async with hub.db.session() as session:
        return str(await session.scalar(select(Delivery.state).where(Delivery.id == delivery_id)))


def _report(delivery_id: int, status: str) -> Inbound:
    return Inbound(
        channel="scripted",
        kind="receipt",
        delivery_id=delivery_id,
        receipt_status=status,  # type: ignore[arg-type]
        text="failed: 131026" if status == "failed" else "",
    )


def test_the_orders_cover_every_permutation():
    assert set(ORDERS) == set(permutations(("delivered", "read", "failed")))


async def test_reports_in_any_order_never_move_a_delivery_backwards(rhub):
    addresses = ["-".join(order) for order in ORDERS]
    message_id, ids = await _sent_broadcast(rhub, addresses)
    for order, expected in ORDERS.items():
        delivery_id = ids["-".join(order)]
        seen = []
        for status in order:
            await handle_inbound(rhub, _report(delivery_id, status))
            seen.append(await _state(rhub, delivery_id))
        assert seen == expected, order

    status = await delivery.status(rhub, message_id)
    assert {k: v for k, v in status["totals"].items() if v} == {"read": 4, "failed": 2}
    assert status["channels"]["scripted"]["read"] == 4
    assert status["done"]
    assert operate.summary_line(status["totals"]) == "drained: 4 sent, 2 failed"


async def test_read_applies_to_a_send_whose_record_it_overtook(rhub):
    """The worker writes outcomes in groups; a report may come first. A late "delivered" changes nothing."""
    _, ids = await _sent_broadcast(rhub, ["a", "b"])
    async with rhub.db.transaction() as session:  # as if the worker had not written "sent" yet
        await session.execute(
            Delivery.__table__.update().where(Delivery.id.in_(list(ids.values()))).values(state="sending")
        )
    await handle_inbound(rhub, _report(ids["a"], "read"))
    await handle_inbound(rhub, _report(ids["a"], "delivered"))
    await handle_inbound(rhub, _report(ids["b"], "delivered"))
    await handle_inbound(rhub, _report(ids["b"], "read"))
    assert (await _state(rhub, ids["a"]), await _state(rhub, ids["b"])) == ("read", "read")
