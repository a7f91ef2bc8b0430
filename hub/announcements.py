"""Announcements: structured where the offices' changes are, free text where they are not.

An announcement is written once, validated and rendered for every channel and locale before it is
stored; publishing creates a message whose audience is the confirmed subscribers of its topics.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, HttpUrl, ValidationError, field_validator
from sqlalchemy import func, select, update

from channels.base import Content
from hub import outbox
from hub.clock import to_utc, utcnow
from hub.context import Hub
from hub.regions import offices_under
from hub.render import UNSUBSCRIBE_MARK, RenderError
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


class AnnouncementError(ValueError):
    """Bad announcement input; the message names what is wrong."""


# ---------------------------------------------------------------------------------------------------------
# The structured kinds (templates/announcements/<kind>/)


class _Data(BaseModel):
    model_config = ConfigDict(extra="forbid")
    note: str | None = None


class Closure(_Data):
    mode: Literal["closed", "restricted"] = "closed"
    reason: str | None = None
    period_days: int | None = Field(default=None, ge=1, le=366)
    online_app: str | None = None
    exceptions: list[str] = []


class HoursChanged(_Data):
    hours: dict[str, str]
    daily_quota: int | None = Field(default=None, ge=1)
    health_protocol: list[str] = []
    basis: str | None = None

    @field_validator("hours")
    @classmethod
    def _hours(cls, value: dict[str, str]) -> dict[str, str]:
        if not value:
            raise ValueError("give at least one day or service with its hours")
        for key, span in value.items():
            start, sep, end = span.partition("-")
            if not sep or not all(_is_clock(x.strip()) for x in (start, end)):
                raise ValueError(f"hours for {key!r} must look like 08:00-11:00, not {span!r}")
        return value


class OnlineOnly(_Data):
    via: str = "WhatsApp"
    online_app: str | None = None
    contacts: dict[str, str] = {}
    online_services: list[str] = []


class Link(_Data):
    link_name: str
    url: HttpUrl
    description: str


class FreeText(_Data):
    title: str = Field(min_length=1, max_length=200)
    text: str = Field(min_length=1, max_length=20_000)
    title_en: str | None = None
    text_en: str | None = None


KINDS: dict[str, type[_Data]] = {
    "closure": Closure,
    "hours_changed": HoursChanged,
    "online_only": OnlineOnly,
    "link": Link,
    "free_text": FreeText,
}


def _is_clock(text: str) -> bool:
    hh, sep, mm = text.replace(".", ":").partition(":")
    return bool(sep) and hh.isdigit() and mm.isdigit() and int(hh) < 24 and int(mm) < 60


def validate_data(template: str, data: dict[str, Any]) -> dict[str, Any]:
    model = KINDS.get(template)
    if model is None:
        return data  # a custom template: strict undefined is the check
    try:
        return model.model_validate(data).model_dump(mode="json")
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "data"
        raise AnnouncementError(f"data for template {template!r}: {where}: {first['msg']}") from None


# ---------------------------------------------------------------------------------------------------------
# Creating, previewing, publishing


class AnnouncementInput(BaseModel):
    """Times carry an offset (``2020-03-23T08:00+07:00``); without one they are read as WIB."""

    template: str
    data: dict[str, Any] = {}
    topics: list[str] = []
    regions: list[str] = []
    services: list[str] = []
    valid_from: datetime | None = None
    valid_until: datetime | None = None
    publish_at: datetime | None = None

    @field_validator("valid_from", "valid_until", "publish_at")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        return to_utc(value) if value is not None else None


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
    if template == "link":
        context["buttons"] = [{"text": f"Buka {data['link_name']}", "url": str(data["url"])}]
    return context


async def prepare(hub: Hub, req: AnnouncementInput) -> tuple[outbox.Draft, dict[str, Any]]:
    """Validate everything and build the message draft; raises before anything is stored."""
    if not hub.renderer.exists("announcements", req.template):
        known = ", ".join(hub.renderer.names("announcements"))
        raise AnnouncementError(f"unknown template {req.template!r} (known: {known})")
    if req.valid_from and req.valid_until and req.valid_until <= req.valid_from:
        raise AnnouncementError("valid-until must be after valid-from")
    if req.valid_until and req.valid_until <= utcnow():
        raise AnnouncementError("valid-until is already in the past")
    if req.publish_at and req.valid_until and req.publish_at >= req.valid_until:
        raise AnnouncementError("publish time must be before valid-until")
    data = validate_data(req.template, req.data)
    office_id, topic_ids = await resolve_topics(hub, req.topics, req.regions, req.services)
    office = await office_context(hub, office_id)
    context = build_context(req.template, data, office, req.services, req.valid_from, req.valid_until)
    draft = outbox.Draft(
        kind="announcement",
        lane="bulk",
        group="announcements",
        template=req.template,
        context=context,
        office_id=office_id,
        topic_ids=topic_ids,
        send_at=req.publish_at,
        not_after=req.valid_until,
    )
    try:
        outbox.render_all(hub, draft)
    except RenderError as exc:
        raise AnnouncementError(str(exc)) from None
    return draft, data


async def create(hub: Hub, req: AnnouncementInput, *, publish: bool) -> tuple[Announcement, Message | None]:
    draft, data = await prepare(hub, req)
    async with hub.db.transaction() as session:
        announcement = Announcement(
            office_id=draft.office_id,
            template=req.template,
            data=data,
            services=req.services,
            targets={"topics": req.topics, "regions": req.regions},
            valid_from=req.valid_from,
            valid_until=req.valid_until,
            publish_at=req.publish_at,
            state="draft",
        )
        session.add(announcement)
    message = await publish_announcement(hub, announcement.id, draft) if publish else None
    async with hub.db.session() as session:
        announcement = await session.get(Announcement, announcement.id)  # type: ignore[assignment]
    return announcement, message


async def publish_announcement(hub: Hub, announcement_id: int, draft: outbox.Draft | None = None) -> Message:
    """Turn a draft into a message: scheduled when its time is ahead, queued for fan-out otherwise."""
    async with hub.db.session() as session:
        announcement = await session.get(Announcement, announcement_id)
        if announcement is None:
            raise AnnouncementError(f"unknown announcement {announcement_id}")
        if announcement.state != "draft":
            raise AnnouncementError(f"announcement {announcement_id} is {announcement.state}, not a draft")
    if draft is None:
        draft, _ = await prepare(hub, _input_of(announcement))
    draft = outbox.Draft(**{**draft.__dict__, "announcement_id": announcement_id})
    scheduled = draft.send_at is not None and draft.send_at > utcnow()
    message = await outbox.create_message(hub, draft, state="scheduled" if scheduled else "planning")
    async with hub.db.transaction() as session:
        await session.execute(
            update(Announcement)
            .where(Announcement.id == announcement_id)
            .values(state="scheduled" if scheduled else "published")
        )
    await hub.queue.plan(message.id, message.lane, at=message.send_at if scheduled else None)
    return message


def _input_of(announcement: Announcement) -> AnnouncementInput:
    return AnnouncementInput(
        template=announcement.template,
        data=announcement.data,
        topics=announcement.targets.get("topics", []),
        regions=announcement.targets.get("regions", []),
        services=announcement.services,
        valid_from=announcement.valid_from,
        valid_until=announcement.valid_until,
        publish_at=announcement.publish_at,
    )


async def preview(hub: Hub, req: AnnouncementInput) -> dict[str, Any]:
    """Each channel's rendering per locale, its cost facts, and how many endpoints it would reach."""
    draft, _ = await prepare(hub, req)
    renderings = outbox.render_all(hub, draft)
    by_locale = await audience_counts(hub, draft.topic_ids)
    counts: dict[str, int] = {}
    for (channel, _), n in by_locale.items():
        counts[channel] = counts.get(channel, 0) + n
    channels: dict[str, Any] = {}
    for (channel, locale), rendered in renderings.items():
        entry = channels.setdefault(channel, {"recipients": counts.get(channel, 0), "renderings": {}})
        facts = hub.channels[channel].describe(
            Content(text=rendered.text, html=rendered.html, subject=rendered.subject)
        )
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
    return {
        "office_id": draft.office_id,
        "topics": len(draft.topic_ids),
        "recipients": sum(counts.get(ch, 0) for ch in hub.channels),
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


async def cancel(hub: Hub, announcement_id: int) -> int:
    async with hub.db.transaction() as session:
        announcement = await session.get(Announcement, announcement_id)
        if announcement is None:
            raise AnnouncementError(f"unknown announcement {announcement_id}")
        announcement.state = "cancelled"
        message_ids = list(
            (
                await session.execute(select(Message.id).where(Message.announcement_id == announcement_id))
            ).scalars()
        )
    skipped = 0
    for message_id in message_ids:
        skipped += await outbox.cancel(hub, message_id)
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
    draft, data = await prepare(hub, req)
    async with hub.db.transaction() as session:
        correction = Announcement(
            office_id=draft.office_id,
            template=req.template,
            data=data,
            services=req.services,
            targets={"corrects": announcement_id},
            valid_from=req.valid_from,
            valid_until=req.valid_until,
            state="published",
            corrects_id=announcement_id,
        )
        session.add(correction)
        await session.flush()
        # The original's audience keeps its topics for unsubscribe links; the fan-out follows deliveries.
        topic_ids = list(
            (
                await session.execute(
                    select(MessageTopic.topic_id).where(MessageTopic.message_id == original_message.id)
                )
            ).scalars()
        )
    draft = outbox.Draft(
        **{
            **draft.__dict__,
            "kind": "correction",
            "announcement_id": correction.id,
            "corrects_message_id": original_message.id,
            "topic_ids": topic_ids,
            "send_at": None,
        }
    )
    message = await outbox.create_message(hub, draft, state="planning")
    await hub.queue.plan(message.id, message.lane)
    return correction, message
