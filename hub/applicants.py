"""Applicant cases: an intake system opens a case, posts status changes, the applicant hears at once.

The hub keeps the office's reference, the document applied for and a keyed hash of a short PIN; no
name, no NIK. The receipt carries the reference, the PIN and a deep-link code to follow the case.
"""

from __future__ import annotations

import secrets
import string
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator
from sqlalchemy import select

from hub import outbox, signing
from hub.clock import utcnow
from hub.context import Hub
from hub.store.models import ApplicantCase, CaseEndpoint, CaseUpdate, Office
from hub.subscriptions import endpoint_for, normalize

Status = Literal["received", "verified", "needs_document", "ready", "rejected", "done"]


class ApplicantError(ValueError):
    """Bad applicant input; the message names what is wrong."""


class Contact(BaseModel):
    channel: str
    address: str


class CaseInput(BaseModel):
    reference: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9./_-]+$")
    document: str = Field(min_length=1, max_length=64)
    locale: Literal["id", "en"] = "id"
    contacts: list[Contact] = []


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


async def open_case(hub: Hub, office_id: str, data: CaseInput) -> OpenedCase:
    contacts = [(c.channel, normalize(hub, c.channel, c.address)) for c in data.contacts]
    pin = "".join(secrets.choice(string.digits) for _ in range(6))
    link_code = "c" + secrets.token_urlsafe(12).replace("-", "").replace("_", "")[:15]
    async with hub.db.transaction() as session:
        exists = await session.scalar(
            select(ApplicantCase.id).where(
                ApplicantCase.office_id == office_id, ApplicantCase.reference == data.reference
            )
        )
        if exists is not None:
            raise ApplicantError(f"case {data.reference!r} already exists for office {office_id}")
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
            session.add(CaseEndpoint(case_id=case.id, endpoint_id=endpoint.id))
    return OpenedCase(case.id, data.reference, pin, link_code)


async def post_update(hub: Hub, office_id: str, reference: str, data: UpdateInput) -> int:
    """Record a status change and send it to every endpoint linked to the case, on the urgent lane."""
    async with hub.db.transaction() as session:
        case = await session.scalar(
            select(ApplicantCase).where(
                ApplicantCase.office_id == office_id, ApplicantCase.reference == reference
            )
        )
        if case is None:
            raise ApplicantError(f"unknown case {reference!r} for office {office_id}")
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
    draft = outbox.Draft(
        kind="applicant",
        lane="urgent",
        group="applicant",
        template="status",
        context=context,
        office_id=office_id,
        endpoint_ids=endpoint_ids,
    )
    message = await outbox.create_message(hub, draft)
    if endpoint_ids:
        await hub.queue.plan(message.id, "urgent")
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
