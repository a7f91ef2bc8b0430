"""A citizen's rights over what the hub holds on them (UU 27/2022): see it, take it, erase it.

What is held on an address: its endpoint (channel, address, kind, locale, when it came), its subscriber
(a locale), its subscriptions, the cases it is linked to, and the deliveries made to it. ``held`` reads
all of it for ``/dataku`` and ``hub citizens export``; ``erase_endpoint`` removes all of it: the
endpoint, the subscriber when no other endpoint is theirs, subscriptions, case links, the bot's replies
to that chat (their texts were for that chat alone), and every delivery row, whose per-message counts
are kept (``hub.delivery.retention.keep_counts``) so that a message's totals do not change.

An erasure asked in a chat (``/hapus``, ``HAPUS``, ``!hapus``) must be confirmed in that chat, and a
reply needs the address until it is sent: ``request_erasure`` ends the subscriptions and case links at
once and records the request, the reply goes out like any other, and the reconciler
(``finish_erasures``) erases the rest once the reply is settled (sent, failed or skipped), or after
``ERASE_GRACE`` whatever became of it. Staff acting on a letter (``erase``) erase at once.

Every export and erasure is recorded in ``citizen_requests``: who asked, what, when; the address only as
an HMAC and a mask, never in clear.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from channels.base import InvalidAddress
from hub import signing
from hub.clock import utcnow
from hub.context import Hub
from hub.delivery.retention import keep_counts
from hub.delivery.states import PENDING, State, deliveries
from hub.logs import log
from hub.privacy import mask
from hub.store.models import (
    ApplicantCase,
    CaseEndpoint,
    CitizenRequest,
    Endpoint,
    Message,
    MessageEndpoint,
    Subscriber,
    Subscription,
    Topic,
)

#: An erasure asked in a chat happens this long after the request at the latest, reply sent or not.
ERASE_GRACE = timedelta(minutes=15)
#: What an erasure counts: endpoints, subscriptions and case links deleted, the bot's replies to the chat
#: deleted whole, and delivery rows deleted (their per-message counts kept).
COUNTED = ("endpoints", "subscriptions", "case_links", "replies", "deliveries")
#: Deliveries still waiting when their address is erased are counted as skipped: they will never go.
_UNSENT = (*PENDING, State.SENDING.value)


# ---------------------------------------------------------------------------------------------------------
# Finding an address


def _candidates(hub: Hub, address: str, channel: str | None) -> list[tuple[str | None, str]]:
    """``(channel, address)`` pairs the address may be stored as: each enabled adapter's normal form."""
    raw = address.strip()
    pairs: list[tuple[str | None, str]] = [(channel, raw)]
    for name, adapter in hub.channels.items():
        if channel is not None and name != channel:
            continue
        try:
            pairs.append((name, adapter.normalize_address(raw)))
        except (InvalidAddress, ValueError):
            continue
    return pairs


async def find(session: AsyncSession, hub: Hub, address: str, channel: str | None = None) -> list[Endpoint]:
    """Every endpoint stored for ``address`` (on ``channel`` only, when given), oldest first."""
    conditions = [
        and_(Endpoint.address == a, Endpoint.channel == c) if c else Endpoint.address == a
        for c, a in _candidates(hub, address, channel)
    ]
    rows = await session.scalars(select(Endpoint).where(or_(*conditions)).order_by(Endpoint.id))
    return list(rows)


# ---------------------------------------------------------------------------------------------------------
# What is held


async def held(session: AsyncSession, endpoint: Endpoint) -> dict[str, Any]:
    """Everything held on one endpoint; times are naive UTC ``datetime`` values."""
    locale = await session.scalar(select(Subscriber.locale).where(Subscriber.id == endpoint.subscriber_id))
    subs = await session.execute(
        select(Topic.slug, Topic.name, Topic.office_id, Subscription.state, Subscription.created_at)
        .join(Topic, Topic.id == Subscription.topic_id)
        .where(Subscription.endpoint_id == endpoint.id)
        .order_by(Topic.slug)
    )
    cases = await session.execute(
        select(
            ApplicantCase.office_id,
            ApplicantCase.reference,
            ApplicantCase.document,
            ApplicantCase.status,
            ApplicantCase.created_at,
        )
        .join(CaseEndpoint, CaseEndpoint.case_id == ApplicantCase.id)
        .where(CaseEndpoint.endpoint_id == endpoint.id)
        .order_by(ApplicantCase.created_at, ApplicantCase.id)
    )
    sent = await session.execute(
        select(
            Message.kind,
            deliveries.c.state,
            func.count(),
            func.min(deliveries.c.sent_at),
            func.max(deliveries.c.sent_at),
        )
        .join(Message, Message.id == deliveries.c.message_id)
        .where(deliveries.c.endpoint_id == endpoint.id)
        .group_by(Message.kind, deliveries.c.state)
    )
    states: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    first: datetime | None = None
    last: datetime | None = None
    for kind, state, count, low, high in sent.all():
        states[state] += count
        kinds[kind] += count
        first = low if first is None or (low is not None and low < first) else first
        last = high if last is None or (high is not None and high > last) else last
    return {
        "channel": endpoint.channel,
        "address": endpoint.address,
        "kind": endpoint.kind,
        "locale": locale,
        "active": endpoint.active,
        "deactivated_reason": endpoint.deactivated_reason,
        "created_at": endpoint.created_at,
        "subscriptions": [
            {"topic": slug, "topic_name": name, "office": office, "state": state, "created_at": created}
            for slug, name, office, state, created in subs.all()
        ],
        "cases": [
            {"office": office, "reference": ref, "document": doc, "status": status, "created_at": created}
            for office, ref, doc, status, created in cases.all()
        ],
        "deliveries": {
            "total": sum(states.values()),
            "states": dict(sorted(states.items())),
            "kinds": dict(sorted(kinds.items())),
            "first_sent_at": first,
            "last_sent_at": last,
        },
    }


def _json_times(value: Any) -> Any:
    """Times as ISO 8601 UTC (``...Z``), as ``hub status`` gives them."""
    if isinstance(value, datetime):
        return value.isoformat() + "Z"
    if isinstance(value, dict):
        return {k: _json_times(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_times(v) for v in value]
    return value


# ---------------------------------------------------------------------------------------------------------
# The record of requests


def address_hash(hub: Hub, channel: str | None, address: str) -> str:
    """An HMAC of the address: the same address gives the same value, nothing gives the address back."""
    return signing.digest(hub.secret, f"citizen-address:{channel or ''}:{address}")


def _masked(hub: Hub, channel: str | None, address: str) -> str:
    return mask(address, hub.channels.get(channel) if channel else None)[:64]


def _request(
    hub: Hub, action: str, actor: str, channel: str | None, address: str, **values: Any
) -> CitizenRequest:
    return CitizenRequest(
        action=action,
        actor=actor[:200],
        channel=channel,
        address_hash=address_hash(hub, channel, address),
        address_mask=_masked(hub, channel, address),
        **values,
    )


def _subject(endpoints: list[Endpoint], channel: str | None, address: str) -> tuple[str | None, str]:
    """The channel and address a request is recorded under: the endpoint's, else as asked."""
    if endpoints:
        return endpoints[0].channel, endpoints[0].address
    return channel, address.strip()


# ---------------------------------------------------------------------------------------------------------
# Export (staff, on a letter)


async def export(hub: Hub, address: str, channel: str | None = None, *, actor: str) -> dict[str, Any]:
    """Everything held on ``address`` as JSON-ready data; the export is recorded (the record is the log:
    the CLI prints its JSON to standard output, where log lines would spoil it)."""
    async with hub.db.transaction() as session:
        endpoints = await find(session, hub, address, channel)
        data = {"endpoints": [_json_times(await held(session, e)) for e in endpoints]}
        now = utcnow()
        on, at = _subject(endpoints, channel, address)
        session.add(
            _request(
                hub,
                "export",
                actor,
                on,
                at,
                detail={"endpoints": len(endpoints)},
                requested_at=now,
                done_at=now,
            )
        )
    return data


# ---------------------------------------------------------------------------------------------------------
# Erasure


async def erase_endpoint(session: AsyncSession, endpoint_id: int) -> dict[str, int]:
    """Erase one endpoint and all that hangs on it; counts of what went. Per-message counts are kept."""
    endpoint = await session.get(Endpoint, endpoint_id)
    if endpoint is None:
        return dict.fromkeys(COUNTED, 0)
    subscriber_id = endpoint.subscriber_id
    # The bot's replies to this chat: said to this chat alone, they go whole (texts and all).
    replies = (
        select(MessageEndpoint.message_id)
        .join(Message, Message.id == MessageEndpoint.message_id)
        .where(MessageEndpoint.endpoint_id == endpoint_id, Message.kind == "reply")
    )
    reply_ids = list((await session.execute(replies)).scalars())
    if reply_ids:
        await session.execute(delete(Message).where(Message.id.in_(reply_ids)))
    gone = (
        await session.execute(
            delete(deliveries)
            .where(deliveries.c.endpoint_id == endpoint_id)
            .returning(deliveries.c.message_id, deliveries.c.channel, deliveries.c.state)
        )
    ).all()
    await keep_counts(session, ((m, c, State.SKIPPED.value if s in _UNSENT else s) for m, c, s in gone))
    await session.execute(delete(MessageEndpoint).where(MessageEndpoint.endpoint_id == endpoint_id))
    links = await session.execute(delete(CaseEndpoint).where(CaseEndpoint.endpoint_id == endpoint_id))
    subs = await session.execute(delete(Subscription).where(Subscription.endpoint_id == endpoint_id))
    await session.execute(delete(Endpoint).where(Endpoint.id == endpoint_id))
    if (
        await session.scalar(select(Endpoint.id).where(Endpoint.subscriber_id == subscriber_id).limit(1))
        is None
    ):
        await session.execute(delete(Subscriber).where(Subscriber.id == subscriber_id))
    # Any erasure still waiting for this endpoint is done by this one.
    await session.execute(
        update(CitizenRequest)
        .where(CitizenRequest.endpoint_id == endpoint_id, CitizenRequest.done_at.is_(None))
        .values(endpoint_id=None, done_at=utcnow())
    )
    return {
        "endpoints": 1,
        "subscriptions": int(subs.rowcount or 0),
        "case_links": int(links.rowcount or 0),
        "replies": len(reply_ids),
        "deliveries": len(gone),
    }


async def erase(hub: Hub, address: str, channel: str | None = None, *, actor: str) -> dict[str, int]:
    """Erase everything held on ``address`` now (staff acting on a letter); the erasure is recorded."""
    totals: Counter[str] = Counter(dict.fromkeys(COUNTED, 0))
    async with hub.db.transaction() as session:
        endpoints = await find(session, hub, address, channel)
        on, at = _subject(endpoints, channel, address)
        channels = sorted({e.channel for e in endpoints})
        for endpoint_id in [e.id for e in endpoints]:
            totals.update(await erase_endpoint(session, endpoint_id))
        now = utcnow()
        session.add(
            _request(
                hub,
                "erase",
                actor,
                on,
                at,
                detail={**totals, "channels": channels},
                requested_at=now,
                done_at=now,
            )
        )
    return dict(totals)


async def request_erasure(hub: Hub, endpoint: Endpoint, *, actor: str = "citizen") -> int:
    """A chat asked to be erased: nothing more is sent to it but replies; the rest once they went out.

    Subscriptions and case links end now, and deliveries still waiting (an announcement, an update)
    are skipped; the endpoint itself stays until ``finish_erasures`` finds the confirmation reply
    settled. Returns the request's id (``reply_sent_with`` names the reply).
    """
    now = utcnow()
    async with hub.db.transaction() as session:
        subs = await session.execute(delete(Subscription).where(Subscription.endpoint_id == endpoint.id))
        links = await session.execute(delete(CaseEndpoint).where(CaseEndpoint.endpoint_id == endpoint.id))
        waiting = (
            select(deliveries.c.id)
            .join(Message, Message.id == deliveries.c.message_id)
            .where(
                deliveries.c.endpoint_id == endpoint.id,
                deliveries.c.state.in_(PENDING),
                Message.kind != "reply",
            )
        )
        await session.execute(
            update(deliveries)
            .where(deliveries.c.id.in_(waiting))
            .values(
                state=State.SKIPPED.value, error="address erased at the citizen's request", updated_at=now
            )
        )
        ended = {"subscriptions": int(subs.rowcount or 0), "case_links": int(links.rowcount or 0)}
        request = _request(
            hub,
            "erase",
            actor,
            endpoint.channel,
            endpoint.address,
            endpoint_id=endpoint.id,
            detail=ended,
            requested_at=now,
        )
        session.add(request)
        await session.flush()
        request_id = request.id
    log.info(
        "citizen_erasure_requested",
        channel=endpoint.channel,
        address=_masked(hub, endpoint.channel, endpoint.address),
    )
    return request_id


async def reply_sent_with(hub: Hub, request_id: int, message_id: int) -> None:
    """Name the confirmation reply the erasure waits for."""
    async with hub.db.transaction() as session:
        await session.execute(
            update(CitizenRequest).where(CitizenRequest.id == request_id).values(reply_message_id=message_id)
        )


async def _reply_settled(session: AsyncSession, message_id: int, endpoint_id: int) -> bool:
    message = await session.get(Message, message_id)
    if message is None:
        return True
    if message.state in ("scheduled", "planning"):
        return False
    waiting = await session.scalar(
        select(deliveries.c.id)
        .where(
            deliveries.c.message_id == message_id,
            deliveries.c.endpoint_id == endpoint_id,
            deliveries.c.state.in_(_UNSENT),
        )
        .limit(1)
    )
    return waiting is None


async def finish_erasures(hub: Hub, *, now: datetime | None = None) -> int:
    """Erase the endpoints whose erasure waited for its reply, once that reply is settled (or late)."""
    now = now or utcnow()
    async with hub.db.session() as session:
        pending = (
            await session.execute(
                select(
                    CitizenRequest.id,
                    CitizenRequest.endpoint_id,
                    CitizenRequest.reply_message_id,
                    CitizenRequest.requested_at,
                    CitizenRequest.detail,
                )
                .where(CitizenRequest.done_at.is_(None), CitizenRequest.endpoint_id.is_not(None))
                .order_by(CitizenRequest.id)
            )
        ).all()
    done = 0
    for request_id, endpoint_id, message_id, requested_at, asked in pending:
        async with hub.db.transaction() as session:
            late = requested_at < now - ERASE_GRACE
            if not late and (
                message_id is None or not await _reply_settled(session, message_id, endpoint_id)
            ):
                continue
            erased = Counter(await erase_endpoint(session, endpoint_id))
            erased.update(asked or {})  # what the request itself ended (subscriptions, case links)
            await session.execute(
                update(CitizenRequest)
                .where(CitizenRequest.id == request_id)
                .values(endpoint_id=None, done_at=utcnow(), detail=dict(erased))
            )
        done += 1
        log.info("citizen_erased", request_id=request_id, late=late, **erased)
    return done
