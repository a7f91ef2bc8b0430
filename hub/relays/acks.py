"""Recording that a relay passed a message on: taken only from the relay's own chat, once.

Every way a relay confirms (a button, a reaction, ``!diteruskan KODE``, ``OK KODE``, the email link)
ends in ``acknowledge``. It changes nothing, and says why, when the code is forged (``codes.read_code``
fails before this is reached), when the delivery it names went to another chat (a code copied into
another group), when the relay never received that message (the delivery was not sent), or when the
confirmation was already recorded (a replay, a second press): only a means still unsaid is added then.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from sqlalchemy import and_, select
from sqlalchemy.exc import IntegrityError

from hub.clock import utcnow
from hub.context import Hub
from hub.logs import log
from hub.privacy import mask
from hub.store.models import Delivery, Endpoint, Message, RelayAck

Outcome = Literal["confirmed", "means", "already", "refused"]
#: Messages a relay is asked to pass on.
RELAYED_KINDS = ("announcement", "correction")
#: A delivery the relay received (or that left the hub for it).
RECEIVED = ("sent", "delivered", "read")


@dataclass(frozen=True)
class Acked:
    outcome: Outcome
    delivery_id: int | None = None
    means: str | None = None


async def acknowledge(
    hub: Hub,
    delivery_id: int,
    *,
    channel: str,
    address: str | None,
    sender: str,
    via: str,
    means: str | None = None,
) -> Acked:
    """Record that the relay of ``delivery_id`` passed its message on; ``address`` None: a signed link."""
    for attempt in (1, 2):
        try:
            result = await _acknowledge(hub, delivery_id, channel, address, sender, via, means)
        except IntegrityError:  # the reconciler made the row at the same moment: read it again
            if attempt == 2:
                raise
            continue
        log.info("relay_ack", delivery_id=delivery_id, channel=channel, outcome=result.outcome, via=via)
        return result
    raise AssertionError("unreachable")


async def _acknowledge(
    hub: Hub,
    delivery_id: int,
    channel: str,
    address: str | None,
    sender: str,
    via: str,
    means: str | None,
) -> Acked:
    now = utcnow()
    async with hub.db.transaction() as session:
        row = (
            await session.execute(
                select(Delivery, Endpoint, Message)
                .join(Endpoint, Endpoint.id == Delivery.endpoint_id)
                .join(Message, Message.id == Delivery.message_id)
                .where(Delivery.id == delivery_id)
            )
        ).first()
        if row is None:
            return Acked("refused")
        delivery, endpoint, message = row
        if (
            endpoint.channel != channel
            or (address is not None and endpoint.address != address)
            or endpoint.relay_office_id is None
            or message.kind not in RELAYED_KINDS
            or delivery.state not in RECEIVED
        ):
            return Acked("refused")
        ack = await session.scalar(
            select(RelayAck).where(RelayAck.message_id == message.id, RelayAck.endpoint_id == endpoint.id)
        )
        if ack is not None and ack.confirmed_at is not None:
            if means and ack.means is None:
                ack.means = means
                return Acked("means", delivery_id, means)
            return Acked("already", delivery_id, ack.means)
        if ack is None:
            ack = RelayAck(
                message_id=message.id,
                endpoint_id=endpoint.id,
                delivery_id=delivery.id,
                announcement_id=message.announcement_id,
                office_id=endpoint.relay_office_id,
            )
            session.add(ack)
        ack.confirmed_at, ack.means, ack.confirmed_via = now, means, via
        ack.confirmed_by = mask(sender, hub.channels.get(channel)) if sender else None
        await session.flush()
    return Acked("confirmed", delivery_id, means)


async def delivery_of_event(hub: Hub, channel: str, address: str, event_id: str) -> int | None:
    """The delivery a reaction on ``event_id`` confirms: the broadcast itself, or its reminder."""
    if not event_id:
        return None
    async with hub.db.session() as session:
        found = (
            await session.execute(
                select(Delivery.id, Delivery.message_id, Delivery.endpoint_id, Message.kind)
                .join(Endpoint, Endpoint.id == Delivery.endpoint_id)
                .join(Message, Message.id == Delivery.message_id)
                .where(
                    Delivery.provider_id == event_id,
                    Delivery.channel == channel,
                    Endpoint.address == address,
                )
            )
        ).first()
        if found is None:
            return None
        if found.kind in RELAYED_KINDS:
            return int(found.id)
        # A reaction to the reminder confirms the broadcast the reminder is about.
        return await session.scalar(
            select(RelayAck.delivery_id).where(
                and_(
                    RelayAck.reminder_message_id == found.message_id,
                    RelayAck.endpoint_id == found.endpoint_id,
                )
            )
        )
