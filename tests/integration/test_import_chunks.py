"""A CSV import writes each chunk set-wise (hub/subscriptions_bulk.py) with the outcome row by row gives.

The same mixed chunk (a new address, a confirmed, an unsubscribed, a pending and a bounced one) goes
through both paths, each in a database of its own, once as a pending and once as a confirmed import:
the counts, who is asked to confirm, the states and whether ``state_changed_at`` moved must agree.
"""

from __future__ import annotations

from sqlalchemy import select

from hub import subscriptions
from hub.store.models import Endpoint, Subscription, Topic
from hub.subscriptions_bulk import subscribe_chunk
from tests.conftest import _drop_schema, make_settings, start_hub

BEFORE = {
    "baru@mail.example.com": None,
    "tetap@mail.example.com": "confirmed",
    "berhenti@mail.example.com": "unsubscribed",
    "menunggu@mail.example.com": "pending",
    "pental@mail.example.com": "bounced",  # switched off by a bounce, never subscribed to this topic
}


async def _import(url: str, schema: str | None, redis_url: str, confirmed: bool, bulk: bool) -> tuple:
    hub = await start_hub(make_settings(url, redis_url, 2525, schema))
    try:
        async with hub.db.session() as session:
            topic_id = await session.scalar(select(Topic.id).where(Topic.slug == "kota-pekalongan"))
        async with hub.db.transaction() as session:
            for address, state in BEFORE.items():
                if state is not None:
                    endpoint = await subscriptions.endpoint_for(session, "email", address)
                    if state == "bounced":
                        endpoint.active, endpoint.deactivated_reason = False, "bounce"
                    else:
                        await subscriptions.set_state(session, topic_id, endpoint.id, state)
        async with hub.db.session() as session:
            stamps = dict(
                (await session.execute(select(Subscription.id, Subscription.state_changed_at))).all()
            )
        rows = [(address, "en" if address.startswith("tetap") else "id") for address in BEFORE]
        write = subscribe_chunk if bulk else subscriptions._import_row_by_row
        pending: dict[str, list[int]] = {}
        async with hub.db.transaction() as session:
            counts = await write(session, hub.channel("email"), "email", topic_id, rows, confirmed, pending)
        async with hub.db.session() as session:
            names = dict((await session.execute(select(Endpoint.id, Endpoint.address))).all())
            found = (
                await session.execute(
                    select(Subscription.id, Endpoint.address, Endpoint.active, Subscription.state)
                    .join(Endpoint, Endpoint.id == Subscription.endpoint_id)
                    .where(Subscription.topic_id == topic_id)
                    .order_by(Endpoint.address)
                )
            ).all()
            after = dict(
                (await session.execute(select(Subscription.id, Subscription.state_changed_at))).all()
            )
        states = [(address, active, state, sub_id in stamps and after[sub_id] != stamps[sub_id])
                  for sub_id, address, active, state in found]  # fmt: skip
        return counts, {k: sorted(names[i] for i in v) for k, v in pending.items()}, states
    finally:
        await hub.close()


async def test_a_chunk_written_set_wise_ends_as_row_by_row(database, redis_url, tmp_path) -> None:
    url, schema = database
    made: list[str] = []
    for confirmed in (False, True):
        outcomes = []
        for bulk in (False, True):
            if url.startswith("sqlite"):
                where = (f"sqlite+aiosqlite:///{tmp_path / f'{confirmed}-{bulk}.db'}", None)
            else:
                where = (url, f"{schema}_{int(confirmed)}{int(bulk)}")
                made.append(where[1])
            try:
                outcomes.append(await _import(*where, redis_url, confirmed, bulk))
            finally:
                for name in made:
                    await _drop_schema(name)
                made.clear()
        assert outcomes[1] == outcomes[0], confirmed
        counts, pending, states = outcomes[1]
        assert counts == {"new": 2, "already_confirmed": 1}  # new: the new address and the bounced one
        # A confirmed subscriber is never set back to pending (nor its change time moved); a bounced
        # address is not revived: it is asked to confirm like a new one.
        assert ("tetap@mail.example.com", True, "confirmed", False) in states
        assert "pental@mail.example.com" in pending["id"]
        assert ("pental@mail.example.com", False, "confirmed" if confirmed else "pending", False) in states
