"""One chunk of a CSV import written set-wise: a handful of statements for hundreds of rows.

``hub.subscriptions.import_csv`` checks every row first, then writes chunks of ``IMPORT_CHUNK`` rows, each in
its own short transaction. Row by row that is seven statements per address (about 4 ms: 40 s for 10,000
subscribers); here it is a few statements per chunk, with the same outcome row by row would give:

- a new address gets its own subscriber and endpoint; an existing endpoint is left as it is (an import
  never revives a bounced or complaining address, see ``endpoint_for(reactivate=False)``);
- the subscription is made in the wanted state, or an existing one changed as ``set_state`` would: a
  confirmed one is never set back to pending, and ``state_changed_at`` moves only on a real change;
- an endpoint another request inserted meanwhile is used, and the subscriber made for it dropped.

A chunk naming one address twice is left to the row-by-row path (the second row sees the first).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from hub.clock import utcnow
from hub.context import Hub
from hub.store.models import Endpoint, Subscriber, Subscription


def _insert(session: AsyncSession, table: Any) -> Any:
    dialect = session.bind.dialect.name if session.bind is not None else "sqlite"
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)


async def _endpoints(
    session: AsyncSession, channel: str, addresses: list[str]
) -> dict[str, tuple[int, bool]]:
    """address -> (endpoint id, active) of the addresses that have an endpoint."""
    rows = await session.execute(
        select(Endpoint.address, Endpoint.id, Endpoint.active).where(
            Endpoint.channel == channel, Endpoint.address.in_(addresses)
        )
    )
    return {address: (endpoint_id, active) for address, endpoint_id, active in rows}


async def subscribe_chunk(
    session: AsyncSession,
    adapter: Any,
    channel: str,
    topic_id: int,
    rows: list[tuple[str, str]],
    confirmed: bool,
    pending_by_locale: dict[str, list[int]],
) -> dict[str, int]:
    """Subscribe ``rows`` (distinct addresses, checked): the counts and pending endpoints as row by row."""
    wanted = "confirmed" if confirmed else "pending"
    now = utcnow()
    addresses = [address for address, _ in rows]
    endpoints = await _endpoints(session, channel, addresses)
    new = [(address, locale) for address, locale in rows if address not in endpoints]
    if new:
        subscribers = [Subscriber(locale=locale) for _, locale in new]
        session.add_all(subscribers)
        await session.flush()
        values = [
            {
                "subscriber_id": subscriber.id,
                "channel": channel,
                "address": address,
                "kind": adapter.address_kind(address),
                "active": True,
            }
            for subscriber, (address, _) in zip(subscribers, new, strict=True)
        ]
        made = set(
            (
                await session.execute(
                    _insert(session, Endpoint)
                    .values(values)
                    .on_conflict_do_nothing(index_elements=["channel", "address"])
                    .returning(Endpoint.address)
                )
            ).scalars()
        )
        for subscriber, (address, _) in zip(subscribers, new, strict=True):
            if address not in made:  # another request made this endpoint first: use that one
                await session.delete(subscriber)
        endpoints.update(await _endpoints(session, channel, [address for address, _ in new]))
    ids = [endpoints[address][0] for address in addresses]
    before = await _states(session, topic_id, ids)
    missing = [i for i in ids if i not in before]
    created: set[int] = set()
    if missing:
        made_now = await session.execute(
            _insert(session, Subscription)
            .values(
                [
                    {"topic_id": topic_id, "endpoint_id": i, "state": wanted, "updated_at": now}
                    for i in missing
                ]
            )
            .on_conflict_do_nothing(index_elements=["topic_id", "endpoint_id"])
            .returning(Subscription.endpoint_id)
        )
        created = set(made_now.scalars())
    # Existing subscriptions (and any made by another request meanwhile) change as ``set_state`` says.
    existing = await _states(session, topic_id, [i for i in ids if i not in created])
    changeable = [i for i, state in existing.items() if state != "confirmed" or wanted == "confirmed"]
    if changeable:
        moved = [i for i in changeable if existing[i] != wanted]
        same = [i for i in changeable if existing[i] == wanted]
        where = (Subscription.topic_id == topic_id,)
        if moved:
            await session.execute(
                update(Subscription)
                .where(*where, Subscription.endpoint_id.in_(moved))
                .values(state=wanted, updated_at=now, state_changed_at=now)
                .execution_options(synchronize_session=False)
            )
        if same:
            await session.execute(
                update(Subscription)
                .where(*where, Subscription.endpoint_id.in_(same))
                .values(updated_at=now)
                .execution_options(synchronize_session=False)
            )
    final = {**existing, **{i: wanted for i in changeable}, **{i: wanted for i in created}}
    counts = {"new": 0, "already_confirmed": 0}
    for (address, locale), endpoint_id in zip(rows, ids, strict=True):
        state = before.get(endpoint_id)
        counts["new"] += state is None
        counts["already_confirmed"] += state == "confirmed"
        if final[endpoint_id] == "pending" or not endpoints[address][1]:
            pending_by_locale.setdefault(locale, []).append(endpoint_id)
    return counts


async def _states(session: AsyncSession, topic_id: int, endpoint_ids: list[int]) -> dict[int, str]:
    if not endpoint_ids:
        return {}
    rows = await session.execute(
        select(Subscription.endpoint_id, Subscription.state).where(
            Subscription.topic_id == topic_id, Subscription.endpoint_id.in_(endpoint_ids)
        )
    )
    return {endpoint_id: state for endpoint_id, state in rows}


#: An import of at least this many rows refreshes PostgreSQL's statistics of the tables it wrote.
ANALYZE_AFTER = 1000


async def analyze_after_import(hub: Hub, rows: int) -> None:
    """PostgreSQL: ``ANALYZE`` the tables a large import wrote, as it ends.

    Autovacuum analyses a table only after a share of it has changed and a while later; until then the
    planner judges every query on these tables by statistics of before the import (a new topic looks
    empty, an old one still looks like all of it). Planning does not depend on them (hub.delivery.plan
    walks indexes), but the console's queries and anything else written later might; ANALYZE samples a
    fixed number of rows, so it stays under a second for tables of millions
    (https://www.postgresql.org/docs/current/sql-analyze.html). SQLite keeps no statistics unless asked,
    and the hub never asks, so there is nothing to refresh there.
    """
    if hub.db.dialect != "postgresql" or rows < ANALYZE_AFTER:
        return
    async with hub.db.engine.connect() as conn:
        conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.execute(text("ANALYZE subscribers, endpoints, subscriptions, message_endpoints"))
