"""Announcements: structured where the offices' changes are, free text where they are not.

An announcement is written once, validated and rendered for every channel and locale before it is
stored; publishing creates a message whose audience is the confirmed subscribers of its topics.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import BaseModel
from sqlalchemy import ColumnElement, and_, func, or_, select, update

from channels.base import Content
from hub import delivery, freshness, kinds
from hub.clock import as_utc, local_iso, to_utc, utcnow
from hub.context import Hub
from hub.errors import Conflict, InvalidInput, NotFound
from hub.regions import offices_under
from hub.render import UNSUBSCRIBE_MARK, Rendered, RenderError
from hub.store.models import (
    Announcement,
    Endpoint,
    Message,
    MessageTopic,
    Office,
    Subscriber,
    Subscription,
    Topic,
)

#: Facts from ``Channel.describe`` that cost per recipient and add up over an audience.
COST_FACTS = ("segments", "parts")


class AnnouncementError(InvalidInput):
    """Bad announcement input; the message names what is wrong."""


class AnnouncementNotFound(NotFound):
    """No such announcement, or another office's (the two look alike)."""


# ---------------------------------------------------------------------------------------------------------
# Creating, previewing, publishing


class AnnouncementInput(BaseModel):
    """What staff write. Times are kept as given, with an offset (``2020-03-23T08:00+08:00``) or without
    one (read in the office's zone, WIB, WITA or WIT); ``prepare`` converts them once."""

    template: str
    data: dict[str, Any] = {}
    topics: list[str] = []
    regions: list[str] = []
    services: list[str] = []
    valid_from: datetime | None = None
    valid_until: datetime | None = None
    publish_at: datetime | None = None


TIMES = ("valid_from", "valid_until", "publish_at")


@dataclass(frozen=True)
class Prepared:
    """A validated announcement: its draft message, data as stored, times in naive UTC."""

    draft: delivery.Draft
    data: dict[str, Any]
    times: dict[str, datetime | None]
    office: dict[str, Any]
    renderings: dict[tuple[str, str], Rendered]
    #: Per language not rendered, the texts it lacks (its readers get the default language's rendering).
    untranslated: dict[str, list[str]] = field(default_factory=dict)


async def resolve_topics(
    hub: Hub, topics: list[str], regions: list[str], services: list[str]
) -> tuple[str, list[int]]:
    """The office the announcement speaks for and the topic ids it reaches.

    A topic reaches its office's general topic plus the service topics the announcement is about (all of
    them when it names none); a region reaches the same for every office below it.
    """
    if not topics and not regions:
        raise AnnouncementError("give at least one topic or region")
    async with hub.db.session() as session:
        office_ids: list[str] = []
        wanted_services = set(services)
        for slug in topics:
            topic = await session.scalar(select(Topic).where(Topic.slug == slug))
            if topic is None:
                raise AnnouncementError(f"unknown topic {slug!r}")
            office_ids.append(topic.office_id)
            if topic.service:
                wanted_services.add(topic.service)
        for code in regions:
            try:
                office_ids.extend(await offices_under(session, code))
            except LookupError:
                raise AnnouncementError(f"unknown region {code!r}") from None
        if not office_ids:
            raise AnnouncementError("no office sits in the given regions")
        query = select(Topic.id).where(Topic.office_id.in_(office_ids))
        if wanted_services:
            query = query.where((Topic.service.is_(None)) | (Topic.service.in_(wanted_services)))
        topic_ids = list((await session.execute(query)).scalars())
    return office_ids[0], topic_ids


async def office_context(hub: Hub, office_id: str) -> dict[str, Any]:
    async with hub.db.session() as session:
        office = await session.get(Office, office_id)
        if office is None:
            raise AnnouncementError(f"unknown office {office_id!r}")
        return {"id": office.id, "name": office.name, "timezone": office.timezone, "profile": office.profile}


def build_context(
    template: str,
    data: dict[str, Any],
    office: dict[str, Any],
    services: list[str],
    valid_from: datetime | None,
    valid_until: datetime | None,
) -> dict[str, Any]:
    context = {
        **data,
        "office": office,
        "tz": office["timezone"],
        "services": services,
        "valid_from": valid_from,
        "valid_until": valid_until,
        "unsubscribable": True,
    }
    links = []
    if template == "link":
        links.append((data["link_name"], data["url"]))
    if data.get("link"):
        links.append((data["link"]["name"], data["link"]["url"]))
    if links:
        context["buttons"] = [
            {"text": {"id": f"Buka {name}", "en": f"Open {name}"}, "url": str(url)} for name, url in links
        ]
    return context


async def prepare(hub: Hub, req: AnnouncementInput) -> Prepared:
    """Validate everything, render every channel and language, check what each costs; store nothing.

    This is the one place where given times become UTC: a time without an offset is the office's.
    """
    if not hub.renderer.exists("announcements", req.template):
        known = ", ".join(hub.renderer.names("announcements"))
        raise AnnouncementError(f"unknown template {req.template!r} (known: {known})")
    locales = list(hub.settings.hub.locales)
    try:
        data, missing = kinds.validate(req.template, req.data, locales)
    except kinds.KindError as exc:
        raise AnnouncementError(str(exc)) from None
    office_id, topic_ids = await resolve_topics(hub, req.topics, req.regions, req.services)
    office = await office_context(hub, office_id)
    times = {name: _utc(getattr(req, name), office["timezone"]) for name in TIMES}
    valid_from, valid_until, publish_at = (times[name] for name in TIMES)
    if valid_from and valid_until and valid_until <= valid_from:
        raise AnnouncementError("valid-until must be after valid-from")
    if valid_until and valid_until <= utcnow():
        raise AnnouncementError("valid-until is already in the past")
    if publish_at and valid_until and publish_at >= valid_until:
        raise AnnouncementError("publish time must be before valid-until")
    default = hub.settings.hub.default_locale
    rendered_locales = [loc for loc in locales if loc == default or loc not in missing]
    context = build_context(req.template, data, office, req.services, valid_from, valid_until)
    draft = delivery.Draft(
        kind="announcement",
        lane="bulk",
        group="announcements",
        template=req.template,
        context=context,
        office_id=office_id,
        topic_ids=topic_ids,
        send_at=publish_at,
        not_after=valid_until,
        renditions=[(ch, loc) for ch in sorted(hub.channels) for loc in rendered_locales],
    )
    try:
        renderings = delivery.render_all(hub, draft)
    except RenderError as exc:
        raise AnnouncementError(str(exc)) from None
    check_costs(hub, renderings)
    untranslated = {loc: fields for loc, fields in missing.items() if loc not in rendered_locales}
    return Prepared(draft, data, times, office, renderings, untranslated)


def _utc(value: datetime | None, tz: str) -> datetime | None:
    return to_utc(value, tz) if value is not None else None


def check_costs(hub: Hub, renderings: dict[tuple[str, str], Rendered]) -> None:
    """Refuse a rendering a channel would refuse to send (an SMS over ``max_segments``) before storing.

    A channel's ``describe`` gives facts such as ``segments`` and, where it has one, the limit
    ``max_segments``; any fact over its ``max_`` limit is an error naming the channel and language.
    """
    for (channel, locale), rendered in sorted(renderings.items()):
        facts = hub.channels[channel].describe(_content(rendered))
        for fact, value in facts.items():
            limit = facts.get(f"max_{fact}")
            if isinstance(value, int) and isinstance(limit, int) and value > limit:
                raise AnnouncementError(
                    f"the {channel} rendering in {locale!r} needs {value} {fact}, more than the {limit} "
                    f"allowed (channels.{channel}.max_{fact}): shorten the announcement"
                )


def _content(rendered: Rendered) -> Content:
    return Content(text=rendered.text, html=rendered.html, subject=rendered.subject)


async def create(
    hub: Hub,
    req: AnnouncementInput,
    *,
    publish: bool,
    created_by: int | None = None,
    created_key_id: int | None = None,
) -> tuple[Announcement, Message | None]:
    """Store an announcement (and publish it at once with ``publish``); the author is a console user
    (``created_by``) or an API key (``created_key_id``), neither for the CLI. The two-person rule is the
    console's and the approval routes' (hub.approvals): this stores or publishes as asked."""
    prepared = await prepare(hub, req)
    async with hub.db.transaction() as session:
        announcement = Announcement(
            office_id=prepared.draft.office_id,
            template=req.template,
            data=prepared.data,
            services=req.services,
            targets={"topics": req.topics, "regions": req.regions},
            state="draft",
            created_by=created_by,
            created_key_id=created_key_id,
            **prepared.times,
        )
        session.add(announcement)
    message = await publish_announcement(hub, announcement.id, prepared.draft) if publish else None
    async with hub.db.session() as session:
        announcement = await session.get(Announcement, announcement.id)  # type: ignore[assignment]
    return announcement, message


async def revise(hub: Hub, announcement_id: int, req: AnnouncementInput) -> Announcement:
    """Change a draft (a sent-back one too, keeping its comment); nothing else may change."""
    prepared = await prepare(hub, req)
    async with hub.db.transaction() as session:
        result = await session.execute(
            update(Announcement)
            .where(Announcement.id == announcement_id, Announcement.state == "draft")
            .values(
                office_id=prepared.draft.office_id,
                template=req.template,
                data=prepared.data,
                services=req.services,
                targets={"topics": req.topics, "regions": req.regions},
                **prepared.times,
            )
        )
    if not result.rowcount:
        raise Conflict(f"announcement {announcement_id} is no longer a draft")
    return await get(hub, announcement_id)


async def publish_announcement(
    hub: Hub, announcement_id: int, draft: delivery.Draft | None = None, *, approved: bool = False
) -> Message:
    """Turn a draft into a message: scheduled when its time is ahead, queued for fan-out otherwise.

    One awaiting approval is published only by its approval (``approved``, hub.approvals.approve).
    """
    expected = "awaiting_approval" if approved else "draft"
    async with hub.db.session() as session:
        announcement = await session.get(Announcement, announcement_id)
        if announcement is None:
            raise AnnouncementError(f"unknown announcement {announcement_id}")
        if announcement.state == "awaiting_approval" and not approved:
            raise Conflict(
                f"announcement {announcement_id} is awaiting approval: another user with the approver "
                "role approves it (or sends it back) in the console or with POST .../approve"
            )
        if announcement.state != expected:
            raise AnnouncementError(f"announcement {announcement_id} is {announcement.state}, not a draft")
    if draft is None:
        draft = (await prepare(hub, input_of(announcement))).draft
    draft = delivery.Draft(**{**draft.__dict__, "announcement_id": announcement_id})
    scheduled = draft.send_at is not None and draft.send_at > utcnow()
    message = await delivery.create_message(hub, draft, state="scheduled" if scheduled else "planning")
    async with hub.db.transaction() as session:
        await session.execute(
            update(Announcement)
            .where(Announcement.id == announcement_id, Announcement.state == expected)
            .values(state="scheduled" if scheduled else "published")
        )
        await freshness.touch(session)
    await hub.queue.plan_soon(message.id, message.lane, at=message.send_at if scheduled else None)
    return message


def input_of(announcement: Announcement) -> AnnouncementInput:
    """A stored announcement as input again; its times are UTC and say so, so they do not move."""
    return AnnouncementInput(
        template=announcement.template,
        data=announcement.data,
        topics=announcement.targets.get("topics", []),
        regions=announcement.targets.get("regions", []),
        services=announcement.services,
        **{name: as_utc(getattr(announcement, name)) for name in TIMES},
    )


async def get(hub: Hub, announcement_id: int) -> Announcement:
    async with hub.db.session() as session:
        announcement = await session.get(Announcement, announcement_id)
    if announcement is None:
        raise AnnouncementError(f"unknown announcement {announcement_id}")
    return announcement


async def read_back(hub: Hub, announcement: Announcement) -> dict[str, Any]:
    """An announcement as the API and ``hub show`` give it: times in the office's zone, with offset."""
    office = await office_context(hub, announcement.office_id)
    async with hub.db.session() as session:
        message_ids = list(
            (
                await session.execute(select(Message.id).where(Message.announcement_id == announcement.id))
            ).scalars()
        )
    return {
        "id": announcement.id,
        "office_id": announcement.office_id,
        "template": announcement.template,
        "data": announcement.data,
        "state": announcement.state,
        "targets": announcement.targets,
        "services": announcement.services,
        **{name: local_iso(getattr(announcement, name), office["timezone"]) for name in TIMES},
        "messages": message_ids,
        "created_by": announcement.created_by,
        "submitted_at": local_iso(announcement.submitted_at, office["timezone"]),
        "approved_by": announcement.approved_by,
        "approved_at": local_iso(announcement.approved_at, office["timezone"]),
        "review_comment": announcement.review_comment,
    }


async def send_time(hub: Hub, message: Message) -> str | None:
    """When a message goes out, in its office's zone (None: at once)."""
    if message.send_at is None or message.office_id is None:
        return None
    return local_iso(message.send_at, (await office_context(hub, message.office_id))["timezone"])


async def preview(
    hub: Hub, req: AnnouncementInput, known: dict[tuple[str, str], int] | None = None
) -> dict[str, Any]:
    """Each channel's rendering per locale, its cost facts, and how many endpoints it would reach.

    Readers of a language the announcement is not written in are counted with the rendering they get.
    ``known``: the audience per (channel, language) when the caller has it (the console's stored
    counts, ``hub.audience``); otherwise it is counted now.
    """
    prepared = await prepare(hub, req)
    draft, renderings = prepared.draft, prepared.renderings
    default = hub.settings.hub.default_locale
    by_locale: dict[tuple[str, str], int] = {}
    if known is None:
        known = await audience_counts(hub, draft.topic_ids)
    for (channel, locale), n in known.items():
        shown = locale if (channel, locale) in renderings else default
        by_locale[(channel, shown)] = by_locale.get((channel, shown), 0) + n
    counts: dict[str, int] = {}
    for (channel, _), n in by_locale.items():
        counts[channel] = counts.get(channel, 0) + n
    channels: dict[str, Any] = {}
    for (channel, locale), rendered in renderings.items():
        entry = channels.setdefault(channel, {"recipients": counts.get(channel, 0), "renderings": {}})
        facts = hub.channels[channel].describe(_content(rendered))
        readers = by_locale.get((channel, locale), 0)
        # Per-recipient costs (SMS segments, Telegram parts) times the readers of this language.
        totals = {
            f"total_{k}": v * readers for k, v in facts.items() if k in COST_FACTS and isinstance(v, int)
        }
        entry["renderings"][locale] = {
            "subject": rendered.subject,
            "recipients": readers,
            **facts,
            **totals,
            "text": rendered.text.replace(UNSUBSCRIBE_MARK, "<unsubscribe link>"),
            "html": (rendered.html or "").replace(UNSUBSCRIBE_MARK, "#unsubscribe"),
        }
    tz = prepared.office["timezone"]
    return {
        "office_id": draft.office_id,
        "topics": len(draft.topic_ids),
        "recipients": sum(counts.get(ch, 0) for ch in hub.channels),
        **{name: local_iso(prepared.times[name], tz) for name in TIMES},
        "untranslated": prepared.untranslated,
        "channels": channels,
    }


async def audience_counts(hub: Hub, topic_ids: list[int]) -> dict[tuple[str, str], int]:
    """Confirmed, active endpoints per (channel, language) for these topics."""
    if not topic_ids:
        return {}
    async with hub.db.session() as session:
        distinct = (
            select(Endpoint.id, Endpoint.channel, Subscriber.locale)
            .join(Subscriber, Subscriber.id == Endpoint.subscriber_id)
            .join(Subscription, Subscription.endpoint_id == Endpoint.id)
            .where(Subscription.topic_id.in_(topic_ids), Subscription.state == "confirmed", Endpoint.active)
            .distinct()
            .subquery()
        )
        rows = await session.execute(
            select(distinct.c.channel, distinct.c.locale, func.count()).group_by(
                distinct.c.channel, distinct.c.locale
            )
        )
        return {(channel, locale): n for channel, locale, n in rows.all()}


def went_out() -> ColumnElement[bool]:
    """An announcement that reached citizens or is due to: published or scheduled, or cancelled after its
    publish time (a correction cancelled then still withdraws what it corrected)."""
    return or_(
        Announcement.state.in_(("published", "scheduled")),
        and_(
            Announcement.state == "cancelled",
            or_(Announcement.publish_at.is_(None), Announcement.cancelled_at >= Announcement.publish_at),
        ),
    )


async def cancel(hub: Hub, announcement_id: int) -> int:
    async with hub.db.transaction() as session:
        announcement = await session.get(Announcement, announcement_id)
        if announcement is None:
            raise AnnouncementError(f"unknown announcement {announcement_id}")
        if announcement.cancelled_at is None:  # the first cancel's time stays
            announcement.cancelled_at = utcnow()
        announcement.state = "cancelled"
        await freshness.touch(session)
        message_ids = list(
            (
                await session.execute(select(Message.id).where(Message.announcement_id == announcement_id))
            ).scalars()
        )
    skipped = 0
    for message_id in message_ids:
        skipped += await delivery.cancel(hub, message_id)
    return skipped


async def correct(hub: Hub, announcement_id: int, req: AnnouncementInput) -> tuple[Announcement, Message]:
    """A correction goes to exactly those who received the original, and to no one else."""
    async with hub.db.session() as session:
        original = await session.get(Announcement, announcement_id)
        if original is None:
            raise AnnouncementError(f"unknown announcement {announcement_id}")
        original_message = await session.scalar(
            select(Message).where(Message.announcement_id == announcement_id, Message.kind == "announcement")
        )
        if original_message is None:
            raise AnnouncementError(f"announcement {announcement_id} was never published")
    if not req.topics and not req.regions:
        req = req.model_copy(
            update={
                "topics": original.targets.get("topics", []),
                "regions": original.targets.get("regions", []),
            }
        )
    prepared = await prepare(hub, req)
    draft = prepared.draft
    async with hub.db.transaction() as session:
        correction = Announcement(
            office_id=draft.office_id,
            template=req.template,
            data=prepared.data,
            services=req.services,
            targets={"corrects": announcement_id},
            valid_from=prepared.times["valid_from"],
            valid_until=prepared.times["valid_until"],
            state="published",
            corrects_id=announcement_id,
        )
        session.add(correction)
        await session.flush()
        await freshness.touch(session)
        # The original's audience keeps its topics for unsubscribe links; the fan-out follows deliveries.
        topic_ids = list(
            (
                await session.execute(
                    select(MessageTopic.topic_id).where(MessageTopic.message_id == original_message.id)
                )
            ).scalars()
        )
    draft = delivery.Draft(
        **{
            **draft.__dict__,
            "kind": "correction",
            "announcement_id": correction.id,
            "corrects_message_id": original_message.id,
            "topic_ids": topic_ids,
            "send_at": None,
        }
    )
    message = await delivery.create_message(hub, draft, state="planning")
    await hub.queue.plan_soon(message.id, message.lane)
    return correction, message
