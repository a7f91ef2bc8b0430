"""Subscribers, endpoints and subscriptions: double opt-in, confirm, unsubscribe, erase.

A subscriber holds a locale and nothing else personal; an endpoint holds the one address needed to send.

Links never revive what a citizen ended: a confirmation link works for ``CONFIRM_LINK_MAX_AGE`` and only
if nothing changed since it was made (the endpoint's and the subscription's ``state_changed_at``); an
unsubscribe link works for ``UNSUBSCRIBE_LINK_MAX_AGE``. A public form is no way to mail-bomb an address
(``CONFIRMATIONS_PER_ADDRESS``), nor to make the hub mail a bounced or complaining address again: such an
endpoint stays inactive until its owner opens a fresh confirmation link.
"""

from __future__ import annotations

import csv
import html
import io
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from channels.base import InvalidAddress
from hub import delivery, signing
from hub.clock import utcnow
from hub.context import Hub
from hub.errors import InvalidInput
from hub.logs import log
from hub.privacy import mask
from hub.store.models import Endpoint, Message, MessageTopic, Office, Subscriber, Subscription, Topic

#: A confirmation link works this long after it was sent; after that the citizen subscribes again and
#: gets a new one. Links made before links carried a time cannot confirm at all.
CONFIRM_LINK_MAX_AGE = timedelta(days=7)
#: An unsubscribe link works this long after it was sent (links made before links carried a time: after
#: their message was made). Long, because citizens leave from old emails; bounded, so a forwarded or leaked
#: link is not good forever. Every later email carries a fresh one, and the bots' commands always work.
UNSUBSCRIBE_LINK_MAX_AGE = timedelta(days=180)
#: Confirmation messages sent to one address per ``CONFIRMATION_WINDOW``, however many times and by
#: whomever it is subscribed; further requests are recorded but send nothing. Counted in Redis, shared by
#: every process. The per-client limit of the public route lives in ``hub.api``.
CONFIRMATIONS_PER_ADDRESS = 3
CONFIRMATION_WINDOW = timedelta(hours=24)


class SubscriptionError(InvalidInput):
    """Bad subscription input; the message names what is wrong."""


class LinkExpired(SubscriptionError):
    """A genuine link that may no longer act: too old (``expired``), or made before a later change of the
    address or subscription (``superseded``: unsubscribed, bounced, erased). It changed nothing.

    ``html`` is the page to answer, in Bahasa Indonesia and then English: what happened, what to do.
    """

    def __init__(self, purpose: str, why: str = "expired") -> None:
        if (purpose, why) not in LINK_PAGES:
            raise ValueError(f"no page for a {why} {purpose} link")
        what = "has expired" if why == "expired" else "is no longer valid"
        super().__init__(f"this {purpose} link {what}")
        self.purpose, self.why = purpose, why

    @property
    def html(self) -> str:
        return link_page(self.purpose, self.why)


_CONFIRM_DAYS = CONFIRM_LINK_MAX_AGE.days
_UNSUBSCRIBE_DAYS = UNSUBSCRIBE_LINK_MAX_AGE.days
_SUBSCRIBE_AGAIN = {
    "id": "Untuk berlangganan, daftarkan alamat email Anda sekali lagi, lalu buka tautan dalam email "
    "konfirmasi yang baru.",
    "en": "To subscribe, enter your email address again and open the link in the new confirmation email.",
}
#: (purpose, why) -> locale -> (heading, text). Bahasa Indonesia first on the page, English second.
LINK_PAGES: dict[tuple[str, str], dict[str, tuple[str, str]]] = {
    ("confirm", "expired"): {
        "id": (
            "Tautan konfirmasi sudah kedaluwarsa",
            f"Tautan konfirmasi hanya berlaku {_CONFIRM_DAYS} hari setelah dikirim. Langganan Anda belum "
            f"aktif. {_SUBSCRIBE_AGAIN['id']}",
        ),
        "en": (
            "This confirmation link has expired",
            f"Confirmation links are valid for {_CONFIRM_DAYS} days after they are sent. Your subscription "
            f"is not active. {_SUBSCRIBE_AGAIN['en']}",
        ),
    },
    ("confirm", "superseded"): {
        "id": (
            "Tautan konfirmasi sudah tidak berlaku",
            "Langganan Anda berubah setelah tautan ini dikirim (misalnya Anda berhenti berlangganan, "
            "menghapus data Anda, atau email tidak dapat terkirim ke alamat ini), jadi tautan ini tidak "
            f"mengubah apa pun. {_SUBSCRIBE_AGAIN['id']}",
        ),
        "en": (
            "This confirmation link is no longer valid",
            "Your subscription changed after this link was sent (for example, you unsubscribed, erased "
            "your data, or email to this address could not be delivered), so this link changed nothing. "
            f"{_SUBSCRIBE_AGAIN['en']}",
        ),
    },
    ("unsubscribe", "expired"): {
        "id": (
            "Tautan berhenti berlangganan sudah kedaluwarsa",
            f"Tautan ini hanya berlaku {_UNSUBSCRIBE_DAYS} hari setelah pesannya dikirim, jadi tidak ada "
            'yang diubah. Untuk berhenti berlangganan, buka tautan "Berhenti berlangganan" di bagian '
            "bawah email terbaru dari kami.",
        ),
        "en": (
            "This unsubscribe link has expired",
            f"This link is valid for {_UNSUBSCRIBE_DAYS} days after its message was sent, so nothing was "
            'changed. To unsubscribe, open the "Unsubscribe" link at the bottom of our most recent '
            "email.",
        ),
    },
}


def link_page(purpose: str, why: str) -> str:
    """The body of the page an unusable link answers (``LinkExpired``)."""
    return "".join(
        f'<h1 lang="{locale}">{html.escape(heading)}</h1><p lang="{locale}">{html.escape(text)}</p>'
        for locale, (heading, text) in LINK_PAGES[(purpose, why)].items()
    )


@dataclass
class SubscribeResult:
    subscription_id: int
    endpoint_id: int
    state: str
    confirmation_message_id: int | None = None
    #: A confirmation was due but this address had all ``CONFIRMATIONS_PER_ADDRESS`` of the window.
    confirmation_limited: bool = False


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
        endpoint.state_changed_at = utcnow()
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
    """Subscribe an address to a topic; unless ``confirmed``, ask the address to confirm (double opt-in).

    A deactivated endpoint (bounced, complained, blocked) stays inactive, even when ``confirmed``: it is
    sent one confirmation, and only opening that link makes the hub write to it again. At most
    ``CONFIRMATIONS_PER_ADDRESS`` confirmations per address per window go out; further requests are
    recorded (``confirmation_limited``) and the answer does not tell the asker which happened. On a
    channel with ``Capabilities.opt_in_by_message`` the subscription stays pending and nothing is sent:
    the citizen's own subscribe command confirms it.
    """
    address = normalize(hub, channel, address)
    if locale not in hub.settings.hub.locales:
        raise SubscriptionError(
            f"locale must be one of {', '.join(hub.settings.hub.locales)}, not {locale!r}"
        )
    if opt_in_by_message(hub, channel):  # only the citizen's own message may confirm, nothing is sent
        confirmed = send_confirmation = False
    async with hub.db.transaction() as session:
        topic = await topic_by_slug(session, topic_slug)
        endpoint = await endpoint_for(session, channel, address, kind=kind, locale=locale, reactivate=False)
        subscription = await set_state(
            session, topic.id, endpoint.id, "confirmed" if confirmed else "pending"
        )
        result = SubscribeResult(subscription.id, endpoint.id, subscription.state)
        office = await session.get(Office, topic.office_id)
        topic_name, topic_id = topic.name, topic.id
        ask = subscription.state == "pending" or not endpoint.active
    if ask and send_confirmation:
        if await _may_ask(hub, channel, address):
            result.confirmation_message_id = await _ask_confirmation(
                hub, office, topic_id, topic_name, [endpoint.id], channel, locale
            )
        else:
            result.confirmation_limited = True
            log.info(
                "confirmation_limited",
                channel=channel,
                address=mask(address, hub.channels.get(channel)),
                limit=CONFIRMATIONS_PER_ADDRESS,
            )
    return result


_COUNT = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return n
"""


async def _may_ask(hub: Hub, channel: str, address: str) -> bool:
    """Count one more confirmation for this address; False once the window's allowance is spent.

    One atomic INCR (with the window's expiry set by the first) in Redis, so every process shares the
    count and concurrent requests cannot all slip through. The key holds a keyed hash of the address,
    never the address. Without Redis (a hub built without one) there is no queue to send with either.
    """
    if hub.redis is None:
        return True
    name = signing.digest(hub.secret, f"confirm-limit:{channel}:{address}")[:32]
    key = f"{hub.settings.redis.key_prefix}:confirm-limit:{name}"
    window_ms = int(CONFIRMATION_WINDOW.total_seconds() * 1000)
    count = int(await hub.redis.eval(_COUNT, 1, key, window_ms))
    return count <= CONFIRMATIONS_PER_ADDRESS


def opt_in_by_message(hub: Hub, channel: str) -> bool:
    """The channel's provider forbids writing first to anyone who has not written (``Capabilities``)."""
    adapter = hub.channels.get(channel)
    return bool(adapter is not None and adapter.capabilities.opt_in_by_message)


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
        # Asking again while pending is no change: the confirmation links already sent stay good.
        if subscription.state != wanted:
            subscription.state_changed_at = now
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
    """Confirm what a confirmation link asked for; returns how many subscriptions it confirmed now.

    Only a link newer than every later choice acts: one made before the endpoint was deactivated
    (bounced, complained, blocked), erased, or before the subscription was left or asked for again,
    confirms nothing and raises ``LinkExpired("confirm", "superseded")``; an expired or undated link
    raises ``LinkExpired("confirm")``. Opening a link twice (or a mail scanner first) is harmless: a
    subscription already confirmed counts as done, and nothing changes.
    """
    signed = _read_link(hub, "confirm", token, CONFIRM_LINK_MAX_AGE)
    if signed.issued_at is None:
        raise LinkExpired("confirm")  # made before links carried a time: no telling what changed since
    endpoint_id, message_id = _ids(signed, 2)
    issued = signed.issued_at
    async with hub.db.transaction() as session:
        endpoint = await session.get(Endpoint, endpoint_id, populate_existing=True)
        if endpoint is None:
            raise LinkExpired("confirm", "superseded")  # erased (or never there)
        fresh = not _later(endpoint.state_changed_at, issued)
        if not endpoint.active and not fresh:
            raise LinkExpired("confirm", "superseded")
        topic_ids = await _message_topics(session, message_id)
        rows = await session.scalars(
            select(Subscription)
            .where(Subscription.endpoint_id == endpoint_id, Subscription.topic_id.in_(topic_ids))
            .execution_options(populate_existing=True)
        )
        now, confirmed, standing = utcnow(), 0, 0
        for subscription in rows:
            if (
                fresh
                and subscription.state == "pending"
                and not _later(subscription.state_changed_at, issued)
            ):
                subscription.state, subscription.updated_at = "confirmed", now
                subscription.state_changed_at = now
                confirmed += 1
            standing += subscription.state == "confirmed"
        if not standing:
            raise LinkExpired("confirm", "superseded")
        if not endpoint.active:
            endpoint.active, endpoint.deactivated_reason, endpoint.state_changed_at = True, None, now
    return confirmed


def _later(changed: datetime | None, issued: datetime) -> bool:
    """Whether a change happened after a link was made, to the link's millisecond."""
    if changed is None:
        return False
    return changed.replace(microsecond=changed.microsecond // 1000 * 1000) > issued


async def unsubscribe_link(hub: Hub, token: str) -> int:
    """One-click unsubscribe: leave the topic through which the message reached this endpoint.

    A link names that topic (recorded on the delivery at fan-out): unsubscribing from a province-wide
    broadcast leaves the one topic it came through, not the citizen's other topics of their own office.
    Links made before topics were recorded name none and leave every topic the message was sent for.
    A link works ``UNSUBSCRIBE_LINK_MAX_AGE`` after it was made (one made before links carried a time:
    after its message was made, while the message is still known); then ``LinkExpired``.
    """
    signed = _read_link(hub, "unsubscribe", token, UNSUBSCRIBE_LINK_MAX_AGE)
    values = _ids(signed, 2, 3)
    endpoint_id, message_id = values[0], values[1]
    async with hub.db.transaction() as session:
        if signed.issued_at is None:
            message = await session.get(Message, message_id)
            if message is not None and utcnow() - message.created_at > UNSUBSCRIBE_LINK_MAX_AGE:
                raise LinkExpired("unsubscribe")
        else:
            endpoint = await session.get(Endpoint, endpoint_id)
            if endpoint is not None and _later(endpoint.created_at, signed.issued_at):
                # The id was given to another address after this link was made (SQLite reuses the
                # highest id once its row is erased): the link's owner is gone, this one stays.
                raise LinkExpired("unsubscribe")
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
    now = utcnow()
    result = await session.execute(query.values(state="unsubscribed", updated_at=now, state_changed_at=now))
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


def _read_link(hub: Hub, purpose: str, token: str, max_age: timedelta) -> signing.Signed:
    """A genuine link's token; ``LinkExpired`` when too old, ``SubscriptionError`` when not genuine."""
    for key in hub.verification_keys:  # links made before a `hub secret rotate` verify with previous keys
        try:
            return signing.read(key, purpose, token, max_age=max_age)
        except signing.Expired:
            raise LinkExpired(purpose) from None
        except signing.BadToken:
            continue
    raise SubscriptionError("this link is not valid")


def _ids(signed: signing.Signed, *counts: int) -> list[int]:
    """The token's values as ids, if there are as many as the link kind has."""
    if len(signed.values) not in counts or not all(v.isdigit() and len(v) < 19 for v in signed.values):
        raise SubscriptionError("this link is not valid")
    return [int(v) for v in signed.values]


async def import_csv(
    hub: Hub, text: str, topic_slug: str, channel: str = "email", *, confirmed: bool = False
) -> dict[str, int]:
    """Import addresses (column ``email``, ``address`` or ``phone``, optional ``locale``); all rows or none.

    Every bad row is reported with its line number (``ImportRejected``) and then nothing is imported.
    Unconfirmed imports get one confirmation message with a personal link each; on a channel whose
    provider lets the hub write only to people who wrote first (``Capabilities.opt_in_by_message``) every
    import stays pending and nothing is sent. Kinds come from the adapter: a Telegram chat id below zero
    is a group, not a person.
    """
    adapter = hub.channel(channel)
    rows, problems = _read_rows(hub, adapter, text)
    if problems:
        raise ImportRejected(problems)
    waits = opt_in_by_message(hub, channel)
    confirmed = confirmed and not waits  # only the citizen's own message may confirm, nothing is sent
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
    for locale, endpoint_ids in pending_by_locale.items() if not waits else ():
        await _ask_confirmation(hub, office, topic_id, topic_name, endpoint_ids, channel, locale)
    from hub.subscriptions_bulk import analyze_after_import

    await analyze_after_import(hub, len(rows))
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
    if len({address for address, _ in rows}) == len(rows):  # the usual case: a few statements in all
        from hub.subscriptions_bulk import subscribe_chunk

        return await subscribe_chunk(session, adapter, channel, topic_id, rows, confirmed, pending_by_locale)
    return await _import_row_by_row(session, adapter, channel, topic_id, rows, confirmed, pending_by_locale)


async def _import_row_by_row(
    session: Any,
    adapter: Any,
    channel: str,
    topic_id: int,
    rows: list[tuple[str, str]],
    confirmed: bool,
    pending_by_locale: dict[str, list[int]],
) -> dict[str, int]:
    """A chunk naming an address twice: row after row, each seeing what the rows before it made."""
    counts = {"new": 0, "already_confirmed": 0}
    for address, locale in rows:
        kind = adapter.address_kind(address)
        # An import never revives a bounced or complaining address: it is asked to confirm, like a
        # citizen subscribing again (see ``subscribe``).
        endpoint = await endpoint_for(session, channel, address, kind=kind, locale=locale, reactivate=False)
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
        if subscription.state == "pending" or not endpoint.active:
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
