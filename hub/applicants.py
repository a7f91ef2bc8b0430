"""Applicant cases: an intake system opens a case, posts status changes, the applicant hears at once.

The hub keeps the office's reference, the document applied for and a keyed hash of a short PIN; no
name, no NIK. The receipt carries the reference, the PIN and a deep-link code to follow the case.
"""

from __future__ import annotations

import secrets
import string
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator
from sqlalchemy import select
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
    link_code = "c" + secrets.token_urlsafe(12).replace("-", "").replace("_", "")[:15]
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
            link_code=link_code,
            locale=data.locale,
        )
        session.add(case)
        await session.flush()
        for channel, address in contacts:
            endpoint = await endpoint_for(session, channel, address, locale=data.locale)
            if await session.get(CaseEndpoint, (case.id, endpoint.id)) is None:
                session.add(CaseEndpoint(case_id=case.id, endpoint_id=endpoint.id))
        opened = OpenedCase(case.id, data.reference, pin, link_code)
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
    """Attach a channel endpoint to a case via the receipt's deep-link code (``/start <code>``)."""
    async with hub.db.transaction() as session:
        case = await session.scalar(select(ApplicantCase).where(ApplicantCase.link_code == link_code))
        if case is None:
            raise ApplicantError("unknown case code")
        endpoint = await endpoint_for(session, channel, address, locale=locale)
        linked = await session.get(CaseEndpoint, (case.id, endpoint.id))
        if linked is None:
            session.add(CaseEndpoint(case_id=case.id, endpoint_id=endpoint.id))
        return case


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
