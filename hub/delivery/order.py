"""Reply order: the bot's replies reach a chat in the order the citizen's messages came.

Each reply is a message of its own and urgent jobs run concurrently, so two replies to one chat could
overtake each other. The claim holds a reply back while an earlier reply to the same endpoint has not
been sent yet (its fan-out still running, or its delivery queued, being sent or waiting to retry); the
held reply's job is queued again a moment later. Earlier means a lower message id: the bot handles one
chat's messages one at a time (``hub.bot.answer``), so message ids follow the chat's order.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, or_, select, update

from hub.context import Hub
from hub.delivery.states import PENDING, State, deliveries
from hub.store.models import Message, MessageEndpoint

#: How long a held reply waits before its job asks again (the earlier reply is usually sent by then).
HOLD = timedelta(seconds=0.2)


async def hold_back(
    session: Any, replies: Sequence[tuple[int, int, int]], now: datetime
) -> dict[int, datetime]:
    """Of ``(delivery_id, message_id, endpoint_id)`` just claimed, those that must wait: ``{id: until}``."""
    if not replies:
        return {}
    earlier = (
        await session.execute(
            select(
                MessageEndpoint.endpoint_id,
                MessageEndpoint.message_id,
                deliveries.c.next_attempt_at,
            )
            .join(Message, Message.id == MessageEndpoint.message_id)
            .outerjoin(
                deliveries,
                and_(
                    deliveries.c.message_id == MessageEndpoint.message_id,
                    deliveries.c.endpoint_id == MessageEndpoint.endpoint_id,
                ),
            )
            .where(
                MessageEndpoint.endpoint_id.in_({e for _, _, e in replies}),
                MessageEndpoint.message_id < max(m for _, m, _ in replies),
                Message.kind == "reply",
                or_(
                    and_(Message.state == "planning", deliveries.c.id.is_(None)),
                    deliveries.c.state.in_((*PENDING, State.SENDING.value)),
                ),
            )
        )
    ).all()
    held: dict[int, datetime] = {}
    for delivery_id, message_id, endpoint_id in replies:
        waits = [due for e, m, due in earlier if e == endpoint_id and m < message_id]
        if waits:
            # An earlier reply waiting to retry holds this one until its own retry is due.
            held[delivery_id] = max([now, *(d for d in waits if d is not None)]) + HOLD
    return held


async def release_held(session: Any, held: dict[int, datetime], now: datetime, token: str) -> None:
    """Undo the claim ``token`` made of held replies: they stay due, as they were."""
    ids = sorted(held)
    # A claim spends no attempt; a reply never tried is "queued" again, one tried before "retrying".
    for state, tried in (
        (State.QUEUED.value, deliveries.c.attempts == 0),
        (State.RETRYING.value, deliveries.c.attempts > 0),
    ):
        await session.execute(
            update(deliveries)
            .where(deliveries.c.id.in_(ids), deliveries.c.claim == token, tried)
            .values(state=state, claim=None, updated_at=now)
        )


async def requeue_held(hub: Hub, held: dict[int, datetime], where: dict[int, tuple[str, str]]) -> None:
    """Queue each held reply's job again for the moment it may go (``where``: id -> (lane, channel))."""
    groups: dict[tuple[str, str, datetime], list[int]] = defaultdict(list)
    for delivery_id, until in held.items():
        lane, channel = where[delivery_id]
        groups[(lane, channel, until)].append(delivery_id)
    for (lane, channel, until), ids in groups.items():
        await hub.queue.send(lane, channel, ids, at=until)
