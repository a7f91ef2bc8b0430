"""Registered relays and what they confirmed, for the CLI, the API and the console alike.

Pausing keeps the relay registered and sends it nothing: ``endpoints.active`` false with the reason
``PAUSED`` (fan-out and sending skip inactive endpoints); resuming undoes only that pause, never a
deactivation by the channel (a blocked bot, a left group). Removing ends its subscriptions to the
office's topics and its relay mark; what it confirmed stays on record.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from hub.clock import local_iso
from hub.context import Hub
from hub.errors import InvalidInput, NotFound
from hub.privacy import mask
from hub.store.models import Announcement, Delivery, Endpoint, Message, Office, RelayAck, Topic
from hub.subscriptions import endpoint_for, set_state, unsubscribe_endpoint

PAUSED = "paused by staff"


@dataclass(frozen=True)
class Relay:
    id: int
    office: str
    channel: str
    address: str
    state: str  # active | paused | inactive
    reason: str | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _relay(hub: Hub, row: Endpoint) -> Relay:
    state = "active" if row.active else "paused" if row.deactivated_reason == PAUSED else "inactive"
    return Relay(
        row.id,
        row.relay_office_id or "",
        row.channel,
        mask(row.address, hub.channels.get(row.channel)),
        state,
        None if row.active else row.deactivated_reason,
    )


async def list_relays(hub: Hub, offices: list[str]) -> list[Relay]:
    async with hub.db.session() as session:
        rows = (
            await session.execute(
                select(Endpoint)
                .where(Endpoint.relay_office_id.in_(offices))
                .order_by(Endpoint.relay_office_id, Endpoint.id)
            )
        ).scalars()
        return [_relay(hub, row) for row in rows]


async def change(hub: Hub, relay_id: int, action: str, offices: frozenset[str] | None = None) -> Relay:
    """``pause``, ``resume`` or ``remove`` a relay of ``offices`` (None: any office, the CLI)."""
    async with hub.db.transaction() as session:
        return await change_in(session, hub, relay_id, action, offices)


async def change_in(
    session: AsyncSession, hub: Hub, relay_id: int, action: str, offices: frozenset[str] | None = None
) -> Relay:
    """``change`` within the caller's transaction (the console records its audit row in the same one)."""
    if action not in ("pause", "resume", "remove"):
        raise InvalidInput(f"action: {action!r} is not pause, resume or remove")
    row = await session.get(Endpoint, relay_id)
    if (
        row is None
        or row.relay_office_id is None
        or (offices is not None and row.relay_office_id not in offices)
    ):
        raise NotFound(f"no relay {relay_id}")
    if action == "pause":
        if row.active:
            row.active, row.deactivated_reason = False, PAUSED
    elif action == "resume":
        if not row.active and row.deactivated_reason != PAUSED:
            raise InvalidInput(
                f"relay {relay_id} was deactivated by its channel ({row.deactivated_reason}); "
                "only a pause can be resumed: register the group again"
            )
        row.active, row.deactivated_reason = True, None
    else:
        topics = list(
            (await session.execute(select(Topic.id).where(Topic.office_id == row.relay_office_id))).scalars()
        )
        await unsubscribe_endpoint(session, row.id, topics)
        relay = _relay(hub, row)
        row.relay_office_id = None
        return Relay(relay.id, relay.office, relay.channel, relay.address, "removed", None)
    await session.flush()
    return _relay(hub, row)


async def register(hub: Hub, office_id: str, channel: str, raw_address: str) -> Relay:
    """Register an address as a relay of ``office_id`` directly (an SMS number, an email address: no
    group to send ``kelurahan KODE`` in), subscribed to the office's general topic."""
    if channel not in hub.channels:
        raise InvalidInput(f"channel: {channel!r} is not enabled")
    adapter = hub.channels[channel]
    try:
        address = adapter.normalize_address(raw_address)
    except ValueError as exc:
        raise InvalidInput(f"address: {exc}") from None
    async with hub.db.transaction() as session:
        if await session.get(Office, office_id) is None:
            raise NotFound(f"unknown office {office_id!r}")
        endpoint = await endpoint_for(session, channel, address, kind=adapter.address_kind(address))
        endpoint.relay_office_id = office_id
        general = await session.scalar(
            select(Topic).where(Topic.office_id == office_id, Topic.service.is_(None))
        )
        if general is not None:
            await set_state(session, general.id, endpoint.id, "confirmed")
        await session.flush()
        return _relay(hub, endpoint)


def _when(value: datetime | None, tz: str) -> str | None:
    return local_iso(value, tz)


async def acks_of(hub: Hub, announcement_id: int, offices: frozenset[str] | None = None) -> dict[str, Any]:
    """Per relay reached by the announcement's messages: confirmed (when, how, by whom) or not,
    reminded, office told. Unknown or another office's announcement: ``NotFound``."""
    async with hub.db.session() as session:
        ann = await session.get(Announcement, announcement_id)
        if ann is None or (offices is not None and ann.office_id not in offices):
            raise NotFound(f"no announcement {announcement_id}")
        office = await session.get(Office, ann.office_id)
        tz = office.timezone if office else "Asia/Jakarta"
        rows = (
            await session.execute(
                select(Delivery, Endpoint, RelayAck)
                .join(Message, Message.id == Delivery.message_id)
                .join(Endpoint, Endpoint.id == Delivery.endpoint_id)
                .outerjoin(
                    RelayAck,
                    (RelayAck.message_id == Delivery.message_id)
                    & (RelayAck.endpoint_id == Delivery.endpoint_id),
                )
                .where(
                    Message.announcement_id == announcement_id,
                    Message.kind.in_(("announcement", "correction")),
                    (Endpoint.relay_office_id.is_not(None)) | (RelayAck.id.is_not(None)),
                )
                .order_by(Delivery.message_id, Endpoint.id)
            )
        ).all()
    relays = []
    for d, e, a in rows:
        relays.append(
            {
                "relay_id": e.id,
                "message_id": d.message_id,
                "channel": e.channel,
                "address": mask(e.address, hub.channels.get(e.channel)),
                "delivery": d.state,
                "sent_at": _when(d.sent_at, tz),
                "confirmed": bool(a and a.confirmed_at),
                "confirmed_at": _when(a.confirmed_at, tz) if a else None,
                "means": a.means if a else None,
                "confirmed_by": a.confirmed_by if a else None,
                "confirmed_via": a.confirmed_via if a else None,
                "reminded_at": _when(a.reminded_at, tz) if a else None,
                "office_told_at": _when(a.office_told_at, tz) if a else None,
            }
        )
    confirmed = sum(r["confirmed"] for r in relays)
    return {
        "announcement_id": announcement_id,
        "office": ann.office_id,
        "total": len(relays),
        "confirmed": confirmed,
        "unconfirmed": len(relays) - confirmed,
        "relays": relays,
    }
