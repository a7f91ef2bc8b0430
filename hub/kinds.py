"""The kinds of announcement, modelled on what offices actually announced (data/offices.toml).

Each kind is the data its templates (``templates/announcements/<kind>/``) need. Texts a citizen reads
that staff write themselves (a reason, a note, the alternative to a suspended service) are given per
language, ``{"id": "...", "en": "..."}``, or as one Indonesian text. An announcement is rendered only in
the languages all its texts exist in; readers of another language get the Indonesian rendering whole,
never an English frame around Indonesian sentences. Names (an app, a document, a legal basis, a phone
number) are written once.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    HttpUrl,
    ValidationError,
    field_validator,
    model_validator,
)

from hub.errors import InvalidInput
from hub.render import DAY_KEYS


class Problem(ValueError):
    """A check's refusal: the English message (what the API says), plus a code and its parameters.

    Pydantic keeps the exception in its error's context, so the console can show its own text for the
    code (``ann.error.<code>``, in Bahasa Indonesia first) while the API's English stays as it was.
    """

    def __init__(self, code: str, message: str, **params: Any) -> None:
        super().__init__(message)
        self.code = code
        self.params = params


#: Pydantic's own checks whose limits the console names: the context keys it gives.
LIMITS = ("min_length", "max_length", "ge", "le", "gt", "lt")


def problem_of(error: Any) -> tuple[str, dict[str, Any]]:
    """The code and parameters of one pydantic error of a kind's model (``ValidationError.errors()``).

    Our own checks give their ``Problem``; pydantic's give their type (``missing``, ``string_too_long``,
    ``greater_than_equal``, ``url_parsing``...) and the limits in their context.
    """
    context = error.get("ctx") or {}
    cause = context.get("error")
    if isinstance(cause, Problem):
        return cause.code, dict(cause.params)
    return str(error["type"]), {k: context[k] for k in LIMITS if k in context}


class Localized(dict[str, str]):
    """One text per language code; Indonesian (``id``) is always there."""


def _as_localized(value: Any) -> Any:
    if isinstance(value, str):
        return {"id": value}
    return value


def _check_localized(value: dict[str, str]) -> Localized:
    if "id" not in value:
        raise Problem("text_no_id", 'give the Indonesian text ("id") first, e.g. {"id": "...", "en": "..."}')
    cleaned = {}
    for locale, text in value.items():
        if not text.strip():
            raise Problem("text_empty", f"the {locale!r} text is empty", locale=locale)
        cleaned[locale] = text.strip()
    return Localized(cleaned)


#: A text staff write: ``"..."`` (Indonesian only) or ``{"id": "...", "en": "..."}``.
Text = Annotated[dict[str, str], BeforeValidator(_as_localized), AfterValidator(_check_localized)]


class Data(BaseModel):
    """What every kind may carry: a link (shown as a button where the channel has them) and a note."""

    model_config = ConfigDict(extra="forbid")
    note: Text | None = None
    link: LinkRef | None = None


class LinkRef(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=80)
    url: HttpUrl


class Contact(BaseModel):
    """A number that serves one service ("KK dan KTP-el": 0858-7031-0341)."""

    model_config = ConfigDict(extra="forbid")
    service: Text
    number: str = Field(min_length=3, max_length=40)


def _contacts(value: Any) -> Any:
    """``{"KK dan KTP-el": "0858-..."}`` is accepted for ``[{"service": ..., "number": ...}]``."""
    if isinstance(value, dict):
        return [{"service": k, "number": v} for k, v in value.items()]
    return value


Contacts = Annotated[list[Contact], BeforeValidator(_contacts)]


def _check_span(span: str) -> str:
    start, sep, end = span.partition("-")
    if not sep or not all(_is_clock(x.strip()) for x in (start, end)):
        raise Problem("span", f"hours must look like 08:00-11:00, not {span!r}", value=span)
    return span.replace(" ", "")


Span = Annotated[str, AfterValidator(_check_span)]


def _is_clock(text: str) -> bool:
    hh, sep, mm = text.replace(".", ":").partition(":")
    return bool(sep) and hh.isdigit() and mm.isdigit() and int(hh) < 24 and int(mm) < 60


# ---------------------------------------------------------------------------------------------------------


class Closure(Data):
    """Counter (face-to-face) services stop; only the listed exceptions are still served in person."""

    reason: Text | None = None
    period_days: int | None = Field(default=None, ge=1, le=366)
    review_after_days: int | None = Field(default=None, ge=1, le=366)
    online_app: str | None = None
    exceptions: list[Text] = []

    @model_validator(mode="before")
    @classmethod
    def _mode(cls, value: Any) -> Any:
        if isinstance(value, dict) and "mode" in value:
            if value["mode"] == "restricted":
                raise Problem(
                    "closure_restricted",
                    "closure says the counters are closed; when only visits are restricted and counters "
                    "stay open for urgent needs, use the template 'restriction'",
                )
            value = {k: v for k, v in value.items() if k != "mode"}
        return value


class Restriction(Data):
    """Visits are restricted (apply online); counters stay open for the urgent needs listed."""

    reason: Text | None = None
    period_days: int | None = Field(default=None, ge=1, le=366)
    online_app: str | None = None
    urgent_in_person: list[Text] = []


class Suspension(Data):
    """One service stops (a jemput-bola car, kecamatan counters) from ``since`` until ``until``.

    Without ``until`` it is suspended until further notice.
    """

    service: Text
    since: date | None = None
    until: date | None = None
    reason: Text | None = None
    alternative: Text | None = None

    @model_validator(mode="after")
    def _order(self) -> Suspension:
        if self.since and self.until and self.until < self.since:
            raise Problem("until_before_since", "until must not be before since")
        return self


class ServiceHours(BaseModel):
    model_config = ConfigDict(extra="forbid")
    service: Text
    hours: Span


class HoursChanged(Data):
    """New opening hours per day and/or per service, with a quota, protocol and per-service contacts."""

    hours: dict[str, str] = {}
    service_hours: list[ServiceHours] = []
    contacts: Contacts = []
    daily_quota: int | None = Field(default=None, ge=1)
    health_protocol: list[Text] = []
    basis: str | None = None

    @field_validator("hours")
    @classmethod
    def _days(cls, value: dict[str, str]) -> dict[str, str]:
        out = {}
        for key, span in value.items():
            day = DAY_KEYS.get(key.strip().lower())
            if day is None:
                raise Problem(
                    "not_a_day",
                    f"{key!r} is not a day (monday ... sunday, or senin ... minggu); "
                    'hours of a service go in "service_hours": [{"service": ..., "hours": ...}]',
                    day=key,
                )
            try:
                out[day] = _check_span(span)
            except ValueError:
                raise Problem(
                    "day_span",
                    f"hours for {key!r} must look like 08:00-11:00, not {span!r}",
                    day=key,
                    value=span,
                ) from None
        return out

    @model_validator(mode="after")
    def _some_hours(self) -> HoursChanged:
        if not self.hours and not self.service_hours:
            raise Problem("no_hours", 'give the hours per day ("hours") or per service ("service_hours")')
        return self


class OnlineOnly(Data):
    """Services are handled online only (WhatsApp numbers per service, an app)."""

    via: str = "WhatsApp"
    online_app: str | None = None
    contacts: Contacts = []
    online_services: list[Text] = []


class Link(Data):
    """A link to something citizens can use instead (E-pusda while the library is closed)."""

    link_name: str = Field(min_length=1, max_length=80)
    url: HttpUrl
    description: Text


class FreeText(Data):
    """Anything the structured kinds do not cover."""

    title: Text
    text: Text

    @model_validator(mode="before")
    @classmethod
    def _english_fields(cls, value: Any) -> Any:
        """``title_en`` and ``text_en`` (the first version's fields) become the English texts."""
        if not isinstance(value, dict):
            return value
        value = dict(value)
        for name in ("title", "text"):
            english = value.pop(f"{name}_en", None)
            if english and isinstance(value.get(name), str):
                value[name] = {"id": value[name], "en": english}
        return value

    @field_validator("title")
    @classmethod
    def _title(cls, value: dict[str, str]) -> dict[str, str]:
        if any(len(v) > 200 for v in value.values()):
            raise Problem("title_too_long", "a title has at most 200 characters", max_length=200)
        return value


Data.model_rebuild()

KINDS: dict[str, type[Data]] = {
    "closure": Closure,
    "restriction": Restriction,
    "suspension": Suspension,
    "hours_changed": HoursChanged,
    "online_only": OnlineOnly,
    "link": Link,
    "free_text": FreeText,
}


class KindError(InvalidInput):
    """Data that does not fit its kind; the message names the field (English, the API's).

    ``field`` (the location, ``contacts.0.number``), ``code`` and ``params`` say the same for a
    localized text (see ``Problem``).
    """

    def __init__(
        self, message: str, *, field: str = "", code: str = "", params: dict[str, Any] | None = None
    ):
        super().__init__(message)
        self.field, self.code, self.params = field, code, params or {}


def validate(
    template: str, data: dict[str, Any], locales: Sequence[str] = ("id", "en")
) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """The data as stored, and per language of ``locales`` the texts missing in it (``{"en": ["note"]}``)."""
    model = KINDS.get(template)
    if model is None:
        return data, {}  # a custom template: strict undefined is the check
    try:
        parsed = model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "data"
        message = str(first["msg"]).removeprefix("Value error, ")
        code, params = problem_of(first)
        raise KindError(
            f"data for template {template!r}: {where}: {message}", field=where, code=code, params=params
        ) from None
    texts: list[tuple[str, Localized]] = []
    _collect(parsed, "", texts)
    missing: dict[str, list[str]] = {}
    for locale in locales:
        lacking = [where for where, text in texts if locale not in text]
        if lacking:
            missing[locale] = lacking
    return parsed.model_dump(mode="json"), missing


def _collect(value: Any, where: str, out: list[tuple[str, Localized]]) -> None:
    if isinstance(value, Localized):
        out.append((where, value))
    elif isinstance(value, BaseModel):
        for name in type(value).model_fields:
            _collect(getattr(value, name), f"{where}.{name}" if where else name, out)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _collect(item, f"{where}[{i}]", out)
    elif isinstance(value, dict):
        for key, item in value.items():
            _collect(item, f"{where}.{key}", out)
