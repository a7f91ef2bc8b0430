"""An office's base status as staff set it: weekly hours, dated exceptions, quota, mode, services, contacts.

Stored as JSON (``office_status.status``) and validated here on every write, so that what the bots and the
public pages read never contradicts itself. A refusal names the field (``services[1].hours.friday[0]``)
like ``hub.kinds.KindError`` does for announcements.
"""

from __future__ import annotations

import itertools
import re
from datetime import date
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from hub.errors import InvalidInput
from hub.kinds import Problem, Text, problem_of
from hub.render import DAY_KEYS, WEEK

Mode = Literal["in_person", "restricted", "online_only", "closed"]
MODES: tuple[str, ...] = ("in_person", "restricted", "online_only", "closed")
ContactKind = Literal["whatsapp", "phone", "app", "web", "email"]

#: The services every Disdukcapil office offers in some form; a status may name others with a ``name``.
SERVICE_NAMES: dict[str, dict[str, str]] = {
    "ktp-el": {"id": "KTP-el", "en": "KTP-el (electronic ID card)"},
    "kk": {"id": "Kartu Keluarga (KK)", "en": "Family card (KK)"},
    "kia": {"id": "Kartu Identitas Anak (KIA)", "en": "Child ID card (KIA)"},
    "akta": {"id": "Akta pencatatan sipil", "en": "Civil registration certificates"},
    "pindah-datang": {"id": "Pindah datang", "en": "Moving in and out"},
    "legalisir": {"id": "Legalisir", "en": "Legalisation"},
    "jemput-bola": {"id": "Layanan jemput bola", "en": "Mobile service (jemput bola)"},
}


class StatusError(InvalidInput):
    """A status that contradicts itself; ``field`` says where (``hours.monday[0]``), the message why."""

    def __init__(
        self, message: str, *, field: str = "", code: str = "", params: dict[str, Any] | None = None
    ):
        super().__init__(message)
        self.field, self.code, self.params = field, code, params or {}


def minutes(clock: str) -> int:
    hh, _, mm = clock.strip().replace(".", ":").partition(":")
    return int(hh) * 60 + int(mm)


_CLOCK = re.compile(r"^(\d{1,2})[:.]([0-5]\d)$")


def _span(value: Any) -> str:
    """``"08:00-11:00"`` (or ``08.00 - 11.00``): within the day, ending after it starts."""
    if not isinstance(value, str):
        raise Problem("span", "hours must be text like 08:00-11:00")
    start, sep, end = value.replace("–", "-").partition("-")
    start, end = start.strip(), end.strip()
    if not sep or not _CLOCK.match(start) or not _CLOCK.match(end):
        raise Problem("span", f"hours must look like 08:00-11:00, not {value!r}", value=value)
    if minutes(start) > 24 * 60 or minutes(end) > 24 * 60:
        raise Problem("span_outside_day", f"{value!r} is outside the day (00:00-24:00)", value=value)
    if minutes(end) <= minutes(start):
        raise Problem("span_order", f"{value!r} ends before it starts", value=value)
    norm = lambda c: f"{minutes(c) // 60:02d}:{minutes(c) % 60:02d}"  # noqa: E731
    return f"{norm(start)}-{norm(end)}"


Span = Annotated[str, BeforeValidator(_span)]


def _spans(value: Any) -> Any:
    """One span, several comma-separated, a list, or nothing (closed that day)."""
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [s for s in (p.strip() for p in value.split(",")) if s]
    return value


def _no_overlap(spans: list[str]) -> list[str]:
    ordered = sorted(spans, key=lambda s: minutes(s.split("-")[0]))
    for a, b in itertools.pairwise(ordered):
        if minutes(b.split("-")[0]) < minutes(a.split("-")[1]):
            raise Problem("span_overlap", f"{a} and {b} overlap", value=b)
    return ordered


Spans = Annotated[list[Span], BeforeValidator(_spans), AfterValidator(_no_overlap)]


def _week(value: Any) -> Any:
    """Day keys in English or Indonesian (``senin``), checked; the result is in week order."""
    if not isinstance(value, dict):
        return value
    out: dict[str, Any] = {}
    for key, spans in value.items():
        day = DAY_KEYS.get(str(key).strip().lower())
        if day is None:
            raise Problem(
                "not_a_day", f"{key!r} is not a day (monday ... sunday, or senin ... minggu)", day=key
            )
        out[day] = spans
    return {d: out[d] for d in WEEK if d in out}


Week = Annotated[dict[str, Spans], BeforeValidator(_week)]


class Contact(BaseModel):
    """How to reach a service: a WhatsApp or phone number, an app, a web page, an email address."""

    model_config = ConfigDict(extra="forbid")
    kind: ContactKind
    label: str = Field(default="", max_length=120)
    value: str = Field(min_length=1, max_length=300)
    url: str | None = Field(default=None, max_length=500)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value and not re.match(r"^(https?://|mailto:|tel:)\S+$", value):
            raise Problem("url", f"{value!r} is not a link (https://..., mailto:, tel:)", value=value)
        return value or None


class DatedException(BaseModel):
    """One date or a range (``date`` .. ``until``, both included): closed, or other hours, with a note."""

    model_config = ConfigDict(extra="forbid")
    date: date
    until: date | None = None
    closed: bool = False
    hours: Spans = []
    quota: int | None = Field(default=None, ge=0)
    note: Text | None = None
    #: At the office level: the service this exception is about (one the office offers).
    service: str | None = None

    @model_validator(mode="after")
    def _coherent(self) -> DatedException:
        if self.until is not None and self.until < self.date:
            raise Problem("until_before_date", "until must not be before date")
        if self.closed and self.hours:
            raise Problem("closed_with_hours", "an exception is either closed or has hours, not both")
        if not self.closed and not self.hours and self.quota is None and self.note is None:
            raise Problem("empty_exception", "say what changes: closed, hours, quota or a note")
        return self

    def covers(self, day: date) -> bool:
        return self.date <= day <= (self.until or self.date)


class Service(BaseModel):
    """One service; what it leaves out (mode, hours, quota) is the office's."""

    model_config = ConfigDict(extra="forbid")
    key: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,63}$")
    name: Text | None = None
    mode: Mode | None = None
    hours: Week | None = None
    quota: int | None = Field(default=None, ge=0)
    exceptions: list[DatedException] = []
    contacts: list[Contact] = []
    note: Text | None = None
    #: For ``restricted``: the urgent cases still served in person.
    urgent: list[Text] = []

    @model_validator(mode="after")
    def _named(self) -> Service:
        if self.name is None:
            if self.key not in SERVICE_NAMES:
                raise Problem("service_name", f"give a name for the service {self.key!r}", key=self.key)
            self.name = dict(SERVICE_NAMES[self.key])
        return self


class OfficeStatusModel(BaseModel):
    """The whole base status of an office."""

    model_config = ConfigDict(extra="forbid")
    hours: Week = {}
    exceptions: list[DatedException] = []
    quota: int | None = Field(default=None, ge=0)
    mode: Mode = "in_person"
    urgent: list[Text] = []
    contacts: list[Contact] = []
    services: list[Service] = []
    note: Text | None = None


def validate_status(data: Any) -> OfficeStatusModel:
    """The status, or ``StatusError`` naming the first field that is wrong."""
    if isinstance(data, OfficeStatusModel):
        return data
    if not isinstance(data, dict):
        raise StatusError("a status is a JSON object", field="status", code="type")
    try:
        status = OfficeStatusModel.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = _where(first["loc"]) or "status"
        code, params = problem_of(first)
        if code == "service_name":
            where += ".name"
        message = str(first["msg"]).removeprefix("Value error, ")
        raise StatusError(f"{where}: {message}", field=where, code=code, params=params) from None
    _check_services(status)
    return status


def _check_services(status: OfficeStatusModel) -> None:
    """Services listed once; an exception names only a service the office offers."""
    keys = [s.key for s in status.services]
    for i, key in enumerate(keys):
        if keys.index(key) != i:
            raise StatusError(
                f"services[{i}].key: service {key!r} is listed twice",
                field=f"services[{i}].key",
                code="twice",
            )
    offered = ", ".join(keys) or "none listed"
    for i, exc in enumerate(status.exceptions):
        if exc.service is not None and exc.service not in keys:
            where = f"exceptions[{i}].service"
            raise StatusError(
                f"{where}: {exc.service!r} is not a service this office offers ({offered})",
                field=where,
                code="unknown_service",
                params={"service": exc.service},
            )
    for j, service in enumerate(status.services):
        for i, exc in enumerate(service.exceptions):
            if exc.service not in (None, service.key):
                where = f"services[{j}].exceptions[{i}].service"
                raise StatusError(
                    f"{where}: names {exc.service!r} inside service {service.key!r}",
                    field=where,
                    code="unknown_service",
                    params={"service": exc.service},
                )


def _where(loc: tuple[Any, ...]) -> str:
    """``('services', 1, 'hours', 'friday', 0)`` -> ``services[1].hours.friday[0]``.

    Pydantic's own steps (``function-after[...]``) are left out: they are not fields a person wrote.
    """
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif "[" in str(part) or str(part) in ("list", "dict"):
            continue
        else:
            out += f".{part}" if out else str(part)
    return out


def dump(status: OfficeStatusModel) -> dict[str, Any]:
    """As stored: JSON, without the empty parts."""
    return status.model_dump(mode="json", exclude_defaults=True)
