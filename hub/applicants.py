"""Applicant cases: an intake system opens a case, posts status changes, the applicant hears at once.

The hub keeps the office's reference, the document applied for and a keyed hash of a short PIN; no
name, no NIK. The receipt carries the reference, the PIN and a deep-link code to follow the case.

The deep-link code (``/start <code>``) stands in for the PIN, so it is held to more: it links one
private chat, once, within ``LINK_CODE_DAYS`` of the receipt, and only its hash is stored.
"""

from __future__ import annotations

import hashlib
import secrets
import string
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from hub import delivery, signing
from hub.clock import utcnow
from hub.context import Hub
from hub.errors import Conflict, InvalidInput, NotFound
from hub.store.models import ApplicantCase, CaseEndpoint, CaseUpdate, Office
from hub.subscriptions import endpoint_for, normalize

Status = Literal["received", "verified", "needs_document", "ready", "rejected", "done"]


class ApplicantError(InvalidInput):
    """Bad applicant input; the message names what is wrong."""


class UnknownCase(ApplicantError, NotFound):
    """No case with that reference for the office."""


class CaseExists(ApplicantError, Conflict):
    """A case with that reference is already open for the office."""


class CodeRefused(ApplicantError):
    """A deep-link code that links nothing: ``reason`` is ``unknown``, ``used`` or ``expired``."""

    def __init__(self, reason: Literal["unknown", "used", "expired"]) -> None:
        super().__init__(f"case code {reason}")
        self.reason = reason


#: Days a receipt's deep-link code links a chat; after that the applicant tracks with reference and PIN.
LINK_CODE_DAYS = 7
LINK_CODE_CHARS = string.ascii_letters + string.digits


def new_link_code() -> str:
    """``c`` and 16 letters or digits (95 random bits): fits a Telegram ``start`` payload as it is."""
    return "c" + "".join(secrets.choice(LINK_CODE_CHARS) for _ in range(16))


def link_code_hash(code: str) -> str:
    """What the store keeps of a code. Unkeyed on purpose: the code is random enough that its hash cannot
    be reversed, and receipts already printed keep working when the deployment secret is rotated."""
    return hashlib.sha256(code.encode()).hexdigest()


#: Runs inside the request's transaction, so what it writes (an idempotency record) commits with the
#: case or message, or not at all.
Within = Callable[[AsyncSession, dict[str, Any]], Awaitable[None]]

REFERENCE_CHARS = frozenset(string.ascii_letters + string.digits + "._-")


class Contact(BaseModel):
    channel: str
    address: str


class CaseInput(BaseModel):
    reference: str = Field(min_length=1, max_length=64)
    document: str = Field(min_length=1, max_length=64)
    locale: Literal["id", "en"] = "id"
    contacts: list[Contact] = []

    @field_validator("reference")
    @classmethod
    def _reference_fits_a_url(cls, value: str) -> str:
        # The reference is a path segment of /v1/applicants/{reference}/updates: a '/' would make the
        # case impossible to update, so it is refused when the case is opened.
        bad = sorted(set(value) - REFERENCE_CHARS)
        if bad:
            shown = " ".join(repr(c) for c in bad)
            raise ValueError(
                f"may hold only letters, digits, '.', '_' and '-' (not {shown}); "
                "write e.g. KTP-2020-0042 instead of KTP/2020/0042"
            )
        return value


class UpdateInput(BaseModel):
    status: Status
    missing_documents: list[str] = []
    pickup_place: str | None = None
    pickup_hours: str | None = None
    reason: str | None = None
    note: str | None = Field(default=None, max_length=1000)

    @model_validator(mode="after")
    def _required_detail(self) -> UpdateInput:
        if self.status == "needs_document" and not self.missing_documents:
            raise ValueError("status needs_document requires missing_documents")
        if self.status == "ready" and not self.pickup_place:
            raise ValueError("status ready requires pickup_place")
        if self.status == "rejected" and not self.reason:
            raise ValueError("status rejected requires reason")
        return self


@dataclass
class OpenedCase:
    case_id: int
    reference: str
    pin: str
    link_code: str
    link_expires_at: datetime


def _contacts(hub: Hub, data: CaseInput) -> list[tuple[str, str]]:
    """Normalised contacts; an error names the contact (``contacts.1.address: ...``)."""
    contacts = []
    for i, contact in enumerate(data.contacts):
        try:
            hub.channel(contact.channel)
        except ValueError as exc:
            raise ApplicantError(f"contacts.{i}.channel: {exc}") from None
        try:
            contacts.append((contact.channel, normalize(hub, contact.channel, contact.address)))
        except ValueError as exc:
            raise ApplicantError(f"contacts.{i}.address: {exc}") from None
    return contacts


async def open_case(hub: Hub, office_id: str, data: CaseInput, *, within: Within | None = None) -> OpenedCase:
    """Open a case; ``within`` runs in the same transaction with the answer (see ``Within``)."""
    contacts = _contacts(hub, data)
    pin = "".join(secrets.choice(string.digits) for _ in range(6))
    link_code = new_link_code()
    opened_at = utcnow()
    expires = opened_at + timedelta(days=LINK_CODE_DAYS)
    async with hub.db.transaction() as session:
        exists = await session.scalar(
            select(ApplicantCase.id).where(
                ApplicantCase.office_id == office_id, ApplicantCase.reference == data.reference
            )
        )
        if exists is not None:
            raise CaseExists(f"case {data.reference!r} already exists for office {office_id}")
        case = ApplicantCase(
            office_id=office_id,
            reference=data.reference,
            document=data.document,
            pin_hash=signing.digest(hub.secret, f"pin:{pin}"),
            link_code_hash=link_code_hash(link_code),
            link_expires_at=expires,
            locale=data.locale,
            created_at=opened_at,
            updated_at=opened_at,
        )
        session.add(case)
        await session.flush()
        for channel, address in contacts:
            endpoint = await endpoint_for(session, channel, address, locale=data.locale)
            if await session.get(CaseEndpoint, (case.id, endpoint.id)) is None:
                session.add(CaseEndpoint(case_id=case.id, endpoint_id=endpoint.id))
        opened = OpenedCase(case.id, data.reference, pin, link_code, expires)
        if within is not None:
            await session.flush()
            await within(session, {"case": opened})
    return opened


async def post_update(
    hub: Hub, office_id: str, reference: str, data: UpdateInput, *, within: Within | None = None
) -> int:
    """Record a status change and send it to every endpoint linked to the case, on the urgent lane.

    The update, its message and whatever ``within`` writes commit together: a failure leaves nothing
    behind. Queuing comes after the commit and may wait for Redis (the reconciler queues it then).
    """
    async with hub.db.transaction() as session:
        case = await session.scalar(
            select(ApplicantCase).where(
                ApplicantCase.office_id == office_id, ApplicantCase.reference == reference
            )
        )
        if case is None:
            raise UnknownCase(f"unknown case {reference!r} for office {office_id}")
        office = await session.get(Office, office_id)
        assert office is not None
        detail = data.model_dump(exclude_none=True)
        session.add(CaseUpdate(case_id=case.id, status=data.status, detail=detail))
        case.status, case.updated_at = data.status, utcnow()
        endpoint_ids = list(
            (
                await session.execute(select(CaseEndpoint.endpoint_id).where(CaseEndpoint.case_id == case.id))
            ).scalars()
        )
        context: dict[str, Any] = {
            **{k: None for k in ("pickup_place", "pickup_hours", "reason", "note")},
            "missing_documents": [],
            **detail,
            "office": {"id": office.id, "name": office.name, "timezone": office.timezone},
            "tz": office.timezone,
            "reference": case.reference,
            "document": case.document,
        }
        draft = delivery.Draft(
            kind="applicant",
            lane="urgent",
            group="applicant",
            template="status",
            context=context,
            office_id=office_id,
            endpoint_ids=endpoint_ids,
        )
        message = await delivery.create_message(hub, draft, session=session)
        if within is not None:
            await within(session, {"message_id": message.id})
    if endpoint_ids:
        await hub.queue.plan_soon(message.id, "urgent")
    return message.id


async def link_case(
    hub: Hub, link_code: str, channel: str, address: str, *, locale: str = "id"
) -> ApplicantCase:
    """Attach a person's chat to a case with the receipt's deep-link code (``/start <code>``), once.

    The code is spent by the same statement that checks it, so of any number of chats using one code at
    once exactly one is linked; the others, and every later use, get ``CodeRefused("used")``. Only call
    this for a private chat (the bot refuses codes in groups and voids them: ``void_link_code``).
    """
    now = utcnow()
    digest = link_code_hash(link_code.strip())
    async with hub.db.transaction() as session:
        spent = await session.execute(
            update(ApplicantCase)
            .where(
                ApplicantCase.link_code_hash == digest,
                ApplicantCase.link_used_at.is_(None),
                ApplicantCase.link_expires_at > now,
            )
            .values(link_used_at=now)
            .execution_options(synchronize_session=False)
        )
        case = await session.scalar(select(ApplicantCase).where(ApplicantCase.link_code_hash == digest))
        if case is None:
            raise CodeRefused("unknown")
        if not spent.rowcount:
            raise CodeRefused("used" if case.link_used_at is not None else "expired")
        await _attach(session, case.id, channel, address, locale)
        return case


async def void_link_code(hub: Hub, link_code: str) -> None:
    """Spend a code that was shown where others could read it (a group), so no one else can use it."""
    async with hub.db.transaction() as session:
        await session.execute(
            update(ApplicantCase)
            .where(
                ApplicantCase.link_code_hash == link_code_hash(link_code.strip()),
                ApplicantCase.link_used_at.is_(None),
            )
            .values(link_used_at=utcnow())
            .execution_options(synchronize_session=False)
        )


async def link_endpoint(hub: Hub, case_id: int, channel: str, address: str, *, locale: str = "id") -> None:
    """Attach a chat to a case its owner has proven (reference and PIN); the receipt's code stays as is."""
    async with hub.db.transaction() as session:
        await _attach(session, case_id, channel, address, locale)


async def _attach(session: AsyncSession, case_id: int, channel: str, address: str, locale: str) -> None:
    endpoint = await endpoint_for(session, channel, address, locale=locale)
    if await session.get(CaseEndpoint, (case_id, endpoint.id)) is None:
        session.add(CaseEndpoint(case_id=case_id, endpoint_id=endpoint.id))


async def track(hub: Hub, reference: str, pin: str) -> ApplicantCase | None:
    """The case for a reference and PIN, or None. Rate limiting of guesses is the caller's job."""
    expected = signing.digest(hub.secret, f"pin:{pin.strip()}")
    async with hub.db.session() as session:
        rows = (
            await session.execute(select(ApplicantCase).where(ApplicantCase.reference == reference.strip()))
        ).scalars()
        for case in rows:
            if secrets.compare_digest(case.pin_hash, expected):
                return case
    return None
