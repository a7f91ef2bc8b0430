"""The two-person rule: a large or region-wide announcement goes out only when a second person approves it.

Above an office's threshold (``console.approval_recipients``, per office in
``console.office_approval_recipients``) or for any send to a whole region (``console.approval_region_wide``),
a draft is submitted (``awaiting_approval``) and another user with the approver role approves it, which
publishes it, or sends it back to draft with a comment. The author never approves their own. An admin may
publish such a draft without a second person only as an explicit urgent act, which the caller records
in the audit log. Who acts is an ``Actor``: a console user or an API key (the same key cannot approve
what it submitted); the CLI, an operator's shell, writes drafts without an author.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import update

from hub import announcements
from hub.announcements import AnnouncementError
from hub.clock import utcnow
from hub.context import Hub
from hub.errors import Conflict, HubError
from hub.store.models import Announcement, Message

#: Writes the act's audit row in the transaction of the change it records (given the session): the
#: change and its record commit together or not at all.
Audit = Callable[[Any], Awaitable[None]]


class NotAllowed(HubError):
    """The actor's role or relation to the announcement does not allow this (403)."""

    status = 403


@dataclass(frozen=True)
class Actor:
    """Who acts: a console user (``staff_id``) or an API key (``key_id``), and what they may do.

    ``offices``: the offices the actor may act on (their office's subtree); None for no limit (the CLI).
    """

    staff_id: int | None = None
    key_id: int | None = None
    approver: bool = False
    admin: bool = False
    offices: frozenset[str] | None = None

    def wrote(self, announcement: Announcement) -> bool:
        """True when this actor is the announcement's author (by user, or by API key)."""
        if self.staff_id is not None and announcement.created_by == self.staff_id:
            return True
        return self.key_id is not None and announcement.created_key_id == self.key_id


@dataclass(frozen=True)
class Rule:
    """Whether an announcement needs a second person, and why (for the pages and errors)."""

    needed: bool
    recipients: int
    threshold: int
    region_wide: bool

    @property
    def reason(self) -> str:
        if self.region_wide:
            return "it goes to a whole region"
        if self.needed:
            return f"its {self.recipients} recipients are more than the office's {self.threshold}"
        return ""


async def rule_for(hub: Hub, announcement: Announcement) -> Rule:
    """The two-person rule applied to a stored announcement's audience as it is now."""
    req = announcements.input_of(announcement)
    return await rule_for_targets(hub, announcement.office_id, req.topics, req.regions, req.services)


async def rule_for_targets(
    hub: Hub, office_id: str, topics: list[str], regions: list[str], services: list[str]
) -> Rule:
    conf = hub.settings.console
    _, topic_ids = await announcements.resolve_topics(hub, topics, regions, services)
    counts = await announcements.audience_counts(hub, topic_ids)
    recipients = sum(n for (channel, _), n in counts.items() if channel in hub.channels)
    threshold = conf.approval_threshold(office_id)
    region_wide = bool(regions) and conf.approval_region_wide
    return Rule(region_wide or recipients > threshold, recipients, threshold, region_wide)


async def _load(hub: Hub, actor: Actor, announcement_id: int) -> Announcement:
    async with hub.db.session() as session:
        announcement = await session.get(Announcement, announcement_id)
    if announcement is None or (actor.offices is not None and announcement.office_id not in actor.offices):
        # Another office's announcement answers as one that does not exist.
        raise announcements.AnnouncementNotFound(f"announcement {announcement_id} not found")
    return announcement


async def submit(hub: Hub, actor: Actor, announcement_id: int, *, audit: Audit | None = None) -> Announcement:
    """A draft waits for a second person; it must still be valid (rendered, within its channels' limits).

    ``audit`` writes the act's record in the same transaction as the move.
    """
    announcement = await _load(hub, actor, announcement_id)
    if announcement.state != "draft":
        raise Conflict(f"announcement {announcement_id} is {announcement.state}; only a draft is submitted")
    await announcements.prepare(hub, announcements.input_of(announcement))
    await _move(
        hub,
        announcement_id,
        "draft",
        audit=audit,
        state="awaiting_approval",
        submitted_at=utcnow(),
        review_comment=None,
    )
    return await _load(hub, actor, announcement_id)


async def approve(hub: Hub, actor: Actor, announcement_id: int) -> Message:
    """Another approver's yes publishes it (at once, or at its publish time)."""
    announcement = await _load(hub, actor, announcement_id)
    if not actor.approver:
        raise NotAllowed("approving needs the approver role")
    if actor.wrote(announcement):
        raise NotAllowed("the author cannot approve their own announcement: another approver must")
    if announcement.state != "awaiting_approval":
        raise Conflict(f"announcement {announcement_id} is {announcement.state}, not awaiting approval")
    # Claimed first, so two approvers at once publish it once.
    await _move(
        hub,
        announcement_id,
        "awaiting_approval",
        approved_by=actor.staff_id,
        approved_key_id=actor.key_id,
        approved_at=utcnow(),
        guard_unapproved=True,
    )
    try:
        return await announcements.publish_announcement(hub, announcement_id, approved=True)
    except BaseException:
        # Not published (its validity ran out meanwhile, say): it still awaits an approval.
        async with hub.db.transaction() as session:
            await session.execute(
                update(Announcement)
                .where(Announcement.id == announcement_id, Announcement.state == "awaiting_approval")
                .values(approved_by=None, approved_key_id=None, approved_at=None)
            )
        raise


async def send_back(
    hub: Hub, actor: Actor, announcement_id: int, comment: str, *, audit: Audit | None = None
) -> Announcement:
    """Back to draft with the approver's comment; ``audit`` records it in the same transaction."""
    announcement = await _load(hub, actor, announcement_id)
    if not actor.approver:
        raise NotAllowed("sending back needs the approver role")
    if actor.wrote(announcement):
        raise NotAllowed("the author cannot review their own announcement: another approver must")
    comment = comment.strip()
    if not comment:
        raise AnnouncementError("comment: say what to change")
    if len(comment) > 2000:
        raise AnnouncementError("comment: at most 2000 characters")
    if announcement.state != "awaiting_approval":
        raise Conflict(f"announcement {announcement_id} is {announcement.state}, not awaiting approval")
    await _move(hub, announcement_id, "awaiting_approval", audit=audit, state="draft", review_comment=comment)
    return await _load(hub, actor, announcement_id)


async def publish(hub: Hub, actor: Actor, announcement_id: int, *, urgent: bool = False) -> Message:
    """An approver publishes a draft under the threshold; above it only an admin's ``urgent`` act does.

    The urgent act is the caller's to record in the audit log (it is the person's act, not the hub's).
    """
    announcement = await _load(hub, actor, announcement_id)
    if not actor.approver:
        raise NotAllowed("publishing needs the approver role: submit it for approval instead")
    if announcement.state != "draft":
        raise Conflict(f"announcement {announcement_id} is {announcement.state}, not a draft")
    rule = await rule_for(hub, announcement)
    if rule.needed:
        if not urgent:
            raise NotAllowed(f"this announcement needs another approver because {rule.reason}: submit it")
        if not actor.admin:
            raise NotAllowed("only an admin may publish without approval, as an urgent act")
    if urgent:
        await _move(
            hub,
            announcement_id,
            "draft",
            approved_by=actor.staff_id,
            approved_key_id=actor.key_id,
            approved_at=utcnow(),
        )
    return await announcements.publish_announcement(hub, announcement_id)


async def _move(
    hub: Hub,
    announcement_id: int,
    expected: str,
    *,
    guard_unapproved: bool = False,
    audit: Audit | None = None,
    **values: object,
) -> None:
    """Change the row only if it is still in ``expected`` (a concurrent act loses with a 409).

    ``audit`` runs in the same transaction once the row moved; when it fails, nothing moved.
    """
    where = [Announcement.id == announcement_id, Announcement.state == expected]
    if guard_unapproved:
        where.append(Announcement.approved_at.is_(None))
    async with hub.db.transaction() as session:
        result = await session.execute(update(Announcement).where(*where).values(**values))
        if not result.rowcount:  # raised inside: the transaction ends without a change or a record
            raise Conflict(f"announcement {announcement_id} changed meanwhile; reload it")
        if audit is not None:
            await audit(session)
