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
from hub.logs import log
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


#: Wrong PINs after which a case opens to no PIN at all (every sender together, for good); the office
#: is told, and the receipt's deep-link code still links the applicant's chat.
PIN_LOCK_AFTER = 10


@dataclass
class PinCheck:
    """What a reference and PIN come to: ``found`` (``case`` is set), ``wrong`` or ``locked``.

    ``checked`` is how many cases the PIN was compared with (0 when none could be: locked or unknown).
    """

    outcome: Literal["found", "wrong", "locked"]
    case: ApplicantCase | None = None
    checked: int = 0


async def check_pin(hub: Hub, reference: str, pin: str) -> PinCheck:
    """Check a PIN for a reference, counting it against each case that bears the reference.

    Each case takes a count before its PIN is compared, by a statement that refuses once the case holds
    ``PIN_LOCK_AFTER`` of them, so however many checks race, over however many processes, at most that
    many are ever compared, even with Redis gone. A right PIN gives its count back; the check that brings
    a case to the limit locks it and tells the office (``_locked``). A locked case answers ``locked`` to
    every PIN, the right one too. Rate limits per sender and per case are the caller's job (Redis).
    """
    reference = reference.strip()
    # PINs of cases opened before a `hub secret rotate` verify with the previous keys.
    expected = [signing.digest(key, f"pin:{pin.strip()}") for key in hub.verification_keys]
    async with hub.db.session() as session:
        ids = list(
            (
                await session.execute(select(ApplicantCase.id).where(ApplicantCase.reference == reference))
            ).scalars()
        )
    if not ids:
        return PinCheck("wrong")
    counted, refused = [], 0
    for case_id in ids:
        if await _take_count(hub, case_id):
            counted.append(case_id)
        else:
            refused += 1
    found: ApplicantCase | None = None
    async with hub.db.session() as session:
        for case_id in counted:
            case = await session.get(ApplicantCase, case_id)
            if case is not None and any(secrets.compare_digest(case.pin_hash, e) for e in expected):
                found = case
    wrong = [case_id for case_id in counted if found is None or case_id != found.id]
    if found is not None:
        await _give_count_back(hub, found.id)
    for case_id in wrong:
        await _lock_if_full(hub, case_id)
    if found is not None:
        return PinCheck("found", found, checked=len(counted))
    return PinCheck("locked" if refused else "wrong", checked=len(counted))


async def _take_count(hub: Hub, case_id: int) -> bool:
    async with hub.db.transaction() as session:
        taken = await session.execute(
            update(ApplicantCase)
            .where(
                ApplicantCase.id == case_id,
                ApplicantCase.pin_locked_at.is_(None),
                ApplicantCase.pin_failures < PIN_LOCK_AFTER,
            )
            .values(pin_failures=ApplicantCase.pin_failures + 1)
            .execution_options(synchronize_session=False)
        )
    return bool(taken.rowcount)


async def _give_count_back(hub: Hub, case_id: int) -> None:
    async with hub.db.transaction() as session:
        await session.execute(
            update(ApplicantCase)
            .where(ApplicantCase.id == case_id, ApplicantCase.pin_failures > 0)
            .values(pin_failures=ApplicantCase.pin_failures - 1)
            .execution_options(synchronize_session=False)
        )


async def _lock_if_full(hub: Hub, case_id: int) -> None:
    """Lock a case whose wrong PINs reached the limit; only the check that locks it tells the office."""
    async with hub.db.transaction() as session:
        locked = await session.execute(
            update(ApplicantCase)
            .where(
                ApplicantCase.id == case_id,
                ApplicantCase.pin_locked_at.is_(None),
                ApplicantCase.pin_failures >= PIN_LOCK_AFTER,
            )
            .values(pin_locked_at=utcnow())
            .execution_options(synchronize_session=False)
        )
        if not locked.rowcount:
            return
        case = await session.get(ApplicantCase, case_id)
        assert case is not None
        office_id, reference = case.office_id, case.reference
    _locked(office_id, case_id, reference)


def _locked(office_id: str, case_id: int, reference: str) -> None:
    """Tell the office a case was locked. The hub has no staff mailbox to write to, so the office's
    operator reads it in the log (warning level); the reference is masked, the case id finds it."""
    log.warning(
        "case_pin_locked",
        office=office_id,
        case_id=case_id,
        reference=mask_reference(reference),
        wrong_pins=PIN_LOCK_AFTER,
        advice="the applicant can still link a chat with the receipt's code",
    )


def mask_reference(reference: str) -> str:
    """``3375-KK-0001`` → ``33*******01``: enough for staff to tell cases apart, not to track one."""
    if len(reference) <= 6:
        return "***"
    return f"{reference[:2]}*******{reference[-2:]}"
