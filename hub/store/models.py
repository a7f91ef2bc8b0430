"""SQLAlchemy models: the database is the source of truth (DESIGN.md rule 1).

Times are naive UTC everywhere in the store; the edges convert to an office's time zone.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from hub.clock import utcnow

# SQLite only autoincrements INTEGER PRIMARY KEY; PostgreSQL gets BIGINT where rows can be many.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JSON, list[Any]: JSON}


class KeyValue(Base):
    """Deployment-wide values every process must agree on (the signing key)."""

    __tablename__ = "hub_kv"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class Region(Base):
    __tablename__ = "regions"
    code: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    level: Mapped[str] = mapped_column(String(20))
    parent_code: Mapped[str | None] = mapped_column(ForeignKey("regions.code"), index=True)
    #: "36/36.73/36.73.serang/": a subtree is a prefix match.
    path: Mapped[str] = mapped_column(String(400), index=True)


class Office(Base):
    __tablename__ = "offices"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    region_code: Mapped[str] = mapped_column(ForeignKey("regions.code"), index=True)
    timezone: Mapped[str] = mapped_column(String(64), default="Asia/Jakarta")
    #: Published service numbers and apps: content to announce, never recipients.
    profile: Mapped[dict[str, Any]] = mapped_column(default=dict)


class OfficeStatus(Base):
    """An office's base status (hours, quota, mode, services, contacts): ``hub.status`` validates it.

    Announcements overlay it for their validity period (``hub.status.status_at``); this row is what
    staff set directly, and every change is kept in ``office_status_history``.
    """

    __tablename__ = "office_status"
    office_id: Mapped[str] = mapped_column(ForeignKey("offices.id"), primary_key=True)
    status: Mapped[dict[str, Any]] = mapped_column(default=dict)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    #: Who: "console:<email>", "api-key:<id>", "cli" or "seed".
    updated_by: Mapped[str] = mapped_column(String(320), default="")


class OfficeStatusHistory(Base):
    """One row per change of an office's base status: the whole status before and after, appended only."""

    __tablename__ = "office_status_history"
    __table_args__ = (Index("ix_office_status_history_office_id_id", "office_id", "id"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    office_id: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    by: Mapped[str] = mapped_column(String(320), default="")
    before: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    after: Mapped[dict[str, Any]] = mapped_column(default=dict)


class Topic(Base):
    __tablename__ = "topics"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    slug: Mapped[str] = mapped_column(String(120), unique=True)
    office_id: Mapped[str] = mapped_column(ForeignKey("offices.id"), index=True)
    service: Mapped[str | None] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(200))


class Subscriber(Base):
    """A person or a group (a kelurahan's chat); holds no name, no NIK, only a locale."""

    __tablename__ = "subscribers"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    locale: Mapped[str] = mapped_column(String(8), default="id")
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class Endpoint(Base):
    __tablename__ = "endpoints"
    __table_args__ = (UniqueConstraint("channel", "address", name="uq_endpoint_address"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    subscriber_id: Mapped[int] = mapped_column(ForeignKey("subscribers.id", ondelete="CASCADE"), index=True)
    channel: Mapped[str] = mapped_column(String(32))
    address: Mapped[str] = mapped_column(String(320))
    kind: Mapped[str] = mapped_column(String(16), default="person")
    #: Set for a kelurahan relay: the office it relays for.
    relay_office_id: Mapped[str | None] = mapped_column(ForeignKey("offices.id"))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    deactivated_reason: Mapped[str | None] = mapped_column(String(300))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    #: When the endpoint last changed (deactivated by a bounce, a complaint or a blocked bot, reactivated,
    #: moved): a confirmation link made before this revives nothing (``hub.subscriptions.confirm``). Set on
    #: every UPDATE of the row, whoever makes it, so no path that deactivates an endpoint can forget it.
    #: Null only on rows older than the column (no link that carries a time is older than them).
    state_changed_at: Mapped[datetime | None] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)


class Subscription(Base):
    __tablename__ = "subscriptions"
    __table_args__ = (
        UniqueConstraint("topic_id", "endpoint_id", name="uq_subscription"),
        Index("ix_subscriptions_topic_state_endpoint", "topic_id", "state", "endpoint_id"),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    topic_id: Mapped[int] = mapped_column(ForeignKey("topics.id"))
    endpoint_id: Mapped[int] = mapped_column(ForeignKey("endpoints.id", ondelete="CASCADE"), index=True)
    #: pending -> confirmed -> unsubscribed (and back to pending on a new opt-in).
    state: Mapped[str] = mapped_column(String(16), default="pending")
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    #: When ``state`` last really changed (asking again while pending is no change): a confirmation link
    #: made before this confirms nothing (``hub.subscriptions.confirm``). Null only on rows older than
    #: the column.
    state_changed_at: Mapped[datetime | None] = mapped_column(DateTime, default=utcnow)


class Announcement(Base):
    __tablename__ = "announcements"
    #: The console's dashboard pages one state of an office's announcements, newest first.
    __table_args__ = (Index("ix_announcements_state_office", "state", "office_id", "id"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    office_id: Mapped[str] = mapped_column(ForeignKey("offices.id"), index=True)
    template: Mapped[str] = mapped_column(String(64))
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)
    services: Mapped[list[Any]] = mapped_column(default=list)
    #: Topic slugs and region codes as the author gave them.
    targets: Mapped[dict[str, Any]] = mapped_column(default=dict)
    valid_from: Mapped[datetime | None] = mapped_column(DateTime)
    valid_until: Mapped[datetime | None] = mapped_column(DateTime)
    #: draft -> (awaiting_approval -> draft again when sent back) -> scheduled/published -> cancelled
    state: Mapped[str] = mapped_column(String(20), default="draft")
    publish_at: Mapped[datetime | None] = mapped_column(DateTime)
    corrects_id: Mapped[int | None] = mapped_column(ForeignKey("announcements.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    #: Who wrote it: a console user (``staff_users.id``; no foreign key, the table comes later and a
    #: user's removal must not lose the record) or an API key. Both null: the CLI or before issue 10.
    created_by: Mapped[int | None] = mapped_column(Integer)
    created_key_id: Mapped[int | None] = mapped_column(Integer)
    #: The two-person rule (hub.approvals): submitted, then approved by someone else or sent back.
    submitted_at: Mapped[datetime | None] = mapped_column(DateTime)
    approved_by: Mapped[int | None] = mapped_column(Integer)
    approved_key_id: Mapped[int | None] = mapped_column(Integer)
    approved_at: Mapped[datetime | None] = mapped_column(DateTime)
    #: The approver's comment when sending it back (kept on the draft until it is submitted again).
    review_comment: Mapped[str | None] = mapped_column(Text)
    #: When it was first cancelled (public feeds and CAP Cancel documents say when).
    cancelled_at: Mapped[datetime | None] = mapped_column(DateTime)


class ApplicantCase(Base):
    """An applicant's case. The receipt's PIN and deep-link code are printed, never stored: only hashes."""

    __tablename__ = "applicant_cases"
    __table_args__ = (
        UniqueConstraint("office_id", "reference", name="uq_case_reference"),
        UniqueConstraint("link_code_hash", name="uq_case_link_code_hash"),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    office_id: Mapped[str] = mapped_column(ForeignKey("offices.id"), index=True)
    reference: Mapped[str] = mapped_column(String(64))
    document: Mapped[str] = mapped_column(String(64))
    pin_hash: Mapped[str] = mapped_column(String(128))
    #: SHA-256 (hex) of the receipt's deep-link code; the code links one private chat, once, until
    #: ``link_expires_at`` (hub.applicants.link_case).
    link_code_hash: Mapped[str] = mapped_column(String(64))
    link_expires_at: Mapped[datetime] = mapped_column(DateTime)
    #: When the code was used (or shown in a group, which voids it); a used code links nothing more.
    link_used_at: Mapped[datetime | None] = mapped_column(DateTime)
    #: PIN checks counted against the case, from every sender, for good: a check takes one before the
    #: PIN is compared and a right PIN gives it back (hub.applicants.check_pin). In the database, not
    #: Redis, so the lock below survives the loss of Redis.
    pin_failures: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    #: When ``pin_failures`` reached ``hub.applicants.PIN_LOCK_AFTER``: no PIN opens the case any more,
    #: right or wrong; the receipt's deep-link code still links the applicant's chat.
    pin_locked_at: Mapped[datetime | None] = mapped_column(DateTime)
    status: Mapped[str] = mapped_column(String(32), default="received")
    locale: Mapped[str] = mapped_column(String(8), default="id")
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class CaseEndpoint(Base):
    __tablename__ = "case_endpoints"
    case_id: Mapped[int] = mapped_column(
        ForeignKey("applicant_cases.id", ondelete="CASCADE"), primary_key=True
    )
    endpoint_id: Mapped[int] = mapped_column(ForeignKey("endpoints.id", ondelete="CASCADE"), primary_key=True)


class CaseUpdate(Base):
    __tablename__ = "case_updates"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("applicant_cases.id", ondelete="CASCADE"), index=True)
    status: Mapped[str] = mapped_column(String(32))
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class Message(Base):
    """One thing to say to an audience; rendered once per channel and locale before anything is sent."""

    __tablename__ = "messages"
    #: The reconciler's scheduled and planning messages, without reading every message.
    __table_args__ = (Index("ix_messages_state_send_at", "state", "send_at"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    #: announcement | correction | applicant | confirmation | reply
    kind: Mapped[str] = mapped_column(String(16))
    lane: Mapped[str] = mapped_column(String(8), default="bulk")
    office_id: Mapped[str | None] = mapped_column(ForeignKey("offices.id"), index=True)
    announcement_id: Mapped[int | None] = mapped_column(ForeignKey("announcements.id"), index=True)
    #: For a correction: the message whose recipients receive it.
    corrects_message_id: Mapped[int | None] = mapped_column(ForeignKey("messages.id"))
    #: scheduled -> planning -> planned; or cancelled
    state: Mapped[str] = mapped_column(String(16), default="planning")
    send_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    not_after: Mapped[datetime | None] = mapped_column(DateTime)
    #: Fan-out resumes after this endpoint id.
    plan_cursor: Mapped[int] = mapped_column(BigId, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    planned_at: Mapped[datetime | None] = mapped_column(DateTime)
    #: Last progress of the fan-out; a planner silent for long is presumed dead and replaced.
    plan_touched_at: Mapped[datetime | None] = mapped_column(DateTime)


class MessageTopic(Base):
    __tablename__ = "message_topics"
    message_id: Mapped[int] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"), primary_key=True)
    topic_id: Mapped[int] = mapped_column(ForeignKey("topics.id"), primary_key=True)


class MessageEndpoint(Base):
    """An explicit audience (an applicant's endpoints, a reply's chat)."""

    __tablename__ = "message_endpoints"
    message_id: Mapped[int] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"), primary_key=True)
    #: Indexed: a reply looks up the earlier replies to the same chat (they go out in order).
    endpoint_id: Mapped[int] = mapped_column(
        ForeignKey("endpoints.id", ondelete="CASCADE"), primary_key=True, index=True
    )


class Rendering(Base):
    __tablename__ = "renderings"
    message_id: Mapped[int] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"), primary_key=True)
    channel: Mapped[str] = mapped_column(String(32), primary_key=True)
    locale: Mapped[str] = mapped_column(String(8), primary_key=True)
    subject: Mapped[str | None] = mapped_column(Text)
    text: Mapped[str] = mapped_column(Text)
    html: Mapped[str | None] = mapped_column(Text)
    buttons: Mapped[list[Any]] = mapped_column(default=list)


class Delivery(Base):
    """One per (message, endpoint); its state only moves forward (DESIGN.md rule 2)."""

    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("message_id", "endpoint_id", name="uq_delivery"),
        Index("ix_deliveries_due", "state", "next_attempt_at"),
        #: Partial: a row gets its claim after it is planned, so planning inserts no entry here.
        Index(
            "ix_deliveries_claim",
            "claim",
            postgresql_where=text("claim IS NOT NULL"),
            sqlite_where=text("claim IS NOT NULL"),
        ),
        #: The console's progress per channel and state, and "anything pending?", from the index alone.
        Index("ix_deliveries_message_state", "message_id", "state", "channel"),
        #: Pending rows only, by lane: the oldest due per lane in one descent (``hub.metrics``).
        Index(
            "ix_deliveries_lane_pending",
            "lane",
            "next_attempt_at",
            postgresql_where=text("state IN ('queued', 'retrying')"),
            sqlite_where=text("state IN ('queued', 'retrying')"),
        ),
        #: Pending rows by when they were enqueued: the reconciler's lost enqueues without reading the rest.
        Index(
            "ix_deliveries_pending_enqueued",
            "enqueued_at",
            "next_attempt_at",
            postgresql_where=text("state IN ('queued', 'retrying')"),
            sqlite_where=text("state IN ('queued', 'retrying')"),
        ),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    message_id: Mapped[int] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"))
    endpoint_id: Mapped[int] = mapped_column(ForeignKey("endpoints.id", ondelete="CASCADE"), index=True)
    #: The message's topic through which fan-out reached the endpoint (the lowest id when several did):
    #: its one-click link leaves that topic and its footer names it. None for messages to named endpoints.
    topic_id: Mapped[int | None] = mapped_column(Integer)
    channel: Mapped[str] = mapped_column(String(32))
    lane: Mapped[str] = mapped_column(String(8), default="bulk")
    #: queued | sending | retrying | sent | delivered | read | failed | gone | skipped
    state: Mapped[str] = mapped_column(String(16), default="queued")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    enqueued_at: Mapped[datetime | None] = mapped_column(DateTime)
    claim: Mapped[str | None] = mapped_column(String(32))
    lease_until: Mapped[datetime | None] = mapped_column(DateTime)
    provider_id: Mapped[str | None] = mapped_column(String(200))
    error: Mapped[str | None] = mapped_column(String(500))
    sent_at: Mapped[datetime | None] = mapped_column(DateTime)
    updated_at: Mapped[datetime | None] = mapped_column(DateTime)


class Claim(Base):
    """One per claim (a job's batch): its lease. Renewal touches only this row (docs/design.md, "Claims").

    ``deliveries.lease_until`` is no longer used: a delivery in ``sending`` is held while its claim's
    lease runs.
    """

    __tablename__ = "claims"
    __table_args__ = (Index("ix_claims_lease", "requeued", "lease_until"),)
    token: Mapped[str] = mapped_column(String(32), primary_key=True)
    lease_until: Mapped[datetime] = mapped_column(DateTime)
    #: The reconciler queued this dead claim's rows again (once).
    requeued: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    #: When the reconciler last queued its rows again: rows still ``sending`` under it
    #: ``stale_after_seconds`` later were lost with their job (a Redis restart) and are queued again.
    requeued_at: Mapped[datetime | None] = mapped_column(DateTime)


class ApiKey(Base):
    __tablename__ = "api_keys"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    office_id: Mapped[str] = mapped_column(ForeignKey("offices.id"), index=True)
    #: intake (applicant updates) or staff (announcements, subscribers)
    role: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(100))
    prefix: Mapped[str] = mapped_column(String(16), unique=True)
    key_hash: Mapped[str] = mapped_column(String(128))
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    #: When the key last authenticated a request, to the minute (``hub.keys.note_use``); null: never.
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime)


class IdempotentRequest(Base):
    __tablename__ = "idempotent_requests"
    api_key_id: Mapped[int] = mapped_column(ForeignKey("api_keys.id", ondelete="CASCADE"), primary_key=True)
    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    request_hash: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int] = mapped_column(Integer)
    response: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class CitizenRequest(Base):
    """A citizen's right exercised (UU 27/2022): an erasure or an export, who asked for it, and when.

    Never the address in clear: an HMAC of it (so staff can answer "was this address erased?") and the
    channel's mask. An erasure asked in a chat waits for its confirmation reply to go out first:
    ``endpoint_id`` names the endpoint still to erase until ``done_at`` is set (hub.citizens).
    """

    __tablename__ = "citizen_requests"
    __table_args__ = (Index("ix_citizen_requests_done_at", "done_at"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    #: erase | export
    action: Mapped[str] = mapped_column(String(16))
    #: Who asked: ``citizen`` (a chat command) or the staff member named on the command line.
    actor: Mapped[str] = mapped_column(String(200))
    channel: Mapped[str | None] = mapped_column(String(32))
    address_hash: Mapped[str] = mapped_column(String(64))
    address_mask: Mapped[str] = mapped_column(String(64))
    #: A pending erasure's endpoint (no foreign key: the row outlives it) and its confirmation reply.
    endpoint_id: Mapped[int | None] = mapped_column(BigId)
    reply_message_id: Mapped[int | None] = mapped_column(BigId)
    #: What was found or erased: counts of endpoints, subscriptions, case links, deliveries.
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)
    requested_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    done_at: Mapped[datetime | None] = mapped_column(DateTime)


class DeliveryCount(Base):
    """Deliveries no longer held row by row (purged by retention, or erased with their address).

    Counts per message, channel and state; a message's status adds them to the rows still held.
    """

    __tablename__ = "delivery_counts"
    message_id: Mapped[int] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"), primary_key=True)
    channel: Mapped[str] = mapped_column(String(32), primary_key=True)
    state: Mapped[str] = mapped_column(String(16), primary_key=True)
    count: Mapped[int] = mapped_column(BigInteger, default=0)


class StaffUser(Base):
    """A console account (issue 10): one office, one role over that office's subtree of the region tree.

    The password is kept as an argon2 hash; the TOTP secret sealed with the deployment key
    (``hub.console.accounts``), never in clear. ``failed_logins`` and ``locked_until`` make the lock-out.
    """

    __tablename__ = "staff_users"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    office_id: Mapped[str] = mapped_column(ForeignKey("offices.id"), index=True)
    #: viewer | editor | approver | admin
    role: Mapped[str] = mapped_column(String(16))
    password_hash: Mapped[str] = mapped_column(Text)
    must_change_password: Mapped[bool] = mapped_column(Boolean, default=True)
    totp_sealed: Mapped[str | None] = mapped_column(Text)
    #: The last TOTP time step accepted: a code is good once.
    totp_last_step: Mapped[int | None] = mapped_column(BigInteger)
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None] = mapped_column(DateTime)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class StaffSession(Base):
    """A console session: the cookie holds a signed random token, this row its SHA-256 (sign-out ends it)."""

    __tablename__ = "staff_sessions"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    staff_id: Mapped[int] = mapped_column(ForeignKey("staff_users.id", ondelete="CASCADE"), index=True)
    #: totp (password checked, code awaited) | ok (signed in)
    stage: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    seen_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class AuditEntry(Base):
    """Who did what in the console, appended only: the hub has no path that edits or deletes a row."""

    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_office_id_id", "office_id", "id"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    #: No foreign key: the record outlives whatever it names.
    staff_id: Mapped[int | None] = mapped_column(BigId)
    staff_email: Mapped[str] = mapped_column(String(320))
    office_id: Mapped[str | None] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(String(200), default="")
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)


class AudienceCount(Base):
    """Confirmed, active endpoints per scope, channel and language, counted by the reconciler.

    ``scope`` is ``topic`` (``scope_id`` its slug), ``office`` (each endpoint once over the office's
    topics) or ``region`` (each endpoint once over the topics of every office at or below it). The console
    reads these instead of counting a million subscriptions per page view (``hub.audience``); publishing
    and the two-person rule still count for real.
    """

    __tablename__ = "audience_counts"
    scope: Mapped[str] = mapped_column(String(16), primary_key=True)
    scope_id: Mapped[str] = mapped_column(String(120), primary_key=True)
    channel: Mapped[str] = mapped_column(String(32), primary_key=True)
    locale: Mapped[str] = mapped_column(String(8), primary_key=True)
    count: Mapped[int] = mapped_column(BigInteger, default=0)
    counted_at: Mapped[datetime] = mapped_column(DateTime)


class RelayAck(Base):
    """A kelurahan relay's confirmation that it passed one message on (issue 11, ``hub.relays``).

    One row per (message, relay endpoint), made when the relay confirms or when the reconciler reminds it,
    whichever comes first. The code a relay sends back is derived from the delivery id with the deployment
    key (``hub.relays.codes``): nothing secret is stored. ``reminded_at`` and ``office_told_at`` move once,
    in the transaction that queues the reminder or the report, so no worker or restart repeats them.
    """

    __tablename__ = "relay_acks"
    __table_args__ = (
        UniqueConstraint("message_id", "endpoint_id", name="uq_relay_ack"),
        Index("ix_relay_acks_announcement", "announcement_id"),
        Index("ix_relay_acks_report", "office_told_at", "confirmed_at", "message_id"),
        Index("ix_relay_acks_reminder_message", "reminder_message_id"),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    message_id: Mapped[int] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"))
    endpoint_id: Mapped[int] = mapped_column(ForeignKey("endpoints.id", ondelete="CASCADE"), index=True)
    #: The delivery the code was made for (no foreign key: retention may purge delivery rows).
    delivery_id: Mapped[int] = mapped_column(BigId)
    announcement_id: Mapped[int | None] = mapped_column(BigId)
    office_id: Mapped[str] = mapped_column(String(64))
    confirmed_at: Mapped[datetime | None] = mapped_column(DateTime)
    #: whatsapp_group | notice_board | mosque | rt_rw_meeting | other; null: not said.
    means: Mapped[str | None] = mapped_column(String(20))
    #: Who confirmed, masked as staff screens show addresses (never the address in clear).
    confirmed_by: Mapped[str | None] = mapped_column(String(64))
    #: How: button | reaction | command | reply | link.
    confirmed_via: Mapped[str | None] = mapped_column(String(16))
    reminded_at: Mapped[datetime | None] = mapped_column(DateTime)
    reminder_message_id: Mapped[int | None] = mapped_column(BigId)
    office_told_at: Mapped[datetime | None] = mapped_column(DateTime)
    report_message_id: Mapped[int | None] = mapped_column(BigId)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


#: A Matrix reaction names the hub's event: its delivery is found by the provider's id (``hub.relays``).
Index(
    "ix_deliveries_provider_id",
    Delivery.provider_id,
    postgresql_where=text("provider_id IS NOT NULL"),
    sqlite_where=text("provider_id IS NOT NULL"),
)
#: The reconciler's relay reminders start from the (few) relay endpoints.
Index("ix_endpoints_relay_office_id", Endpoint.relay_office_id)
