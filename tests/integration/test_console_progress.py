"""The dashboard's progress: a finished message's counts kept a while in Redis, a sending one's never."""

from __future__ import annotations

from sqlalchemy import insert, update

from hub.clock import utcnow
from hub.console import queries
from hub.store.models import Announcement, Delivery, Endpoint, Message, Subscriber

OFFICES = frozenset({"kota-serang"})


async def _two_messages(hub) -> None:
    """Announcement 1 done (two sent), announcement 2 sending (one sent, one queued)."""
    now = utcnow()
    async with hub.db.transaction() as session:
        await session.execute(insert(Subscriber).values([{"id": i, "locale": "id"} for i in (1, 2)]))
        await session.execute(
            insert(Endpoint).values(
                [
                    {"id": i, "subscriber_id": i, "channel": "email", "address": f"w{i}@mail.example.com"}
                    for i in (1, 2)
                ]
            )
        )
        await session.execute(
            insert(Announcement),
            [
                {"id": i, "office_id": "kota-serang", "template": "link", "data": {}, "services": [],
                 "targets": {"topics": ["kota-serang"]}, "state": "published", "created_at": now}
                for i in (1, 2)
            ],
        )  # fmt: skip
        await session.execute(
            insert(Message),
            [
                {"id": i, "kind": "announcement", "lane": "bulk", "office_id": "kota-serang",
                 "announcement_id": i, "state": "planned", "send_at": now, "plan_cursor": 0,
                 "created_at": now}
                for i in (1, 2)
            ],
        )  # fmt: skip
        await session.execute(
            insert(Delivery),
            [
                {"message_id": m, "endpoint_id": e, "channel": "email", "attempts": 0, "next_attempt_at": now,
                 "state": "queued" if (m, e) == (2, 2) else "sent"}
                for m in (1, 2) for e in (1, 2)
            ],
        )  # fmt: skip


def _totals(board) -> dict[str, dict[int, dict[str, int]]]:
    return {phase: {row.id: row.totals for row in rows} for phase, rows in board["rows"].items() if rows}


async def test_finished_counts_are_kept_a_while_and_sending_ones_counted_on_every_view(hub):
    await _two_messages(hub)
    assert _totals(await queries.dashboard(hub, OFFICES)) == {
        "sending": {2: {"sent": 1, "queued": 1}},
        "done": {1: {"sent": 2}},
    }
    async with hub.db.transaction() as session:  # receipts arrive for both messages
        await session.execute(update(Delivery).where(Delivery.endpoint_id == 1).values(state="delivered"))
    assert _totals(await queries.dashboard(hub, OFFICES)) == {
        "sending": {2: {"delivered": 1, "queued": 1}},  # counted again
        "done": {1: {"sent": 2}},  # as counted at the last view, for count_refresh_seconds
    }
    await hub.redis.delete(f"{hub.settings.redis.key_prefix}:console:progress:1")  # the minute passed
    assert _totals(await queries.dashboard(hub, OFFICES))["done"] == {1: {"delivered": 1, "sent": 1}}
