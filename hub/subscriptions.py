"""Subscribers, endpoints and subscriptions: double opt-in, confirm, unsubscribe, erase.

A subscriber holds a locale and nothing else personal; an endpoint holds the one address needed to send.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from channels.base import InvalidAddress
from hub import delivery, signing
from hub.clock import utcnow
from hub.context import Hub
from hub.errors import InvalidInput
from hub.store.models import Endpoint, Message, MessageTopic, Office, Subscriber, Subscription, Topic


class SubscriptionError(InvalidInput):
    """Bad subscription input; the message names what is wrong."""


@dataclass
class SubscribeResult:
    subscription_id: int
    endpoint_id: int
    state: str
    confirmation_message_id: int | None = None


async def topic_by_slug(session: AsyncSession, slug: str) -> Topic:
    topic = await session.scalar(select(Topic).where(Topic.slug == slug))
    if topic is None:
        raise SubscriptionError(f"unknown topic {slug!r}")
    return topic


def normalize(hub: Hub, channel: str, address: str) -> str:
    try:
        return hub.channel(channel).normalize_address(address)
    except InvalidAddress as exc:
        raise SubscriptionError(str(exc)) from None
    except ValueError as exc:
        raise SubscriptionError(str(exc)) from None


async def endpoint_for(
    session: AsyncSession,
    channel: str,
    address: str,
    *,
    kind: str = "person",
    locale: str = "id",
    reactivate: bool = True,
) -> Endpoint:
    """The endpoint for an address, created with its own subscriber when new.

    A deactivated endpoint (a blocked bot, a bounced mailbox) comes back to life only when its owner asks
    again (``reactivate``), never by itself.
    """
    endpoint = await _endpoint(session, channel, address)
    if endpoint is None:
        # Two first messages from one new citizen may arrive at once: the endpoint is inserted "on
        # conflict do nothing", and the request that loses the race uses the winner's endpoint.
        subscriber = Subscriber(locale=locale)
        session.add(subscriber)
        await session.flush()
        new_id = await session.scalar(
            _insert(session, Endpoint)
            .values(subscriber_id=subscriber.id, channel=channel, address=address, kind=kind, active=True)
            .on_conflict_do_nothing(index_elements=["channel", "address"])
            .returning(Endpoint.id)
        )
        if new_id is None:
            await session.delete(subscriber)
        endpoint = await _endpoint(session, channel, address)
        assert endpoint is not None
    elif reactivate and not endpoint.active:
        endpoint.active, endpoint.deactivated_reason = True, None
    return endpoint


async def _endpoint(session: AsyncSession, channel: str, address: str) -> Endpoint | None:
    return await session.scalar(
        select(Endpoint)
        .where(Endpoint.channel == channel, Endpoint.address == address)
        .execution_options(populate_existing=True)
    )


def _insert(session: AsyncSession, table: Any) -> Any:
    """A dialect ``INSERT`` that knows ``on_conflict_do_nothing``."""
    dialect = session.bind.dialect.name if session.bind is not None else "sqlite"
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)


async def subscribe(
    hub: Hub,
    topic_slug: str,
    channel: str,
    address: str,
    *,
    confirmed: bool = False,
    locale: str = "id",
    kind: str = "person",
    send_confirmation: bool = True,
) -> SubscribeResult:
    """Subscribe an address to a topic; unless ``confirmed``, ask the address to confirm (double opt-in)."""
    address = normalize(hub, channel, address)
    if locale not in hub.settings.hub.locales:
        raise SubscriptionError(
            f"locale must be one of {', '.join(hub.settings.hub.locales)}, not {locale!r}"
        )
    async with hub.db.transaction() as session:
        topic = await topic_by_slug(session, topic_slug)
        endpoint = await endpoint_for(session, channel, address, kind=kind, locale=locale)
        subscription = await set_state(
            session, topic.id, endpoint.id, "confirmed" if confirmed else "pending"
        )
        result = SubscribeResult(subscription.id, endpoint.id, subscription.state)
        office = await session.get(Office, topic.office_id)
        topic_name, topic_id = topic.name, topic.id
    if subscription.state == "pending" and send_confirmation:
        result.confirmation_message_id = await _ask_confirmation(
            hub, office, topic_id, topic_name, [endpoint.id], channel, locale
        )
    return result


async def set_state(session: AsyncSession, topic_id: int, endpoint_id: int, wanted: str) -> Subscription:
    now = utcnow()
    created = await session.scalar(
        _insert(session, Subscription)
        .values(topic_id=topic_id, endpoint_id=endpoint_id, state=wanted, updated_at=now)
        .on_conflict_do_nothing(index_elements=["topic_id", "endpoint_id"])
        .returning(Subscription.id)
    )
    subscription = await session.scalar(
        select(Subscription)
        .where(Subscription.topic_id == topic_id, Subscription.endpoint_id == endpoint_id)
        .execution_options(populate_existing=True)
    )
    assert subscription is not None
    if created is None and (subscription.state != "confirmed" or wanted == "confirmed"):
        subscription.state, subscription.updated_at = wanted, now
    await session.flush()
    return subscription


async def _ask_confirmation(
    hub: Hub,
    office: Office | None,
    topic_id: int,
    topic_name: str,
    endpoint_ids: list[int],
    channel: str,
    locale: str,
) -> int:
    office_ctx = {"id": office.id, "name": office.name, "timezone": office.timezone} if office else {}
    draft = delivery.Draft(
        kind="confirmation",
        lane="urgent",
        group="system",
        template="confirm_subscription",
        context={
            "office": office_ctx,
            "tz": office_ctx.get("timezone", "Asia/Jakarta"),
            "topic_name": topic_name,
        },
        office_id=office.id if office else None,
        topic_ids=[topic_id],
        endpoint_ids=endpoint_ids,
        renditions=[(channel, loc) for loc in hub.settings.hub.locales],
    )
    message = await delivery.create_message(hub, draft)
    await hub.queue.plan_soon(message.id, "urgent")
    return message.id


async def confirm(hub: Hub, token: str) -> int:
    """Confirm what a confirmation link asked for; returns how many subscriptions it confirmed."""
    endpoint_id, message_id = _read(hub, "confirm", token)
    async with hub.db.transaction() as session:
        topic_ids = await _message_topics(session, message_id)
        result = await session.execute(
            update(Subscription)
            .where(
                Subscription.endpoint_id == endpoint_id,
                Subscription.topic_id.in_(topic_ids),
                Subscription.state == "pending",
            )
            .values(state="confirmed", updated_at=utcnow())
        )
        await session.execute(update(Endpoint).where(Endpoint.id == endpoint_id).values(active=True))
    return int(result.rowcount or 0)


async def unsubscribe_link(hub: Hub, token: str) -> int:
    """One-click unsubscribe: leave the topic through which the message reached this endpoint.

    A link names that topic (recorded on the delivery at fan-out): unsubscribing from a province-wide
    broadcast leaves the one topic it came through, not the citizen's other topics of their own office.
    Links made before topics were recorded name none and leave every topic the message was sent for.
    """
    try:
        values = [int(v) for v in signing.verify(hub.secret, "unsubscribe", token)]
    except (signing.BadToken, ValueError):
        raise SubscriptionError("this link is not valid") from None
    if len(values) not in (2, 3):
        raise SubscriptionError("this link is not valid")
    endpoint_id, message_id = values[0], values[1]
    async with hub.db.transaction() as session:
        topic_ids = values[2:] or await _message_topics(session, message_id)
        return await unsubscribe_endpoint(session, endpoint_id, topic_ids)


async def unsubscribe(hub: Hub, channel: str, address: str, topic_slug: str | None = None) -> int:
    address = normalize(hub, channel, address)
    async with hub.db.transaction() as session:
        endpoint = await session.scalar(
            select(Endpoint).where(Endpoint.channel == channel, Endpoint.address == address)
        )
        if endpoint is None:
            return 0
        topic_ids = None
        if topic_slug:
            topic_ids = [(await topic_by_slug(session, topic_slug)).id]
        return await unsubscribe_endpoint(session, endpoint.id, topic_ids)


async def unsubscribe_endpoint(session: AsyncSession, endpoint_id: int, topic_ids: list[int] | None) -> int:
    query = update(Subscription).where(
        Subscription.endpoint_id == endpoint_id, Subscription.state != "unsubscribed"
    )
    if topic_ids is not None:
        query = query.where(Subscription.topic_id.in_(topic_ids))
    result = await session.execute(query.values(state="unsubscribed", updated_at=utcnow()))
    return int(result.rowcount or 0)


async def _message_topics(session: AsyncSession, message_id: int) -> list[int]:
    message = await session.get(Message, message_id)
    if message is None:
        raise SubscriptionError("this link is no longer valid")
    source = message.corrects_message_id or message_id
    return list(
        (
            await session.execute(
                select(MessageTopic.topic_id).where(MessageTopic.message_id.in_([message_id, source]))
            )
        ).scalars()
    )


def _read(hub: Hub, purpose: str, token: str) -> tuple[int, int]:
    try:
        endpoint_id, message_id = (int(v) for v in signing.verify(hub.secret, purpose, token))
    except (signing.BadToken, ValueError):
        raise SubscriptionError("this link is not valid") from None
    return endpoint_id, message_id


async def import_csv(
    hub: Hub, text: str, topic_slug: str, channel: str = "email", *, confirmed: bool = False
) -> dict[str, int]:
    """Import addresses (column ``email``, ``address`` or ``phone``, optional ``locale``); all rows or none.

    Every bad row is reported with its line number (``ImportRejected``) and then nothing is imported.
    Unconfirmed imports get one confirmation message with a personal link each. Kinds come from the
    adapter: a Telegram chat id below zero is a group, not a person.
    """
    adapter = hub.channel(channel)
    rows, problems = _read_rows(hub, adapter, text)
    if problems:
        raise ImportRejected(problems)
    counts = {"rows": len(rows), "new": 0, "already_confirmed": 0}
    pending_by_locale: dict[str, list[int]] = {}
    async with hub.db.session() as session:
        topic = await topic_by_slug(session, topic_slug)
        office = await session.get(Office, topic.office_id)
        topic_id, topic_name = topic.id, topic.name
    # Short transactions (IMPORT_CHUNK rows each): on SQLite a writer holds the one write lock, and a
    # broadcast's outcomes must never wait behind a long import (docs/design.md, "Crashes"). Every row
    # was checked above, so a bad row still imports nothing; a re-run after a crash changes nothing twice.
    for start in range(0, len(rows), IMPORT_CHUNK):
        async with hub.db.transaction() as session:
            counts_chunk = await _import_rows(
                session,
                adapter,
                channel,
                topic_id,
                rows[start : start + IMPORT_CHUNK],
                confirmed,
                pending_by_locale,
            )
        for key, value in counts_chunk.items():
            counts[key] += value
    for locale, endpoint_ids in pending_by_locale.items():
        await _ask_confirmation(hub, office, topic_id, topic_name, endpoint_ids, channel, locale)
    return counts


#: Rows written per transaction by ``import_csv``.
IMPORT_CHUNK = 500


async def _import_rows(
    session: Any,
    adapter: Any,
    channel: str,
    topic_id: int,
    rows: list[tuple[str, str]],
    confirmed: bool,
    pending_by_locale: dict[str, list[int]],
) -> dict[str, int]:
    """Subscribe one chunk of checked rows; ``pending_by_locale`` collects who still has to confirm."""
    counts = {"new": 0, "already_confirmed": 0}
    for address, locale in rows:
        kind = adapter.address_kind(address)
        endpoint = await endpoint_for(session, channel, address, kind=kind, locale=locale)
        before = await session.scalar(
            select(Subscription.state).where(
                Subscription.topic_id == topic_id, Subscription.endpoint_id == endpoint.id
            )
        )
        subscription = await set_state(
            session, topic_id, endpoint.id, "confirmed" if confirmed else "pending"
        )
        counts["new"] += before is None
        counts["already_confirmed"] += before == "confirmed"
        if subscription.state == "pending":
            pending_by_locale.setdefault(locale, []).append(endpoint.id)
    return counts


class ImportRejected(SubscriptionError):
    """A CSV with bad rows; ``problems`` holds one ``line N: what`` per bad row, and nothing was imported."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        head = "1 bad row" if len(problems) == 1 else f"{len(problems)} bad rows"
        super().__init__(f"{head}, nothing imported:\n" + "\n".join(f"  {p}" for p in problems))


def _read_rows(hub: Hub, adapter: Any, text: str) -> tuple[list[tuple[str, str]], list[str]]:
    """Every row normalised, or the list of what is wrong with which line."""
    reader = csv.DictReader(io.StringIO(text))
    column = next((c for c in ("address", "email", "phone") if c in (reader.fieldnames or [])), None)
    if column is None:
        raise SubscriptionError("the CSV needs a header row with an 'email', 'address' or 'phone' column")
    rows: list[tuple[str, str]] = []
    problems: list[str] = []
    for row in reader:
        line = reader.line_num
        raw = (row.get(column) or "").strip()
        locale = (row.get("locale") or hub.settings.hub.default_locale).strip()
        if not raw:
            problems.append(f"line {line}: empty {column}")
            continue
        try:
            address = adapter.normalize_address(raw)
        except (InvalidAddress, ValueError) as exc:
            problems.append(f"line {line}: {exc}")
            continue
        if locale not in hub.settings.hub.locales:
            problems.append(
                f"line {line}: locale {locale!r} is not one of {', '.join(hub.settings.hub.locales)}"
            )
            continue
        rows.append((address, locale))
    return rows, problems


async def erase(hub: Hub, channel: str, address: str) -> bool:
    """Forget everything held on an address (the citizen's right to erasure)."""
    address = normalize(hub, channel, address)
    async with hub.db.transaction() as session:
        endpoint = await session.scalar(
            select(Endpoint).where(Endpoint.channel == channel, Endpoint.address == address)
        )
        if endpoint is None:
            return False
        subscriber_id = endpoint.subscriber_id
        await session.execute(delete(Endpoint).where(Endpoint.id == endpoint.id))
        remaining = await session.scalar(select(Endpoint.id).where(Endpoint.subscriber_id == subscriber_id))
        if remaining is None:
            await session.execute(delete(Subscriber).where(Subscriber.id == subscriber_id))
    return True


async def subscriber_view(hub: Hub, endpoint_id: int) -> dict[str, Any]:
    """What the hub holds on one endpoint, for the citizen to see."""
    async with hub.db.session() as session:
        endpoint = await session.get(Endpoint, endpoint_id)
        if endpoint is None:
            raise SubscriptionError("unknown endpoint")
        rows = await session.execute(
            select(Topic.slug, Subscription.state)
            .join(Topic, Topic.id == Subscription.topic_id)
            .where(Subscription.endpoint_id == endpoint_id)
        )
        return {
            "channel": endpoint.channel,
            "address": endpoint.address,
            "active": endpoint.active,
            "subscriptions": {slug: state for slug, state in rows.all()},
        }
